// Reading training text: one file, several, or a folder (its regular text
// files, sorted by name; symbolic links and binary files — any NUL byte — are
// skipped, which suits e.g. /usr/share/games/fortunes with its .dat indexes).
#pragma once
#include <string>
#include <vector>

namespace tapelm::data {

// A file's bytes; an Error "<what>: cannot read <path>" when it cannot be opened.
std::string read_file(const std::string& path, const std::string& what);
// Writes text to path.tmp, then renames it to path (a reader never sees half
// a file); an Error "<what>: cannot write <path>.tmp" when it fails.
void write_file(const std::string& path, const std::string& text, const std::string& what);

// Concatenated bytes of every file. Throws Error for a missing, unreadable or
// empty input, naming the path.
std::string read_corpus(const std::vector<std::string>& paths);

// Splits text into documents: at blank lines when separator is empty, else at
// lines equal to separator (e.g. "%" for fortune files). Empty documents dropped.
std::vector<std::string> split_documents(const std::string& text, const std::string& separator);

}  // namespace tapelm::data
