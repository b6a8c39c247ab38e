#include "data/batch_prefetcher.h"

#include <algorithm>

namespace tapelm::data {

BatchPrefetcher::BatchPrefetcher(const Dataset& ds, Split split, int64_t batch_size, const Generator& gen, int depth)
    : ds_(ds),
      split_(split),
      batch_size_(batch_size),
      depth_((size_t)std::max(depth, 1)),
      gen_(gen),
      drawn_up_to_(gen.state()),
      worker_([this] { work(); }) {}

BatchPrefetcher::~BatchPrefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  worker_.join();
}

void BatchPrefetcher::work() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      changed_.wait(lock, [this] { return stop_ || ready_.size() < depth_; });
      if (stop_) return;
    }
    // Drawn outside the lock: next() hands out ready batches meanwhile.
    Drawn d{gen_.state(), {}};
    try {
      d.batch = ds_.batch(split_, batch_size_, gen_);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      failure_ = std::current_exception();
      changed_.notify_all();
      return;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    ready_.push_back(std::move(d));
    drawn_up_to_ = gen_.state();
    changed_.notify_all();
  }
}

Batch BatchPrefetcher::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return !ready_.empty() || failure_; });
  if (ready_.empty()) std::rethrow_exception(failure_);
  Batch b = std::move(ready_.front().batch);
  ready_.pop_front();
  changed_.notify_all();
  return b;
}

Generator::State BatchPrefetcher::state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return ready_.empty() ? drawn_up_to_ : ready_.front().before;  // empty: the worker draws it from there
}

}  // namespace tapelm::data
