// Per-op FLOP counter. Every op adds its forward FLOPs under its own name; the
// FLOPs spent inside a node's backward are booked as that op's backward FLOPs
// (whatever ops the backward uses), so `matmul` shows 2mnk forward and 4mnk
// backward. A training loop reads totals and resets between steps.
#pragma once
#include <cstdint>
#include <map>
#include <string>

namespace tapelm {

struct FlopTally {
  int64_t forward = 0;
  int64_t backward = 0;
  int64_t total() const { return forward + backward; }
};

class FlopCounter {
 public:
  static void add(const char* op, int64_t flops);
  static void reset();
  static const std::map<std::string, FlopTally>& tallies();
  static FlopTally total();
  static FlopTally of(const std::string& op);

  // While alive, FLOPs are booked as backward FLOPs of `op` (used by backward()).
  class BackwardScope {
   public:
    explicit BackwardScope(const char* op);
    ~BackwardScope();

   private:
    const char* prev_;
  };
};

}  // namespace tapelm
