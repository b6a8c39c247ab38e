// Every misuse of the library throws tapelm::Error with a message that names
// the op and the shapes involved, e.g.
//   "matmul: [4,3] @ [5,2]: inner dimensions 3 and 5 differ".
#pragma once
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace tapelm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// TAPELM_CHECK(cond, "op: fmt {}", args...) throws Error when cond is false.
#define TAPELM_CHECK(cond, ...)                                     \
  do {                                                              \
    if (!(cond)) throw ::tapelm::Error(::fmt::format(__VA_ARGS__)); \
  } while (0)

}  // namespace tapelm
