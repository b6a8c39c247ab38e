// Time per op kind, forward and backward: the profile mode of the benchmark
// (`tapelm_bench --profile`) prints it so the next bottleneck shows.
//
// Two clocks. On the CPU the host's clock times the work itself. On the GPU
// the host only launches kernels, so the profiler records a CUDA event on the
// stream at every booking point and, once the step is done (settle()), books
// the GPU time between consecutive events: what the GPU spent between one op
// and the next, idle gaps included (a gap shows as an op whose GPU time is
// close to its host time: the launches, not the kernels, set the pace).
// The host's time per op is kept beside it.
//
// Backward time is exact: backward() books each node's closure as a Span.
// Forward time is booked at op granularity without touching every op:
// record(), which every op calls when it has computed its output, books the
// time since the previous mark to that op. Work between ops that record
// nothing (building a mask, reshaping views) is therefore included in the next
// op's time. Call mark() before a timed region so the time before it is not
// booked. Off by default; when off it costs one branch per op.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "autograd/device.h"

namespace tapelm {

struct TimeTally {
  double forward_s = 0, backward_s = 0;  // on the profiler's clock (the GPU's with Device::cuda)
  double host_s = 0;                     // on the host's clock, forward and backward
  int64_t forward_calls = 0, backward_calls = 0;
};

class Profiler {
 public:
  // The start of a region booked as one item (a node's backward, the optimizer step).
  struct Span {
    std::chrono::steady_clock::time_point host;
    int64_t event = -1;  // index of the GPU event that opens it (Device::cuda clock)
  };

  static void enable(bool on, Device clock = Device::cpu);
  static bool enabled();
  static Device clock();
  static void mark();
  // Books to "op (component)": the FLOP counter's component path (autograd/flops.h)
  // tells the classifier's linear from the blocks'.
  static void book_forward(const char* op, int component);  // called by record()
  static Span begin();
  static void book_backward(const char* op, int component, const Span& since);  // called by backward()
  static void book_other(const std::string& what, const Span& since);           // e.g. the optimizer step
  // With the GPU clock: waits for the stream and books the events recorded so
  // far. Call it between steps (it synchronizes); tallies() calls it too.
  static void settle();
  static const std::map<std::string, TimeTally>& tallies();
  static void reset();
};

}  // namespace tapelm
