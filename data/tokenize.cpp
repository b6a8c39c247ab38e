#include "data/tokenize.h"
#include "data/tokenizers.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "autograd/error.h"
#include "data/corpus.h"
#include "data/document_finder.h"
#include "data/document_index.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "data/utf8.h"

namespace fs = std::filesystem;

namespace tapelm::data {

namespace {

bool ascii_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

// Text may be cut before byte i: an ASCII character that is not whitespace, then whitespace.
bool is_cut(const std::string& text, size_t i) {
  return i > 0 && i < text.size() && ascii_space(text[i]) && !ascii_space(text[i - 1]) &&
         (unsigned char)text[i - 1] < 0x80;
}

// The input files in order: files as given, folders' regular files sorted by
// name (symbolic links and files with a NUL byte in their first 64 KiB skipped, as binary).
std::vector<fs::path> list_sources(const std::vector<std::string>& inputs) {
  TAPELM_CHECK(!inputs.empty(), "tokenize: no input given (--data)");
  std::vector<fs::path> out;
  for (const std::string& in : inputs) {
    std::error_code ec;
    TAPELM_CHECK(fs::exists(in, ec), "tokenize: {} does not exist", in);
    if (!fs::is_directory(in, ec)) {
      TAPELM_CHECK(fs::is_regular_file(in, ec), "tokenize: {} is not a regular file", in);
      out.push_back(in);
      continue;
    }
    std::vector<fs::path> files;
    for (auto& e : fs::directory_iterator(in, ec))
      if (e.is_regular_file() && !e.is_symlink()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    size_t used = 0;
    for (auto& f : files) {
      std::ifstream s(f, std::ios::binary);
      std::string head(64 << 10, '\0');
      s.read(head.data(), (std::streamsize)head.size());
      head.resize((size_t)s.gcount());
      if (head.find('\0') != std::string::npos) continue;
      out.push_back(f);
      ++used;
    }
    TAPELM_CHECK(used > 0, "tokenize: folder {} has no text files", in);
  }
  return out;
}

// The concatenated sources read in pieces, in order.
class SourceReader {
 public:
  explicit SourceReader(std::vector<fs::path> files) : files_(std::move(files)) {}
  // Appends up to n bytes; false at the end of the last file.
  bool read(std::string& into, size_t n) {
    while (n > 0) {
      if (!in_.is_open() || in_.peek() == EOF) {
        if (in_.is_open()) in_.close();
        if (next_ == files_.size()) return false;
        in_.clear();
        in_.open(files_[next_], std::ios::binary);
        TAPELM_CHECK(in_.good(), "tokenize: cannot read {}", files_[next_].string());
        ++next_;
        continue;
      }
      const size_t at = into.size();
      into.resize(at + n);
      in_.read(into.data() + at, (std::streamsize)n);
      const size_t got = (size_t)in_.gcount();
      into.resize(at + got);
      n -= got;
    }
    return true;
  }

 private:
  std::vector<fs::path> files_;
  size_t next_ = 0;
  std::ifstream in_;
};

uint64_t fnv1a(uint64_t h, const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
  return h;
}

nlohmann::json describe_sources(const std::vector<fs::path>& files) {
  nlohmann::json out = nlohmann::json::array();
  std::string buf(1 << 20, '\0');
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    uint64_t h = 1469598103934665603ull;
    while (in.read(buf.data(), (std::streamsize)buf.size()) || in.gcount() > 0) h = fnv1a(h, buf.data(), in.gcount());
    const auto mtime = fs::last_write_time(f).time_since_epoch().count();
    out.push_back({{"path", fs::absolute(f).string()},
                   {"bytes", (int64_t)fs::file_size(f)},
                   {"mtime", (int64_t)mtime},
                   {"fnv1a64", fmt::format("{:016x}", h)}});
  }
  return out;
}

std::string documents_file_name(int split) { return split ? "documents_val.idx" : "documents_train.idx"; }

}  // namespace

size_t safe_cut(const std::string& text, size_t limit) {
  for (size_t i = std::min(limit, text.size()); i > 0; --i)
    if (is_cut(text, i)) return i;
  return 0;
}

TokenizeReport tokenize_corpus(const TokenizeOptions& o, const std::function<void(const TokenizeProgress&)>& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  TAPELM_CHECK(!o.out.empty(), "tokenize: --out must name a folder");
  TAPELM_CHECK(o.val_fraction > 0 && o.val_fraction < 1, "tokenize: --val-fraction {} must be in (0, 1)",
               o.val_fraction);
  TAPELM_CHECK(o.shard_tokens > 0 && o.block_bytes > 0, "tokenize: shard and block sizes must be positive");
  const std::vector<fs::path> files = list_sources(o.inputs);
  int64_t total = 0;
  for (auto& f : files) total += (int64_t)fs::file_size(f);
  TAPELM_CHECK(total > 0, "tokenize: the input is empty");
  const nlohmann::json settings = {{"tokenizer", o.tokenizer},
                                   {"vocab_size", o.tokenizer == "bpe" ? o.vocab_size : 0},
                                   {"val_fraction", o.val_fraction},
                                   {"doc_sep", o.doc_sep},
                                   {"shard_tokens", o.shard_tokens}};
  const nlohmann::json sources = describe_sources(files);
  const fs::path out(o.out), index_path = out / "index.json";
  if (fs::exists(index_path)) {  // unchanged input, same options: nothing to do
    try {
      std::ifstream in(index_path);
      const nlohmann::json old = nlohmann::json::parse(in);
      if (old.at("settings") == settings && old.at("sources") == sources) {
        TokenizeReport r;
        r.unchanged = true, r.bytes = total, r.train_tokens = old.at("train_tokens"),
        r.val_tokens = old.at("val_tokens");
        r.shards = (int64_t)old.at("shards").size(), r.seconds = seconds();
        return r;
      }
    } catch (const nlohmann::json::exception&) {  // an unreadable index: tokenize again
    }
  }

  // The tokenizer: char from every character, bpe from a sample, byte and gpt2 as they are.
  std::unique_ptr<Tokenizer> tok;
  if (o.tokenizer == "char") {
    std::set<uint32_t> seen;
    SourceReader r(files);
    std::string block;
    for (bool more = true; more || !block.empty();) {
      more = more && r.read(block, 16 << 20);
      size_t cut = block.size();  // up to the last ASCII byte: no character is split between reads
      if (more)
        while (cut > 0 && (unsigned char)block[cut - 1] >= 0x80) --cut;
      if (cut == 0) cut = block.size();
      for (uint32_t cp : utf8_symbols(block.substr(0, cut))) seen.insert(cp);
      block.erase(0, cut);
    }
    tok = std::make_unique<CharTokenizer>(std::vector<uint32_t>(seen.begin(), seen.end()));
  } else {
    std::string sample;
    if (o.tokenizer == "bpe") {
      SourceReader r(files);
      r.read(sample, (size_t)o.sample_bytes);
    }
    tok = make_tokenizer(o.tokenizer, sample, o.vocab_size);
  }

  fs::create_directories(out);
  const fs::path work = out / fmt::format(".partial-{}", ::getpid());
  fs::remove_all(work);
  fs::create_directories(work);
  const int64_t val_start = (int64_t)((1 - o.val_fraction) * total);  // the byte where validation begins
  nlohmann::json shards = nlohmann::json::array();
  int64_t counts[2] = {0, 0};
  // Each split's shard being written: ids go to it as their block is done,
  // a new one starts every shard_tokens (no split's tokens are held whole).
  std::unique_ptr<ShardWriter> writing[2];
  // Each split's documents (data/document_finder.h): the tokens that start
  // inside a document's text, found as blocks are written.
  std::unique_ptr<DocumentIndexWriter> documents[2];
  for (int split : {0, 1})
    documents[split] = std::make_unique<DocumentIndexWriter>((work / documents_file_name(split)).string());
  DocumentFinder finder(o.doc_sep);
  std::vector<DocumentSpan> found;
  auto keep_documents = [&](int split) {  // of 2+ tokens, as text read whole keeps them
    for (const DocumentSpan& d : found)
      if (d.size() >= 2) documents[split]->append(d);
    found.clear();
  };
  const std::vector<int64_t> token_bytes = token_byte_lengths(*tok);
  bool in_validation = false;
  int shard_number[2] = {0, 0};
  auto shard_name = [&](int split) {  // of the split's shard being written
    return fmt::format("tokens_{}_{:06d}.bin", split ? "val" : "train", shard_number[split]);
  };
  auto close_shard = [&](int split) {
    writing[split]->close();
    shards.push_back(
        {{"file", shard_name(split)}, {"split", split ? "val" : "train"}, {"tokens", writing[split]->count()}});
    ++shard_number[split];
    writing[split].reset();
  };
  auto emit = [&](int split, const std::vector<int32_t>& ids) {
    for (size_t at = 0; at < ids.size();) {
      if (!writing[split])
        writing[split] = std::make_unique<ShardWriter>((work / shard_name(split)).string(), tok->vocab_size());
      const size_t n = std::min<size_t>(ids.size() - at, (size_t)(o.shard_tokens - writing[split]->count()));
      writing[split]->append(ids.data() + at, n);
      at += n;
      if (writing[split]->count() == o.shard_tokens) close_shard(split);
    }
    counts[split] += (int64_t)ids.size();
  };
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  SourceReader reader(files);
  std::string carry;
  int64_t done = 0;  // bytes handed to blocks
  bool more = true;
  // Up to 2·threads blocks a round, their buffers reused round after round
  // (fresh pages cost a fault each, which the cores queue on).
  std::vector<std::string> blocks(2 * threads);
  std::vector<std::vector<int32_t>> ids(2 * threads);
  std::vector<int> split_of(2 * threads);
  // Each block's line starts (the byte after each newline) and the first token
  // starting at or after each: where documents can begin and end, mapped to
  // tokens in the parallel part so the in-order part only looks them up.
  struct LineStart {
    int64_t byte, token;
  };
  std::vector<std::vector<LineStart>> line_starts(2 * threads);
  while (more || !carry.empty()) {
    // Each block ends at a safe cut (the rest carries over); none crosses val_start.
    int64_t n_blocks = 0;
    while (n_blocks < 2 * threads && (more || !carry.empty())) {
      if (more && (int64_t)carry.size() < o.block_bytes) more = reader.read(carry, (size_t)o.block_bytes);
      const int split = done >= val_start ? 1 : 0;
      size_t limit = std::min<size_t>(carry.size(), (size_t)o.block_bytes);
      if (split == 0) limit = std::min<size_t>(limit, (size_t)(val_start - done));  // training ends near val_start
      size_t cut = !more && limit == carry.size() ? carry.size() : safe_cut(carry, limit);
      if (cut == 0) {  // no cut before the limit: the first one after it
        for (size_t i = limit + 1; i < carry.size() && cut == 0; ++i)
          if (is_cut(carry, i)) cut = i;
        if (cut == 0 && more) {  // none in what is read so far: read on
          more = reader.read(carry, (size_t)o.block_bytes);
          continue;
        }
        if (cut == 0) cut = carry.size();
      }
      blocks[n_blocks].assign(carry, 0, cut);
      split_of[n_blocks++] = split;
      carry.erase(0, cut);
      done += (int64_t)cut;
    }
    std::string error;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t b = 0; b < n_blocks; ++b) {
      try {
        ids[b] = tok->encode(blocks[b]);
        line_starts[b].clear();
        const std::string& text = blocks[b];
        size_t token = 0;
        int64_t token_start = 0;
        for (const char* nl = (const char*)std::memchr(text.data(), '\n', text.size()); nl;
             nl = (const char*)std::memchr(nl + 1, '\n', text.data() + text.size() - (nl + 1))) {
          const int64_t byte = nl + 1 - text.data();
          while (token < ids[b].size() && token_start < byte) token_start += token_bytes[ids[b][token++]];
          line_starts[b].push_back({byte, (int64_t)token});
        }
      } catch (const std::exception& e) {
#pragma omp critical
        error = e.what();
      }
    }
    if (!error.empty()) {
      fs::remove_all(work);
      throw Error("tokenize: " + error);
    }
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int split = split_of[b];
      if (split == 1 && !in_validation) {  // documents do not cross the split
        finder.split(counts[0], 0, found);
        keep_documents(0);
        in_validation = true;
      }
      // A line start's position: the first token of the block starting at or after it (asked in increasing order).
      size_t line = 0;
      auto position_of = [&](size_t byte) -> int64_t {
        if (byte == 0) return counts[split];
        const auto& starts = line_starts[b];
        while (line < starts.size() && starts[line].byte < (int64_t)byte) ++line;
        TAPELM_CHECK(line < starts.size() && starts[line].byte == (int64_t)byte,
                     "tokenize: byte {} of a block is no line start", byte);
        return counts[split] + starts[line].token;
      };
      finder.feed(blocks[b], position_of, found);
      keep_documents(split);
      emit(split, ids[b]);
    }
    if (progress) progress({done, total, seconds()});
  }
  for (int split : {0, 1})
    if (writing[split]) close_shard(split);
  TAPELM_CHECK(counts[0] > 0 && counts[1] > 0,
               "tokenize: the input gives {} training and {} validation tokens; both splits need some (a longer input "
               "or another --val-fraction)",
               counts[0], counts[1]);
  finder.finish(counts[1], found);
  keep_documents(1);
  for (int split : {0, 1}) documents[split]->close(counts[split]);
  // Into place: the old shards go, the new ones come, the index last.
  fs::remove(index_path);
  for (auto& e : fs::directory_iterator(out)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && name.rfind("tokens_", 0) == 0 && e.path().extension() == ".bin") fs::remove(e.path());
  }
  for (auto& s : shards) fs::rename(work / s.at("file").get<std::string>(), out / s.at("file").get<std::string>());
  for (int split : {0, 1}) fs::rename(work / documents_file_name(split), out / documents_file_name(split));
  fs::remove_all(work);
  write_file((out / "tokenizer.json").string(), tok->to_json(), "tokenize");
  const nlohmann::json index = {{"format", "tapelm token shards 2"},
                                {"settings", settings},
                                {"sources", sources},
                                {"vocab_size", tok->vocab_size()},
                                {"shards", shards},
                                {"train_tokens", counts[0]},
                                {"val_tokens", counts[1]},
                                {"train_documents", documents[0]->count()},
                                {"val_documents", documents[1]->count()}};
  write_file(index_path.string(), index.dump(2), "tokenize");
  TokenizeReport r;
  r.bytes = total, r.train_tokens = counts[0], r.val_tokens = counts[1], r.shards = (int64_t)shards.size();
  r.seconds = seconds();
  return r;
}

}  // namespace tapelm::data
