#include "autograd/flops.h"

namespace tapelm {

namespace {
std::map<std::string, FlopTally> g_tallies;
const char* g_backward_op = nullptr;  // non-null while a node's backward runs
}  // namespace

void FlopCounter::add(const char* op, int64_t flops) {
  if (g_backward_op) {
    g_tallies[g_backward_op].backward += flops;
  } else {
    g_tallies[op].forward += flops;
  }
}

void FlopCounter::reset() { g_tallies.clear(); }

const std::map<std::string, FlopTally>& FlopCounter::tallies() { return g_tallies; }

FlopTally FlopCounter::total() {
  FlopTally t;
  for (auto& [name, v] : g_tallies) {
    t.forward += v.forward;
    t.backward += v.backward;
  }
  return t;
}

FlopTally FlopCounter::of(const std::string& op) {
  auto it = g_tallies.find(op);
  return it == g_tallies.end() ? FlopTally{} : it->second;
}

FlopCounter::BackwardScope::BackwardScope(const char* op) : prev_(g_backward_op) {
  // Nested scopes keep the outermost attribution.
  if (!g_backward_op) g_backward_op = op;
}
FlopCounter::BackwardScope::~BackwardScope() { g_backward_op = prev_; }

}  // namespace tapelm
