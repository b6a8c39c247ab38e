#include "autograd/profiler.h"

#include <chrono>

namespace tapelm {

namespace {
using Clock = std::chrono::steady_clock;
bool g_on = false;
Clock::time_point g_mark;
std::map<std::string, TimeTally> g_times;
}  // namespace

void Profiler::enable(bool on) {
  g_on = on;
  g_mark = Clock::now();
}
bool Profiler::enabled() { return g_on; }
void Profiler::mark() { g_mark = Clock::now(); }

void Profiler::book_forward(const char* op) {
  if (!g_on) return;
  const auto now = Clock::now();
  TimeTally& t = g_times[op];
  t.forward_s += std::chrono::duration<double>(now - g_mark).count();
  t.forward_calls++;
  g_mark = now;
}

void Profiler::book_backward(const char* op, double seconds) {
  if (!g_on) return;
  TimeTally& t = g_times[op];
  t.backward_s += seconds;
  t.backward_calls++;
}

void Profiler::book_other(const std::string& what, double seconds) {
  if (!g_on) return;
  TimeTally& t = g_times[what];
  t.forward_s += seconds;
  t.forward_calls++;
  g_mark = Clock::now();
}

const std::map<std::string, TimeTally>& Profiler::tallies() { return g_times; }

}  // namespace tapelm
