// An advisory lock (flock) on DIR/train.lock, held while a run trains into
// DIR: a second `tapelm train` into the same --out gets one clear line
// instead of a "cannot rename" in the middle of its run. The kernel drops the
// lock when the process ends, however it ends (kill -9 included).
#pragma once
#include <string>

namespace tapelm::train {

class RunLock {
 public:
  RunLock() = default;
  // Takes the lock (creating DIR/train.lock); throws Error if another process holds it.
  explicit RunLock(const std::string& dir);
  RunLock(RunLock&& other) noexcept;
  RunLock& operator=(RunLock&& other) noexcept;
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  ~RunLock();

 private:
  int fd_ = -1;
};

}  // namespace tapelm::train
