// Readers take only regular files: opening a FIFO with no writer blocks
// forever, a character device (/dev/zero, /dev/urandom) never ends, and a
// directory reads as an error at a random place. Symlinks are followed.
#pragma once
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "autograd/error.h"

namespace tapelm {

// Throws Error "<what>: <path> is a FIFO, not a regular file" (or names the OS error) unless path is a regular file.
inline void check_regular_file(const std::string& path, const char* what) {
  struct stat st {};
  TAPELM_CHECK(::stat(path.c_str(), &st) == 0, "{}: cannot read {}: {}", what, path, std::strerror(errno));
  const char* kind = S_ISDIR(st.st_mode)    ? "a directory"
                     : S_ISFIFO(st.st_mode) ? "a FIFO"
                     : S_ISCHR(st.st_mode)  ? "a character device"
                     : S_ISBLK(st.st_mode)  ? "a block device"
                     : S_ISSOCK(st.st_mode) ? "a socket"
                                            : nullptr;
  TAPELM_CHECK(S_ISREG(st.st_mode), "{}: {} is {}, not a regular file", what, path, kind ? kind : "not a regular file");
}

}  // namespace tapelm
