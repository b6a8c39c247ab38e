#include "train/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "autograd/error.h"

namespace tapelm::train {

RunLock::RunLock(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "train.lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  TAPELM_CHECK(fd_ >= 0, "train: cannot create {}: {}", path, std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    TAPELM_CHECK(err != EWOULDBLOCK,
                 "train: another tapelm is training into {} (it holds {}); wait for it, or "
                 "give this run another --out",
                 dir, path);
    throw Error(fmt::format("train: cannot lock {}: {}", path, std::strerror(err)));
  }
}

RunLock::RunLock(RunLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

RunLock& RunLock::operator=(RunLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the descriptor releases the lock
}

}  // namespace tapelm::train
