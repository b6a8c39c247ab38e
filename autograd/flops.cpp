#include "autograd/flops.h"

#include <cstring>
#include <vector>

namespace tapelm {

namespace {
std::map<std::pair<std::string, std::string>, FlopTally> g_tallies;
const char* g_backward_op = nullptr;  // non-null while a node's backward runs
int g_component = 0;                  // index into the interned paths; 0 = ""

// Component paths are interned once, so nodes carry a small integer.
std::vector<std::string>& paths() {
  static std::vector<std::string> p{""};
  return p;
}
int intern(const std::string& path) {
  static std::map<std::string, int> ids{{"", 0}};
  auto [it, added] = ids.emplace(path, (int)paths().size());
  if (added) paths().push_back(path);
  return it->second;
}
}  // namespace

void FlopCounter::add(const char* op, int64_t flops) {
  // A fused op may split its count into named parts ("attention.softmax");
  // inside its own backward those parts keep their names.
  const size_t n = g_backward_op ? std::strlen(g_backward_op) : 0;
  if (g_backward_op && std::strncmp(op, g_backward_op, n) == 0 && op[n] == '.') {
    g_tallies[{paths()[g_component], op}].backward += flops;
  } else if (g_backward_op) {
    g_tallies[{paths()[g_component], g_backward_op}].backward += flops;
  } else {
    g_tallies[{paths()[g_component], op}].forward += flops;
  }
}

void FlopCounter::reset() { g_tallies.clear(); }

const std::map<std::pair<std::string, std::string>, FlopTally>& FlopCounter::tallies() { return g_tallies; }

std::map<std::string, FlopTally> FlopCounter::by_component() {
  std::map<std::string, FlopTally> m;
  for (auto& [key, v] : g_tallies) m[key.first] += v;
  return m;
}

FlopTally FlopCounter::total() {
  FlopTally t;
  for (auto& [key, v] : g_tallies) t += v;
  return t;
}

FlopTally FlopCounter::of(const std::string& op) {
  FlopTally t;
  for (auto& [key, v] : g_tallies)
    if (key.second == op) t += v;
  return t;
}

int FlopCounter::current_component() { return g_component; }
const std::string& FlopCounter::component_name(int id) { return paths().at(id); }

FlopCounter::Scope::Scope(const char* name) : prev_(g_component) {
  const std::string& parent = paths()[g_component];
  g_component = intern(parent.empty() ? std::string(name) : parent + "." + name);
}
FlopCounter::Scope::~Scope() { g_component = prev_; }

FlopCounter::BackwardScope::BackwardScope(const char* op, int component)
    : prev_op_(g_backward_op), prev_component_(g_component) {
  if (!g_backward_op) {
    g_backward_op = op;
    g_component = component;
  }
}
FlopCounter::BackwardScope::~BackwardScope() {
  g_backward_op = prev_op_;
  g_component = prev_component_;
}

}  // namespace tapelm
