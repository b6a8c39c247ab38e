// data/: corpus reading, tokenizers (exact round trips), batches.
#include <filesystem>
#include <fstream>

#include "data/batch_prefetcher.h"
#include "data/corpus.h"
#include "data/dataset.h"
#include "data/document_finder.h"
#include "data/document_index.h"
#include "data/gpt2_tokenizer.h"
#include "data/token_data.h"
#include "data/token_file.h"
#include "data/tokenize.h"
#include "data/tokenizer.h"
#include "data/tokenizers.h"
#include "tests/test_helpers.h"

using namespace tapelm;
using namespace tapelm::data;
namespace fs = std::filesystem;

namespace {
std::string temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("tapelm_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}
void write(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

// Every byte value, invalid UTF-8 sequences, and multi-byte characters.
std::string nasty_bytes() {
  std::string s = "héllo wörld — 日本語 🎉\n";
  for (int b = 0; b < 256; ++b) s += (char)b;
  s += "\xC0\xAF \xED\xA0\x80 \xF4\x90\x80\x80 \xE2\x82 end";  // overlong, surrogate, >U+10FFFF, truncated
  return s;
}
}  // namespace

TEST(Tokenizer, CharRoundTripsAnyBytesSeenInCorpus) {
  std::string text = nasty_bytes();
  CharTokenizer tok(text);
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
  auto back = tokenizer_from_json(tok.to_json());
  EXPECT_EQ(back->encode(text), tok.encode(text));
  EXPECT_ERROR_CONTAINS(CharTokenizer("abc").encode("abd"),
                        "character 'd' (U+0064) at byte 2 of the text is not in the vocabulary");
  // Invalid UTF-8 is named as the byte it is, not as a code point it is not.
  EXPECT_ERROR_CONTAINS(CharTokenizer("abc").encode("ab\xff\xfe"),
                        "char tokenizer: byte 0xFF at byte 2 of the text is not valid UTF-8, and the training corpus "
                        "had no such stray byte to learn");
  EXPECT_EQ(CharTokenizer("abc\xc3").encode("a\xc3").size(), 2u);  // learned as a stray byte: a symbol
}

TEST(Tokenizer, CharVocabularyIsTheSortedCharacterSet) {
  CharTokenizer tok("hello");  // e h l o
  EXPECT_EQ(tok.vocab_size(), 4);
  EXPECT_EQ(tok.encode("hello"), (std::vector<int32_t>{1, 0, 2, 2, 3}));
}

TEST(Tokenizer, ByteRoundTrip) {
  ByteTokenizer tok;
  std::string text = nasty_bytes();
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
  EXPECT_EQ(tok.vocab_size(), 256);
  EXPECT_ERROR_CONTAINS(tok.decode({300}), "token id 300 out of range");
}

TEST(Tokenizer, BPELearnsMergesCompressesAndRoundTripsExactly) {
  std::string corpus;
  for (int i = 0; i < 200; ++i) corpus += "the cat sat on the mat with the hat. ";
  BPETokenizer tok(corpus, 280);
  // 9 distinct chunks ("the", " cat", ...): merging stops once each is one
  // token, before the requested 280, since no pair occurs twice any more.
  EXPECT_LE(tok.vocab_size(), 280);
  auto ids = tok.encode(corpus);
  EXPECT_EQ(ids.size(), 200u * 10 + 1);  // 10 chunks a sentence + the final lone space
  BPETokenizer small(corpus, 260);
  EXPECT_EQ(small.vocab_size(), 260);
  EXPECT_EQ(tok.decode(ids), corpus);
  // Text it never saw, arbitrary bytes included, still round-trips.
  std::string other = nasty_bytes() + " the matter of hats";
  EXPECT_EQ(tok.decode(tok.encode(other)), other);
  auto back = tokenizer_from_json(tok.to_json());
  EXPECT_EQ(back->encode(other), tok.encode(other));
  EXPECT_ERROR_CONTAINS(BPETokenizer("abc", 100), "vocab_size 100 must be at least 256");
}

TEST(Tokenizer, BPEChunksKeepLeadingSpaceWithWord) {
  auto c = bpe_chunks("Hi  there, 42 cats!\n");
  EXPECT_EQ(c, (std::vector<std::string>{"Hi", " ", " there", ",", " 42", " cats", "!", "\n"}));
  std::string joined;
  for (auto& s : bpe_chunks(nasty_bytes())) joined += s;
  EXPECT_EQ(joined, nasty_bytes());
}

// A tokenizer description comes from a checkpoint file: each field is checked.
TEST(Tokenizer, HostileDescriptionsAreClearErrors) {
  std::string doubling = R"({"kind":"bpe","merges":[[97,97])";
  for (int i = 0; i < 40; ++i) doubling += fmt::format(",[{},{}]", 256 + i, 256 + i);  // 2^41 bytes
  EXPECT_ERROR_CONTAINS(tokenizer_from_json(doubling + "]}"), "merges spell out more than 64 MB");
  EXPECT_ERROR_CONTAINS(tokenizer_from_json(R"({"kind":"bpe","merges":[[97,1e30]]})"),
                        "merge part 1e+30 is out of range");
  EXPECT_ERROR_CONTAINS(tokenizer_from_json(R"({"kind":"bpe","merges":[[97,256]]})"), "merge part 256 is out of range");
  EXPECT_ERROR_CONTAINS(tokenizer_from_json(R"({"kind":"bpe","merges":[[97]]})"), "is not a pair");
  EXPECT_ERROR_CONTAINS(tokenizer_from_json(R"({"kind":"char","symbols":[97,98,97]})"), "U+0061 appears twice");
  EXPECT_ERROR_CONTAINS(tokenizer_from_json(R"({"kind":"char","symbols":[-5]})"), "symbol -5 is out of range");
  EXPECT_NO_THROW(tokenizer_from_json(R"({"kind":"char","symbols":[1114112]})"));  // stray byte 0: fine
}

TEST(Corpus, ReadsFilesAndFoldersSkippingBinaryAndLinks) {
  std::string d = temp_dir("corpus");
  write(d + "/a.txt", "alpha\n");
  write(d + "/b.txt", "beta\n");
  write(d + "/b.dat", std::string("\0\1\2", 3));
  fs::create_symlink(d + "/a.txt", d + "/c.u8");
  EXPECT_EQ(read_corpus({d}), "alpha\nbeta\n");
  EXPECT_EQ(read_corpus({d + "/b.txt", d + "/a.txt"}), "beta\nalpha\n");
  fs::remove_all(d);
}

TEST(Corpus, MissingEmptyAndBinaryOnlyInputsAreClearErrors) {
  std::string d = temp_dir("corpus_bad");
  EXPECT_ERROR_CONTAINS(read_corpus({d + "/nope.txt"}), "corpus: " + d + "/nope.txt does not exist");
  write(d + "/empty.txt", "");
  EXPECT_ERROR_CONTAINS(read_corpus({d + "/empty.txt"}), "is empty");
  fs::create_directories(d + "/bin");
  write(d + "/bin/x.dat", std::string("\0", 1));
  EXPECT_ERROR_CONTAINS(read_corpus({d + "/bin"}), "has no text files");
  fs::remove_all(d);
}

TEST(Corpus, SplitDocuments) {
  EXPECT_EQ(split_documents("a\nb\n\n\nc\n", ""), (std::vector<std::string>{"a\nb\n", "c\n"}));
  EXPECT_EQ(split_documents("one\n%\ntwo\nlines\n%\n", "%"), (std::vector<std::string>{"one\n", "two\nlines\n"}));
}

TEST(Dataset, WindowsAreShiftedByOneAndSeeded) {
  std::string text;
  for (int i = 0; i < 50; ++i) text += "abcdefghij";
  CharTokenizer tok(text);
  Dataset ds(text, tok, 8);
  EXPECT_EQ(ds.tokens(Split::train), 450);
  EXPECT_EQ(ds.tokens(Split::val), 50);
  Generator g1(3), g2(3);
  Batch a = ds.batch(Split::train, 4, g1), b = ds.batch(Split::train, 4, g2);
  EXPECT_EQ(a.x.to_vector(), b.x.to_vector());
  EXPECT_EQ(a.x.shape(), (Shape{4, 8}));
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t t = 0; t < 8; ++t) EXPECT_EQ(a.y.flat(i * 8 + t), ((int)a.x.flat(i * 8 + t) + 1) % 10);
  EXPECT_EQ(a.tokens(), 32);
  auto all = ds.sequential_batches(Split::val, 4);  // 50 tokens -> 6 windows of 8 -> 2 batches
  EXPECT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].x.size(0), 2);
}

TEST(Dataset, CorpusShorterThanAContextWindowIsAClearError) {
  CharTokenizer tok("0123456789");
  EXPECT_ERROR_CONTAINS(Dataset("0123456789012345678901234567890123456789", tok, 8),
                        "validation split of 4 tokens is shorter than one context window");
}

TEST(Dataset, DocumentsArePaddedWithMaskAndIgnoredTargets) {
  std::string text = "ab\n%\nabcdef\n%\nabc\n%\nabcd\n%\nab\n%\nabcdefghijk\n%\nabc\n%\nab\n%\nabc\n%\nabcde\n";
  CharTokenizer tok(text);
  Dataset ds(text, tok, 6, 0.2, "documents", "%");
  Generator g(1);
  Batch b = ds.batch(Split::train, 5, g);
  ASSERT_TRUE(b.pad_mask.defined());
  const int64_t T = b.x.size(1);
  EXPECT_LE(T, 6);
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t t = 0; t < T; ++t) {
      bool pad = b.pad_mask.flat(i * T + t);
      EXPECT_EQ(b.y.flat(i * T + t) < 0, pad);
      if (!pad && t + 1 < T && !b.pad_mask.flat(i * T + t + 1)) {
        EXPECT_EQ(b.y.flat(i * T + t), b.x.flat(i * T + t + 1));
      }
    }
  // Right padding only: once padded, the rest of the row is padding.
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t t = 1; t < T; ++t)
      if (b.pad_mask.flat(i * T + t - 1)) {
        EXPECT_TRUE(b.pad_mask.flat(i * T + t));
      }
}

// The background loader hands out exactly Dataset::batch's batches in order,
// whatever it has drawn ahead, and its state() restarts that sequence at the
// next batch (a checkpoint's resume), in windows and documents mode.
TEST(BatchPrefetcher, GivesTheDatasetsBatchesInOrderAndResumesFromItsState) {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "ab\n%\nabcdef\n%\nabc\n%\nabcdefghijk\n%\n";
  CharTokenizer tok(text);
  for (const char* mode : {"windows", "documents"}) {
    SCOPED_TRACE(mode);
    Dataset ds(text, tok, 6, 0.2, mode, "%");
    Generator direct(7);
    BatchPrefetcher ahead(ds, Split::train, 5, Generator(7), 3);
    Generator::State after_three{};
    for (int i = 0; i < 8; ++i) {
      if (i == 3) after_three = ahead.state();
      const Batch want = ds.batch(Split::train, 5, direct), got = ahead.next();
      EXPECT_EQ(got.x.to_vector(), want.x.to_vector()) << "batch " << i;
      EXPECT_EQ(got.y.to_vector(), want.y.to_vector()) << "batch " << i;
      EXPECT_EQ(got.pad_mask.defined(), want.pad_mask.defined());
    }
    Generator from_state;
    from_state.set_state(after_three);
    Generator again(7);
    for (int i = 0; i < 3; ++i) ds.batch(Split::train, 5, again);
    BatchPrefetcher resumed(ds, Split::train, 5, from_state);
    EXPECT_EQ(resumed.next().x.to_vector(), ds.batch(Split::train, 5, again).x.to_vector());
  }
}

// An error the worker meets (an id past the vocabulary) comes out of next().
TEST(BatchPrefetcher, AnErrorInTheWorkerIsThrownByNext) {
  const std::string dir = temp_dir("prefetch_error");
  write_shard(dir + "/x_train.bin", std::vector<int32_t>(200, 300));
  write_shard(dir + "/x_val.bin", std::vector<int32_t>(200, 5));
  write(dir + "/tokenizer.json", ByteTokenizer().to_json());
  std::optional<TokenData> d = find_token_data(dir);
  ASSERT_TRUE(d);
  Dataset ds(d->train, d->val, 8, d->tokenizer->vocab_size());
  BatchPrefetcher ahead(ds, Split::train, 2, Generator(1));
  EXPECT_ERROR_CONTAINS(ahead.next(), "past the vocabulary of 256");
  fs::remove_all(dir);
}

// ---- token files (data/token_file.h, data/token_data.h) -------------------

TEST(TokenFiles, ShardsRoundTripInBothWidthsAndRawFilesAreUint16) {
  const std::string dir = temp_dir("shards");
  const std::vector<int32_t> narrow = {0, 1, 65535, 7, 50256}, wide = {0, 70000, 3, 1 << 30};
  write_shard(dir + "/a.bin", narrow);
  write_shard(dir + "/b.bin", wide);
  TokenFile a = TokenFile::open(dir + "/a.bin"), b = TokenFile::open(dir + "/b.bin");
  EXPECT_EQ(std::string(a.format()), "shard");
  EXPECT_EQ(a.token_bytes(), 2);
  EXPECT_EQ(b.token_bytes(), 4);
  std::vector<int32_t> got(5);
  a.read(0, 5, got.data());
  EXPECT_EQ(got, narrow);
  got.resize(4);
  b.read(0, 4, got.data());
  EXPECT_EQ(got, wide);
  EXPECT_EQ(b.max_token(), 1 << 30);
  const std::vector<uint16_t> raw = {5, 6, 7, 8};
  std::ofstream(dir + "/raw.bin", std::ios::binary).write(reinterpret_cast<const char*>(raw.data()), 8);
  TokenFile r = TokenFile::open(dir + "/raw.bin");
  EXPECT_EQ(std::string(r.format()), "raw");
  EXPECT_EQ(r.size(), 4);
  TokenSequence seq({a, r});  // a read across the files' boundary
  std::vector<int32_t> across(4);
  seq.read(3, 4, across.data());
  EXPECT_EQ(across, (std::vector<int32_t>{7, 50256, 5, 6}));
  fs::remove_all(dir);
}

TEST(TokenFiles, TruncatedOddAndUnknownFilesAreClearErrors) {
  const std::string dir = temp_dir("bad_shards");
  write_shard(dir + "/s.bin", std::vector<int32_t>(100, 3));
  fs::resize_file(dir + "/s.bin", fs::file_size(dir + "/s.bin") - 10);
  EXPECT_ERROR_CONTAINS(TokenFile::open(dir + "/s.bin"), "it is truncated");
  write(dir + "/odd.bin", "abc");
  EXPECT_ERROR_CONTAINS(TokenFile::open(dir + "/odd.bin"), "odd byte count");
  std::vector<int32_t> header(kShardHeaderInts, 0);
  header[0] = kShardMagic, header[1] = 7, header[2] = 0;
  std::ofstream(dir + "/v7.bin", std::ios::binary).write(reinterpret_cast<const char*>(header.data()), 1024);
  EXPECT_ERROR_CONTAINS(TokenFile::open(dir + "/v7.bin"), "shard version 7");
  EXPECT_ERROR_CONTAINS(TokenFile::open(dir + "/missing.bin"), "cannot open");
  fs::remove_all(dir);
}

TEST(TokenFiles, NanoGptAndShardFoldersGiveWindowsOfTheirTokens) {
  const std::string nano = temp_dir("nanogpt"), shards = temp_dir("llmc");
  std::vector<uint16_t> train(3000), val(500);
  for (size_t i = 0; i < train.size(); ++i) train[i] = (uint16_t)(i % 50257);
  for (size_t i = 0; i < val.size(); ++i) val[i] = (uint16_t)(40000 + i);
  std::ofstream(nano + "/train.bin", std::ios::binary).write(reinterpret_cast<const char*>(train.data()), 6000);
  std::ofstream(nano + "/val.bin", std::ios::binary).write(reinterpret_cast<const char*>(val.data()), 1000);
  std::optional<TokenData> d = find_token_data(nano);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->layout, "nanoGPT");
  EXPECT_EQ(d->tokenizer->kind(), "gpt2");  // no tokenizer.json: GPT-2's, as nanoGPT's data uses
  Dataset ds(d->train, d->val, 16, d->tokenizer->vocab_size());
  EXPECT_EQ(ds.tokens(Split::train), 3000);
  Generator gen(3);
  Batch b = ds.batch(Split::train, 4, gen);
  for (int64_t r = 0; r < 4; ++r)  // consecutive tokens, targets shifted by one
    for (int64_t t = 0; t < 16; ++t) {
      EXPECT_EQ(b.y.data<int32_t>()[r * 16 + t], b.x.data<int32_t>()[r * 16 + t] + 1);
      if (t > 0) {
        EXPECT_EQ(b.x.data<int32_t>()[r * 16 + t], b.x.data<int32_t>()[r * 16 + t - 1] + 1);
      }
    }
  EXPECT_EQ(ds.sequential_batches(Split::val, 8).size(), 4u);  // 31 windows of 16, 8 a batch
  // llm.c's layout: shards named *train* and *val*, read in name order; a tokenizer.json beside them is used.
  write_shard(shards + "/data_train_000002.bin", std::vector<int32_t>(50, 2));
  write_shard(shards + "/data_train_000001.bin", std::vector<int32_t>(50, 1));
  write_shard(shards + "/data_val_000000.bin", std::vector<int32_t>(40, 9));
  write(shards + "/tokenizer.json", ByteTokenizer().to_json());
  d = find_token_data(shards);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->layout, "shards");
  EXPECT_EQ(d->tokenizer->kind(), "byte");
  std::vector<int32_t> first(2);
  d->train->read(49, 2, first.data());
  EXPECT_EQ(first, (std::vector<int32_t>{1, 2}));
  EXPECT_FALSE(find_token_data(temp_dir("text_only")));  // no token files: text
  fs::remove_all(nano);
  fs::remove_all(shards);
}

TEST(TokenFiles, ATokenPastTheVocabularyIsAClearError) {
  const std::string dir = temp_dir("past_vocab");
  write_shard(dir + "/x_train.bin", std::vector<int32_t>(200, 300));  // 300 is past the byte tokenizer's 256
  write_shard(dir + "/x_val.bin", std::vector<int32_t>(200, 5));
  write(dir + "/tokenizer.json", ByteTokenizer().to_json());
  std::optional<TokenData> d = find_token_data(dir);
  ASSERT_TRUE(d);
  Dataset ds(d->train, d->val, 8, d->tokenizer->vocab_size());
  Generator gen(1);
  EXPECT_ERROR_CONTAINS(ds.batch(Split::train, 2, gen), "past the vocabulary of 256");
  fs::remove_all(dir);
}

// ---- tapelm tokenize (data/tokenize.h) ---------------------------------------

namespace {
std::vector<int32_t> all_tokens(const TokenSequence& s) {
  std::vector<int32_t> out(s.size());
  s.read(0, s.size(), out.data());
  return out;
}
}  // namespace

TEST(Tokenize, BlocksInParallelGiveTheIdsOfTheWholeText) {
  const std::string dir = temp_dir("tokenize");
  std::string text;
  for (int i = 0; i < 300; ++i)
    text += fmt::format("Line {} of the text:  words, 'quotes' don't\n\n  indented\ttabs café 東京 {}\n", i, i * 7);
  write(dir + "/a.txt", text.substr(0, text.size() / 2));
  write(dir + "/b.txt", text.substr(text.size() / 2));
  for (const std::string kind : {"gpt2", "bpe", "char", "byte"}) {
    TokenizeOptions o;
    o.inputs = {dir + "/a.txt", dir + "/b.txt"};
    o.out = dir + "/out_" + kind;
    o.tokenizer = kind;
    o.vocab_size = 300;
    o.threads = 3;
    o.block_bytes = 500;    // many blocks, cut at safe places
    o.shard_tokens = 2000;  // several shards
    o.sample_bytes = 1 << 20;
    const TokenizeReport r = tokenize_corpus(o);
    EXPECT_FALSE(r.unchanged);
    EXPECT_GT(r.shards, 2) << kind;
    std::optional<TokenData> d = find_token_data(o.out);
    ASSERT_TRUE(d) << kind;
    std::vector<int32_t> got = all_tokens(*d->train), val = all_tokens(*d->val);
    got.insert(got.end(), val.begin(), val.end());
    EXPECT_EQ(got, d->tokenizer->encode(text)) << kind;  // the same ids as the whole text at once
    EXPECT_NEAR((double)r.val_tokens / (r.train_tokens + r.val_tokens), 0.1, 0.02) << kind;
  }
  fs::remove_all(dir);
}

TEST(Tokenize, AnUnchangedInputIsANoOpAndAChangedOneIsRedone) {
  const std::string dir = temp_dir("tokenize_again");
  std::string text;
  for (int i = 0; i < 200; ++i) text += fmt::format("sentence number {} goes here\n", i);
  write(dir + "/t.txt", text);
  TokenizeOptions o;
  o.inputs = {dir + "/t.txt"};
  o.out = dir + "/out";
  o.tokenizer = "byte";
  EXPECT_FALSE(tokenize_corpus(o).unchanged);
  EXPECT_TRUE(tokenize_corpus(o).unchanged);
  write(dir + "/t.txt", text + "one more line\n");
  const TokenizeReport r = tokenize_corpus(o);
  EXPECT_FALSE(r.unchanged);
  EXPECT_EQ(r.train_tokens + r.val_tokens, (int64_t)text.size() + 14);
  o.val_fraction = 0.2;  // other options: redone too
  EXPECT_FALSE(tokenize_corpus(o).unchanged);
  o.inputs = {dir + "/missing.txt"};
  EXPECT_ERROR_CONTAINS(tokenize_corpus(o), "does not exist");
  EXPECT_TRUE(find_token_data(o.out));  // the last good tokenization is still there
  // An index that disagrees with its shards is refused.
  write_shard(o.out + "/tokens_train_000000.bin", {1, 2, 3});
  EXPECT_ERROR_CONTAINS(find_token_data(o.out), "index.json says");
  fs::remove_all(dir);
}

// ---- documents in token data (data/document_finder.h, data/document_index.h) --

// Fed in pieces cut anywhere, the finder finds split_documents's documents:
// each span's bytes are the document's text (its lines with their newlines).
TEST(DocumentFinder, FindsSplitDocumentsDocumentsWhereverThePiecesAreCut) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"a\nb\n\n\nc\n", ""},
      {"  \n\nfirst doc\nline two\n \t \n\r\nsecond\n\nthird without newline", ""},
      {"one\n%\ntwo\nlines\n%\n", "%"},
      {"%\n%\n  \n%\nx %\n%%\nlast", "%"},  // a blank document is no document; "x %" and "%%" are text
      {"<|endoftext|>\nA\n<|endoftext|>\n<|endoftext|>\nB b\n\nstill B\n", "<|endoftext|>"},
  };
  Generator gen(7);
  for (const auto& [text, separator] : cases) {
    const std::vector<std::string> want = split_documents(text, separator);
    for (int trial = 0; trial < 50; ++trial) {
      DocumentFinder finder(separator);
      std::vector<DocumentSpan> spans;
      size_t at = 0;
      while (at < text.size()) {
        const size_t n = std::min<size_t>(text.size() - at, 1 + gen.randint(trial % 2 ? 3 : 12));
        finder.feed(
            std::string_view(text).substr(at, n), [&](size_t i) { return (int64_t)(at + i); }, spans);
        at += n;
      }
      finder.finish((int64_t)text.size(), spans);
      std::vector<std::string> got;
      for (const DocumentSpan& s : spans) {
        std::string doc = text.substr((size_t)s.begin, (size_t)s.size());
        if (doc.back() != '\n') doc += '\n';  // split_documents ends every line with one
        got.push_back(doc);
      }
      ASSERT_EQ(got, want) << "separator '" << separator << "', trial " << trial;
    }
  }
}

// tokenize records each split's documents: with the char tokenizer a
// document's tokens are its text's, exactly as --batch-mode documents reads
// text, and with GPT-2's too on text whose blank lines are bare. The one
// document the train/validation split cuts comes in two parts whose texts
// joined are its text (the split falls before whitespace, so the newline
// ending the line it cuts may be outside both).
TEST(Tokenize, RecordsTheDocumentsThatTextModeReads) {
  const std::string dir = temp_dir("tokenize_documents");
  for (const std::string kind : {"char", "gpt2"}) {
    std::string text;
    Generator gen(11);
    for (int i = 0; i < 120; ++i) {
      text += fmt::format("Document {} begins here.\n", i);
      for (uint64_t l = gen.randint(4); l > 0; --l) text += fmt::format("  and goes on, line {}: café 東京\n", l);
      // Runs of blank lines (GPT-2 makes one token of "\n\n\n", which starts inside the document before).
      // (nor of "\n\n" at the text's end).
      if (i < 119) text += i % 7 == 3 && kind == "char" ? "\n\n\n" : "\n";
    }
    write(dir + "/t.txt", text);
    const std::vector<std::string> want = split_documents(text, "");
    TokenizeOptions o;
    o.inputs = {dir + "/t.txt"};
    o.out = dir + "/out_" + kind;
    o.tokenizer = kind;
    o.threads = 2, o.block_bytes = 300, o.shard_tokens = 1000;
    tokenize_corpus(o);
    std::optional<TokenData> d = find_token_data(o.out);
    ASSERT_TRUE(d);
    std::vector<std::string> split_docs[2];
    for (int split : {0, 1}) {
      auto docs = documents_of(*d, split ? "val" : "train");
      const TokenSequence& seq = *(split ? d->val : d->train);
      int64_t covered = 0, last_end = 0;
      for (int64_t i = 0; i < docs->size(); ++i) {
        const DocumentSpan s = (*docs)[i];
        EXPECT_LE(last_end, s.begin);
        EXPECT_GE(s.size(), 2);
        std::vector<int32_t> ids(s.size());
        seq.read(s.begin, s.size(), ids.data());
        split_docs[split].push_back(d->tokenizer->decode(ids));
        covered += s.size(), last_end = s.end;
      }
      EXPECT_EQ(docs->tokens(), covered);
    }
    std::vector<std::string> got = split_docs[0];
    auto rest = split_docs[1].begin();
    if (split_docs[0].size() + split_docs[1].size() == want.size() + 1) {  // the document the split cut
      std::string joined = got.back() + *rest++;
      const std::string& whole = want[got.size() - 1];
      if (joined.size() + 1 == whole.size()) joined.insert(split_docs[0].back().size(), "\n");
      got.back() = joined;
    }
    got.insert(got.end(), rest, split_docs[1].end());
    ASSERT_EQ(got.size(), want.size()) << kind;
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << kind << " document " << i;
  }
  // A tapelm folder without its document index (made before tokenize recorded one) says to tokenize again.
  fs::remove(dir + "/out_char/documents_val.idx");
  std::optional<TokenData> old = find_token_data(dir + "/out_char");
  ASSERT_TRUE(old);
  EXPECT_ERROR_CONTAINS(documents_of(*old, "val"), "run tapelm tokenize again");
  fs::remove_all(dir);
}

// nanoGPT's and llm.c's GPT-2 data put <|endoftext|> between documents: the
// first --batch-mode documents run finds them by one scan and keeps the index
// beside the shards; an index made for other shards, or cut short, is refused.
TEST(TokenFiles, GptTwoDataIsCutIntoDocumentsAtEndOfText) {
  const std::string dir = temp_dir("eot_documents");
  const int32_t eot = GPT2Tokenizer::kEndOfText;
  // llm.c's layout: each document begins with <|endoftext|>.
  std::vector<int32_t> train = {eot, 5, 6, 7, eot, 8, eot, eot, 9, 10, 11, 12, eot, 13, 14};
  write_shard(dir + "/d_train_000000.bin", train);
  write_shard(dir + "/d_val_000000.bin", {eot, 1, 2, eot, 3, 4, 5});
  std::optional<TokenData> d = find_token_data(dir);
  ASSERT_TRUE(d);
  auto docs = documents_of(*d, "train");
  ASSERT_EQ(docs->size(), 4);  // [eot 8] kept (2 tokens), the lone eot dropped
  const std::vector<std::pair<int64_t, int64_t>> want = {{0, 4}, {4, 6}, {7, 12}, {12, 15}};
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ((*docs)[i].begin, want[i].first);
    EXPECT_EQ((*docs)[i].end, want[i].second);
  }
  EXPECT_TRUE(fs::exists(dir + "/documents_train.idx"));
  EXPECT_EQ(documents_of(*d, "val")->size(), 2);
  // Batches: rows are a document's tokens from its start, padded and masked.
  Dataset ds(d->train, d->val, 8, d->tokenizer->vocab_size(), documents_of(*d, "train"), documents_of(*d, "val"));
  EXPECT_EQ(ds.mode(), "documents");
  Generator gen(2);
  Batch b = ds.batch(Split::train, 6, gen);
  for (int64_t r = 0; r < 6; ++r) {
    EXPECT_EQ(b.x.data<int32_t>()[r * b.x.size(1)], eot);  // every document here begins with it
    EXPECT_FALSE(b.pad_mask.data<uint8_t>()[r * b.x.size(1)]);
  }
  EXPECT_EQ(ds.sequential_batches(Split::val, 8).size(), 1u);
  // The index kept beside the shards is refused once the shards change, and when cut short.
  write_shard(dir + "/d_train_000000.bin", std::vector<int32_t>(train.begin(), train.end() - 1));
  d = find_token_data(dir);
  EXPECT_ERROR_CONTAINS(documents_of(*d, "train"), "made for 15 tokens, but the split's token files hold 14");
  fs::resize_file(dir + "/documents_val.idx", fs::file_size(dir + "/documents_val.idx") - 3);
  EXPECT_ERROR_CONTAINS(documents_of(*d, "val"), "it is truncated");
  // Data of another tokenizer with no index has no end-of-text token to cut at.
  write(dir + "/tokenizer.json", ByteTokenizer().to_json());
  fs::remove(dir + "/documents_train.idx");
  d = find_token_data(dir);
  EXPECT_ERROR_CONTAINS(documents_of(*d, "train"), "no end-of-text token");
  fs::remove_all(dir);
}
