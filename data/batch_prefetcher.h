// Training batches drawn on a background thread, so the next ones are ready
// while the step runs: a random window of a memory-mapped corpus that is not
// in the page cache costs a disk read (a 10 GB corpus is mostly not), and
// documents mode pads and copies on the host. The batches and their order
// are exactly those of Dataset::batch with the same generator: the worker
// draws them in sequence, and state() gives the generator's state before the
// next batch handed out (what a checkpoint saves to resume bit for bit).
#pragma once
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "autograd/random.h"
#include "data/dataset.h"

namespace tapelm::data {

class BatchPrefetcher {
 public:
  // Draws batches of `batch_size` from `split` with `gen` (copied; the
  // prefetcher owns its generator from here on), at most `depth` ahead.
  BatchPrefetcher(const Dataset& ds, Split split, int64_t batch_size, const Generator& gen, int depth = 2);
  ~BatchPrefetcher();  // stops the worker; batches drawn and not taken are dropped
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  // The next batch, waiting only if the worker is behind; an Error the
  // worker met (an id past the vocabulary) is thrown here.
  Batch next();
  // The generator's state that draws the batch next() returns next.
  Generator::State state() const;

 private:
  struct Drawn {
    Generator::State before;  // the generator's state when this batch was drawn
    Batch batch;
  };
  void work();

  const Dataset& ds_;
  const Split split_;
  const int64_t batch_size_;
  const size_t depth_;
  Generator gen_;                 // the worker's only
  Generator::State drawn_up_to_;  // gen_'s state after the last batch drawn (under mutex_)
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Drawn> ready_;
  std::exception_ptr failure_;
  bool stop_ = false;
  std::thread worker_;  // last: started once everything above exists
};

}  // namespace tapelm::data
