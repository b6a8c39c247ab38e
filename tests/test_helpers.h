// Shared helpers for the tests.
#pragma once
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "autograd/autograd.h"

namespace tapelm::testing {

// Runs the enclosing scope with `threads` OpenMP threads, then restores the count.
struct ThreadCount {
  int saved;
  explicit ThreadCount(int threads) : saved(omp_get_max_threads()) { omp_set_num_threads(threads); }
  ~ThreadCount() { omp_set_num_threads(saved); }
};

// The largest |a − b| over the elements (same numel).
inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::fabs(a.flat(i) - b.flat(i)));
  return m;
}

// Same shape, dtype and bytes (bit-identical values).
inline bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.numel() * dtype_size(a.dtype())) == 0;
}

// A float64 tensor of N(0,1) values from a fixed seed, marked requires_grad.
inline Tensor param(const Shape& shape, uint64_t seed, double scale = 1.0) {
  Generator g(seed);
  Tensor t = randn(shape, g, DType::f64, 0.0, scale);
  t.requires_grad_();
  return t;
}

// Values kept away from 0 (for log, sqrt, div, relu kinks): |x| in [0.5, 1.5].
inline Tensor positive_param(const Shape& shape, uint64_t seed) {
  Generator g(seed);
  Tensor t = uniform(shape, g, 0.5, 1.5, DType::f64);
  t.requires_grad_();
  return t;
}

inline void expect_gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs,
                             const GradcheckOptions& opt = {}) {
  GradcheckResult r = gradcheck(f, inputs, opt);
  EXPECT_TRUE(r.ok) << r.report;
}

// Expects `stmt` to throw tapelm::Error whose message contains `needle`.
#define EXPECT_ERROR_CONTAINS(stmt, needle)                                         \
  do {                                                                              \
    try {                                                                           \
      stmt;                                                                         \
      ADD_FAILURE() << "expected tapelm::Error containing: " << (needle);           \
    } catch (const ::tapelm::Error& e) {                                            \
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what(); \
    }                                                                               \
  } while (0)

}  // namespace tapelm::testing
