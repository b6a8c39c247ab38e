// Per-op FLOP counter. Every op adds its forward FLOPs under its own name; the
// FLOPs spent inside a node's backward are booked as that op's backward FLOPs
// (whatever ops the backward uses), so `matmul` shows 2mnk forward and 4mnk
// backward. A fused op may split its count into parts named "<op>.<part>"
// ("attention.softmax"), which keep their names in its backward too.
// A training loop reads totals and resets between steps.
//
// FLOPs are also booked to a component: the path of the FlopCounter::Scope
// guards alive when the op ran forward ("mixer", "mixer.proj", "ffn.proj",
// "lm_head.proj", ...). The tape remembers each node's component, so its
// backward FLOPs land in the same place. `tapelm flops` compares these
// per-component counts with the analytic formulas.
#pragma once
#include <cstdint>
#include <map>
#include <string>

namespace tapelm {

struct FlopTally {
  int64_t forward = 0;
  int64_t backward = 0;
  int64_t total() const { return forward + backward; }
  FlopTally& operator+=(const FlopTally& o) {
    forward += o.forward;
    backward += o.backward;
    return *this;
  }
};

class FlopCounter {
 public:
  static void add(const char* op, int64_t flops);
  static void reset();
  static std::map<std::string, FlopTally> by_component();
  // Per (component, op); the component of unscoped ops is "".
  static const std::map<std::pair<std::string, std::string>, FlopTally>& tallies();
  static FlopTally total();
  static FlopTally of(const std::string& op);

  // The component path now in force ("" outside every scope), as an id; the
  // tape stores it with each node.
  static int current_component();
  static const std::string& component_name(int id);  // its path ("" for none)

  // While alive, forward FLOPs are booked to <enclosing path>.<name>.
  class Scope {
   public:
    explicit Scope(const char* name);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    int prev_;
  };

  // While alive, FLOPs are booked as backward FLOPs of `op` in `component`
  // (used by backward()). Nested scopes keep the outermost attribution.
  class BackwardScope {
   public:
    BackwardScope(const char* op, int component);
    ~BackwardScope();

   private:
    const char* prev_op_;
    int prev_component_;
  };
};

}  // namespace tapelm
