// FMA throughput per thread when threads are pinned to given CPU sets:
// tells whether two vCPUs share a physical core (each then runs at ~half).
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
static double run(int cpu) {
  cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s);
  pthread_setaffinity_np(pthread_self(), sizeof(s), &s);
  __m512 a[12]; for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(1.0f + i * 1e-7f);
  const __m512 x = _mm512_set1_ps(0.9999999f), y = _mm512_set1_ps(1e-8f);
  const long iters = 60000000;
  auto t0 = std::chrono::steady_clock::now();
  for (long it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], x, y);
  double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  float sink = 0; for (int i = 0; i < 12; ++i) sink += _mm512_reduce_add_ps(a[i]);
  if (sink == 12345.f) std::puts("");
  return iters * 12.0 * 32 / dt / 1e9;
}
int main(int argc, char** argv) {
  for (int a = 1; a < argc; ++a) {  // each arg: comma-separated CPU list
    std::vector<int> cpus; std::stringstream ss(argv[a]); std::string t;
    while (std::getline(ss, t, ',')) cpus.push_back(std::atoi(t.c_str()));
    std::vector<double> g(cpus.size()); std::vector<std::thread> th;
    for (size_t i = 0; i < cpus.size(); ++i) th.emplace_back([&, i] { g[i] = run(cpus[i]); });
    for (auto& x : th) x.join();
    double sum = 0; std::printf("cpus %-40s", argv[a]);
    for (double v : g) { std::printf(" %5.0f", v); sum += v; }
    std::printf("  | sum %6.0f GFLOP/s\n", sum);
  }
}
