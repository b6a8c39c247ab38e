// tapelm_gemm_bench: GFLOP/s of the training step's matrix products, tapelm's
// gemm (a tile grid of single-threaded Eigen kernels, autograd/gemm.h) beside
// Eigen's own threaded product, at the given thread counts.
//
//   build/tapelm_gemm_bench --threads 1,4,16
//
// Shapes are a Linear layer's three products at the small, mid and GPT-2
// small configs: forward Y = X·Wᵀ, dX = G·W and dW = Gᵀ·X, with rows = B·T.
// Each cell is the best of --repeats runs after one warm-up run. With --cold,
// each run starts after a 256 MB sweep has pushed the operands out of every
// cache, as a training step's products usually find them.
// Built with -DTAPELM_BENCH_DNNL and linked with -ldnnl it adds oneDNN's sgemm
// (Debian's libdnnl-dev) as a third column (measured once; not a dependency).
#include <omp.h>

#include <fmt/core.h>
#include <CLI/CLI.hpp>
#include <Eigen/Core>
#include <chrono>
#include <functional>
#include <vector>

#include "autograd/gemm.h"
#ifdef TAPELM_BENCH_DNNL
#include <dnnl.h>
#endif

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct Shape {
  std::string name;
  int64_t m, n, k;
  bool ta, tb;
};

// Writes through a buffer larger than the caches (when cold), so that the
// next product reads its operands from memory.
void evict_caches(bool cold) {
  if (!cold) return;
  static std::vector<char> sweep(size_t(256) << 20);
  for (size_t i = 0; i < sweep.size(); i += 64) sweep[i] = char(sweep[i] + 1);
}

double best_seconds(const std::function<void()>& f, int repeats, bool cold) {
  f();
  double best = 1e30;
  for (int i = 0; i < repeats; ++i) {
    evict_caches(cold);
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tapelm_gemm_bench: GEMM GFLOP/s of the training step's shapes"};
  std::vector<int> thread_counts{1, static_cast<int>(omp_get_num_procs())};
  int repeats = 5;
  bool cold = false;
  app.add_option("--threads", thread_counts, "Thread counts")->delimiter(',');
  app.add_option("--repeats", repeats, "Timed runs per cell (the best is kept)")->capture_default_str();
  app.add_flag("--cold", cold, "Evict the caches before each timed run");
  CLI11_PARSE(app, argc, argv);

  std::vector<Shape> shapes;
  struct Config {
    std::string name;
    int64_t rows, d, vocab;
  };
  for (const Config& c :
       {Config{"small", 768, 128, 65}, Config{"mid", 2048, 384, 65}, Config{"gpt2", 1024, 768, 50257}}) {
    const int64_t d = c.d;
    shapes.push_back({c.name + " qkv fwd", c.rows, 3 * d, d, false, true});
    shapes.push_back({c.name + " fc2 fwd", c.rows, d, 4 * d, false, true});
    shapes.push_back({c.name + " fc dX", c.rows, d, 4 * d, false, false});
    shapes.push_back({c.name + " fc dW", 4 * d, d, c.rows, true, false});
    if (c.vocab > 1000) {
      shapes.push_back({c.name + " head fwd", c.rows, c.vocab, d, false, true});
      shapes.push_back({c.name + " head dW", c.vocab, d, c.rows, true, false});
    }
  }
  fmt::print("{:<16} {:>6} {:>6} {:>6} {:>3} {:>7} {:>10} {:>10}", "shape", "m", "n", "k", "op", "threads", "eigen",
             "tapelm");
#ifdef TAPELM_BENCH_DNNL
  fmt::print(" {:>10}", "onednn");
#endif
  fmt::print("   (GFLOP/s, best of {})\n", repeats);
  for (const Shape& s : shapes) {
    RowMat a = RowMat::Random(s.ta ? s.k : s.m, s.ta ? s.m : s.k);
    RowMat b = RowMat::Random(s.tb ? s.n : s.k, s.tb ? s.k : s.n);
    RowMat c(s.m, s.n);
    const double flop = 2.0 * s.m * s.n * s.k;
    for (int t : thread_counts) {
      omp_set_num_threads(t);
      Eigen::setNbThreads(t);
      auto eigen = [&] {
        if (!s.ta && !s.tb)
          c.noalias() = a * b;
        else if (s.ta && !s.tb)
          c.noalias() = a.transpose() * b;
        else if (!s.ta && s.tb)
          c.noalias() = a * b.transpose();
        else
          c.noalias() = a.transpose() * b.transpose();
      };
      auto ours = [&] { tapelm::gemm(a.data(), s.ta, b.data(), s.tb, c.data(), s.m, s.n, s.k); };
      const tapelm::GemmGrid g = tapelm::gemm_grid(s.m, s.n, s.k, t);
      fmt::print("{:<16} {:>6} {:>6} {:>6} {:>3} {:>7} {:>10.0f} {:>10.0f}", s.name, s.m, s.n, s.k,
                 std::string(s.ta ? "T" : "N") + (s.tb ? "T" : "N"), t, flop / best_seconds(eigen, repeats, cold) / 1e9,
                 flop / best_seconds(ours, repeats, cold) / 1e9);
#ifdef TAPELM_BENCH_DNNL
      auto dnnl = [&] {
        dnnl_sgemm(s.ta ? 'T' : 'N', s.tb ? 'T' : 'N', s.m, s.n, s.k, 1.f, a.data(), s.ta ? s.m : s.k, b.data(),
                   s.tb ? s.k : s.n, 0.f, c.data(), s.n);
      };
      fmt::print(" {:>10.0f}", flop / best_seconds(dnnl, repeats, cold) / 1e9);
#endif
      fmt::print("   grid {}x{}\n", g.rows, g.cols);
    }
  }
  return 0;
}
