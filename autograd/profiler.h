// Wall time per op kind, forward and backward: the profile mode of the
// benchmark (`tapelm_bench --profile`) prints it so the next bottleneck shows.
//
// Backward time is exact: backward() times each node's closure. Forward time
// is booked at op granularity without touching every op: record(), which
// every op calls when it has computed its output, books the time since the
// previous mark to that op. Work between ops that record nothing (building a
// mask, reshaping views) is therefore included in the next op's time. Call
// mark() before a timed region so the time before it is not booked.
// Off by default; when off it costs one branch per op.
#pragma once
#include <map>
#include <string>

namespace tapelm {

struct TimeTally {
  double forward_s = 0, backward_s = 0;
  int64_t forward_calls = 0, backward_calls = 0;
};

class Profiler {
 public:
  static void enable(bool on);
  static bool enabled();
  static void mark();
  static void book_forward(const char* op);                         // called by record()
  static void book_backward(const char* op, double seconds);        // called by backward()
  static void book_other(const std::string& what, double seconds);  // e.g. the optimizer step
  static const std::map<std::string, TimeTally>& tallies();
};

}  // namespace tapelm
