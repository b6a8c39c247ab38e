#include "autograd/profiler.h"

#include <memory>
#include <vector>

#include "autograd/cuda/runtime.h"
#include "autograd/flops.h"

namespace tapelm {

namespace {
using Clock = std::chrono::steady_clock;

// A booking whose GPU time is known only once the stream has passed its
// closing event.
struct Pending {
  std::string what;
  bool backward;
  int64_t from, to;
};

struct State {
  bool on = false;
  Device clock = Device::cpu;
  Clock::time_point mark;
  int64_t mark_event = -1;
  std::map<std::string, TimeTally> times;
  std::unique_ptr<cuda::EventTrail> trail;  // made on the first GPU-clock enable
  std::vector<Pending> pending;
};
State g;

double seconds_since(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration<double>(t1 - t0).count();
}

std::string key(const char* op, int component) {
  const std::string& path = FlopCounter::component_name(component);
  return path.empty() ? std::string(op) : std::string(op) + " (" + path + ")";
}

int64_t record_event() { return g.clock == Device::cuda ? g.trail->record() : -1; }

void book(const std::string& what, bool backward, const Profiler::Span& since, Clock::time_point now,
          int64_t now_event) {
  TimeTally& t = g.times[what];
  const double host = seconds_since(since.host, now);
  t.host_s += host;
  (backward ? t.backward_calls : t.forward_calls)++;
  if (g.clock == Device::cuda)
    g.pending.push_back({what, backward, since.event, now_event});
  else
    (backward ? t.backward_s : t.forward_s) += host;
}
}  // namespace

void Profiler::enable(bool on, Device clock) {
  g.on = on;
  g.clock = clock;
  if (on && clock == Device::cuda && !g.trail) g.trail = std::make_unique<cuda::EventTrail>();
  if (on) mark();
}
bool Profiler::enabled() { return g.on; }
Device Profiler::clock() { return g.clock; }

void Profiler::mark() {
  if (!g.on) return;
  g.mark = Clock::now();
  g.mark_event = record_event();
}

void Profiler::book_forward(const char* op, int component) {
  if (!g.on) return;
  const auto now = Clock::now();
  const int64_t event = record_event();
  book(key(op, component), false, Span{g.mark, g.mark_event}, now, event);
  g.mark = now;
  g.mark_event = event;
}

Profiler::Span Profiler::begin() {
  if (!g.on) return {};
  return Span{Clock::now(), record_event()};
}

void Profiler::book_backward(const char* op, int component, const Span& since) {
  if (!g.on) return;
  book(key(op, component), true, since, Clock::now(), record_event());
}

void Profiler::book_other(const std::string& what, const Span& since) {
  if (!g.on) return;
  book(what, false, since, Clock::now(), record_event());
  mark();
}

void Profiler::settle() {
  if (g.pending.empty()) return;
  g.trail->synchronize();
  for (const Pending& p : g.pending) {
    TimeTally& t = g.times[p.what];
    (p.backward ? t.backward_s : t.forward_s) += g.trail->seconds(p.from, p.to);
  }
  g.pending.clear();
  // Events still needed: the open mark's. Re-record it so the trail restarts.
  g.trail->clear();
  g.mark_event = g.on && g.clock == Device::cuda ? g.trail->record() : -1;
}

const std::map<std::string, TimeTally>& Profiler::tallies() {
  settle();
  return g.times;
}

void Profiler::reset() {
  settle();
  g.times.clear();
}

}  // namespace tapelm
