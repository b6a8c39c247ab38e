#include "data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "autograd/error.h"
#include "autograd/regular_file.h"

namespace tapelm::data {

namespace fs = std::filesystem;

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  TAPELM_CHECK(in.good(), "{}: cannot read {}", what, path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text, const std::string& what) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    TAPELM_CHECK(out.good(), "{}: cannot write {}", what, tmp);
  }
  fs::rename(tmp, path);
}

std::string read_corpus(const std::vector<std::string>& paths) {
  TAPELM_CHECK(!paths.empty(), "corpus: no input path given");
  std::string text;
  for (const std::string& path : paths) {
    std::error_code ec;
    TAPELM_CHECK(fs::exists(path, ec), "corpus: {} does not exist", path);
    if (fs::is_directory(path, ec)) {
      std::vector<fs::path> files;
      for (auto& e : fs::directory_iterator(path, ec))
        if (e.is_regular_file() && !e.is_symlink()) files.push_back(e.path());
      TAPELM_CHECK(!ec, "corpus: cannot list {}: {}", path, ec.message());
      std::sort(files.begin(), files.end());
      size_t used = 0;
      for (auto& f : files) {
        std::string t = read_file(f.string(), "corpus");
        if (t.find('\0') != std::string::npos) continue;  // binary
        text += t;
        ++used;
      }
      TAPELM_CHECK(used > 0, "corpus: folder {} has no text files", path);
    } else {
      check_regular_file(path, "corpus");
      text += read_file(path, "corpus");
    }
  }
  TAPELM_CHECK(!text.empty(), "corpus: {} is empty", fmt::join(paths, ", "));
  return text;
}

std::vector<std::string> split_documents(const std::string& text, const std::string& separator) {
  std::vector<std::string> docs;
  std::string cur;
  std::istringstream in(text);
  std::string line;
  auto flush = [&] {
    if (cur.find_first_not_of(" \t\r\n") != std::string::npos) docs.push_back(cur);
    cur.clear();
  };
  while (std::getline(in, line)) {
    bool boundary = separator.empty() ? line.find_first_not_of(" \t\r") == std::string::npos : line == separator;
    if (boundary) {
      flush();
    } else {
      cur += line;
      cur += '\n';
    }
  }
  flush();
  return docs;
}

}  // namespace tapelm::data
