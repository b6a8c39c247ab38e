// Products through cuBLAS, row-major on top of its column-major API: C = A·B
// row-major is Cᵀ = Bᵀ·Aᵀ column-major, so the operands swap places and keep
// their transpose flags. One handle on the one stream. fp32 products run in
// cuBLAS's pedantic math mode (no TF32, whatever NVIDIA_TF32_OVERRIDE says),
// so they are exact float32; bf16 products round each operand to bfloat16
// (a copy padded with zeros to multiples of 8 rows and columns) and
// accumulate in float32 on the tensor cores, as PyTorch's autocast does. cuBLAS gives the same bits run to run on
// the same GPU for the same shapes.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <dlfcn.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "autograd/cuda/check.cuh"
#include "autograd/cuda/column_sums.cuh"
#include "autograd/cuda/eight.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/runtime.h"
#include "autograd/cuda/unary.cuh"

namespace tapelm::cuda {

namespace {

// cuBLAS is opened on the first product, not linked: loading libcublasLt
// registers thousands of kernels (0.26 s of start-up per process, every
// process, GPU or not). The few entry points used, from the library itself.
struct Cublas {
  decltype(&cublasCreate_v2) create = nullptr;
  decltype(&cublasSetStream_v2) set_stream = nullptr;
  decltype(&cublasSetMathMode) set_math_mode = nullptr;
  decltype(&cublasSgemmStridedBatched) sgemm_strided_batched = nullptr;
  // The exported C entry (the header adds an inline overload taking a cudaDataType compute type).
  cublasStatus_t (*gemm_strided_batched_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                            const void*, const void*, cudaDataType, int, long long, const void*,
                                            cudaDataType, int, long long, const void*, void*, cudaDataType, int,
                                            long long, int, cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
  decltype(&cublasGetStatusName) status_name = nullptr;
};

// A library of the CUDA toolkit, opened by name, and its functions found by symbol.
class ToolkitLibrary {
 public:
  explicit ToolkitLibrary(const char* stem) : name_(fmt::format("{}.so.{}", stem, CUBLAS_VER_MAJOR)) {
    lib_ = dlopen(name_.c_str(), RTLD_NOW | RTLD_LOCAL);
    TAPELM_CHECK(lib_, "cuda: cannot load {} ({}): the products need it from the CUDA {} toolkit on the library path",
                 name_, dlerror(), CUBLAS_VER_MAJOR);
  }
  template <class Fn>
  void find(Fn& fn, const char* symbol) const {
    fn = reinterpret_cast<Fn>(dlsym(lib_, symbol));
    TAPELM_CHECK(fn, "cuda: {} has no {}", name_, symbol);
  }

 private:
  std::string name_;
  void* lib_;
};

const Cublas& cublas() {
  static const Cublas api = [] {
    const ToolkitLibrary lib("libcublas");
    Cublas a;
    lib.find(a.create, "cublasCreate_v2");
    lib.find(a.set_stream, "cublasSetStream_v2");
    lib.find(a.set_math_mode, "cublasSetMathMode");
    lib.find(a.sgemm_strided_batched, "cublasSgemmStridedBatched");
    lib.find(a.gemm_strided_batched_ex, "cublasGemmStridedBatchedEx");
    lib.find(a.status_name, "cublasGetStatusName");
    return a;
  }();
  return api;
}

void check(cublasStatus_t status, const char* call) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error(fmt::format("cublas: {} failed: {}", call, cublas().status_name(status)));
}

cublasHandle_t handle() {
  static cublasHandle_t h = [] {
    cublasHandle_t created;
    check(cublas().create(&created), "cublasCreate");
    check(cublas().set_stream(created, stream()), "cublasSetStream");
    check(cublas().set_math_mode(created, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
    return created;
  }();
  return h;
}

// cuBLASLt, for the one product cuBLAS cannot fuse: a linear's bias, added in
// the product's epilogue (the legacy API would need y filled with the bias
// first and read back by the product: two extra passes over y). Loaded
// beside cuBLAS, which itself depends on it.
struct CublasLt {
  decltype(&cublasLtCreate) create = nullptr;
  decltype(&cublasLtMatmulDescCreate) desc_create = nullptr;
  decltype(&cublasLtMatmulDescSetAttribute) desc_set = nullptr;
  decltype(&cublasLtMatrixLayoutCreate) layout_create = nullptr;
  decltype(&cublasLtMatmulPreferenceCreate) preference_create = nullptr;
  decltype(&cublasLtMatmulPreferenceSetAttribute) preference_set = nullptr;
  decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic = nullptr;
  decltype(&cublasLtMatmul) matmul = nullptr;
};

const CublasLt& cublas_lt() {
  static const CublasLt api = [] {
    const ToolkitLibrary lib("libcublasLt");
    CublasLt a;
    lib.find(a.create, "cublasLtCreate");
    lib.find(a.desc_create, "cublasLtMatmulDescCreate");
    lib.find(a.desc_set, "cublasLtMatmulDescSetAttribute");
    lib.find(a.layout_create, "cublasLtMatrixLayoutCreate");
    lib.find(a.preference_create, "cublasLtMatmulPreferenceCreate");
    lib.find(a.preference_set, "cublasLtMatmulPreferenceSetAttribute");
    lib.find(a.heuristic, "cublasLtMatmulAlgoGetHeuristic");
    lib.find(a.matmul, "cublasLtMatmul");
    return a;
  }();
  return api;
}

cublasLtHandle_t lt_handle() {
  static cublasLtHandle_t h = [] {
    cublasLtHandle_t created;
    check(cublas_lt().create(&created), "cublasLtCreate");
    return created;
  }();
  return h;
}

ProductPrecision g_precision = ProductPrecision::fp32;

__device__ inline float converted(float x, float) { return x; }
__device__ inline __nv_bfloat16 converted(float x, __nv_bfloat16) { return __float2bfloat16_rn(x); }

using detail::load8;
using detail::store8;

// y[b][r][c] = x[b][r][c] for b < batch, r < rows, c < cols, each side with
// its own row stride and batch stride (a row stride of 0 repeats x's first
// row: a bias broadcast), converted to Out; zero where r < out_rows and
// c < out_cols lie outside x (a padded copy). Eight consecutive elements per
// thread: two float4 loads where x's rows are 16-byte aligned (wide_in), one
// 16-byte store per eight where y's are (wide_out), element by element
// otherwise (GPT-2's 50,257-wide logits). I: the index type (32 bits where
// the count allows, whose divisions are cheaper).
template <class Out, class I>
__global__ void k_convert_rows(const float* __restrict__ x, int64_t ld_x, int64_t bs_x, int64_t rows, int64_t cols,
                               Out* __restrict__ y, int64_t ld_y, int64_t bs_y, I out_rows, int64_t out_cols, I groups,
                               I total, bool wide_in, bool wide_out, Unary activation) {
  for (I i = blockIdx.x * (I)blockDim.x + threadIdx.x; i < total; i += (I)blockDim.x * gridDim.x) {
    const I row = i / groups, b = row / out_rows, r = row % out_rows;
    const int64_t c0 = (int64_t)(i % groups) * 8;
    const float* xr = x + b * bs_x + r * ld_x + c0;
    float v[8];
    if (wide_in && r < rows && c0 + 8 <= cols) {
      load8(xr, v);
    } else {
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] = r < rows && c0 + k < cols ? xr[k] : 0.f;
    }
    if (activation != Unary::identity)  // f(0) = 0 (ProductOperand): the padding stays zero
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] = detail::unary_f(activation, v[k], 0.f);
    Out* yr = y + b * bs_y + r * ld_y + c0;
    if (wide_out && c0 + 8 <= out_cols) {
      store8(yr, v);
    } else {
#pragma unroll
      for (int k = 0; k < 8; ++k)
        if (c0 + k < out_cols) yr[k] = converted(v[k], Out{});
    }
  }
}

// Whether a matrix's first element and every row and batch entry start on 16 bytes.
bool aligned(const void* p, int64_t ld, int64_t batch_stride, int64_t element_bytes) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && (ld * element_bytes) % 16 == 0 &&
         (batch_stride * element_bytes) % 16 == 0;
}

// A matrix's rows × cols block copied (out_rows = rows, out_cols = cols) or
// padded with zeros to out_rows × out_cols.
struct RowsCopy {
  int64_t rows, cols, out_rows, out_cols, batch;
};

template <class Out>
void convert_rows(const float* x, int64_t ld_x, int64_t bs_x, Out* y, int64_t ld_y, int64_t bs_y, RowsCopy n,
                  Unary activation = Unary::identity) {
  if (n.out_rows == 0 || n.out_cols == 0 || n.batch == 0) return;
  const bool wide_in = aligned(x, ld_x, bs_x, sizeof(float)), wide_out = aligned(y, ld_y, bs_y, sizeof(Out));
  const int64_t groups = (n.out_cols + 7) / 8, total = n.batch * n.out_rows * groups;
  const unsigned blocks = (unsigned)std::min<int64_t>((total + 255) / 256, 132 * 64);  // the rest by striding
  if (total <= INT32_MAX)
    k_convert_rows<Out, uint32_t><<<blocks, 256, 0, stream()>>>(x, ld_x, bs_x, n.rows, n.cols, y, ld_y, bs_y,
                                                                (uint32_t)n.out_rows, n.out_cols, (uint32_t)groups,
                                                                (uint32_t)total, wide_in, wide_out, activation);
  else
    k_convert_rows<Out, int64_t><<<blocks, 256, 0, stream()>>>(x, ld_x, bs_x, n.rows, n.cols, y, ld_y, bs_y, n.out_rows,
                                                               n.out_cols, groups, total, wide_in, wide_out,
                                                               activation);
  TAPELM_CUDA_LAUNCHED();
}

// cuBLAS picks its fast tensor-core kernels only when rows are 16-byte
// aligned and the sizes multiples of 8: GPT-2's 50,257 classes sent its
// classifier products to kernels 3-5 times slower (measured: 29% of a step).
// So a bfloat16 copy is padded with zeros to a multiple of 8 rows and
// columns, and a product of padded copies runs at sizes rounded up to 8
// (zeros add nothing to a sum; the extra rows and columns of the result are
// dropped). round8 in kernels.h.

// A rows × cols float32 matrix (batch entries of it) rounded to a padded
// bfloat16 copy, through an activation on the way.
MatrixRef padded_bf16_copy(const float* x, int64_t ld, int64_t batch_stride, int64_t rows, int64_t cols, int64_t batch,
                           __nv_bfloat16* y, Unary activation = Unary::identity) {
  const int64_t ld_y = round8(cols), bs_y = batch_stride ? round8(rows) * ld_y : 0;
  convert_rows(x, ld, batch_stride, y, ld_y, bs_y, {rows, cols, round8(rows), ld_y, batch_stride ? batch : 1},
               activation);
  return {y, ld_y, bs_y, Element::bf16, true};
}
size_t padded_bf16_bytes(int64_t rows, int64_t cols, int64_t batch) {
  return batch * round8(rows) * round8(cols) * sizeof(__nv_bfloat16);
}

// An operand in bfloat16 for a bf16 product: as it is when it is bf16
// already, else its padded bfloat16 copy.
struct Bf16Operand {
  MatrixRef ref;
  void* owned = nullptr;
  Bf16Operand(MatrixRef a, int64_t rows, int64_t cols, int64_t batch) : ref(a) {
    if (a.element == Element::bf16) return;
    owned = allocate(padded_bf16_bytes(rows, cols, a.batch_stride ? batch : 1));
    ref = padded_bf16_copy(static_cast<const float*>(a.data), a.ld, a.batch_stride, rows, cols, batch,
                           static_cast<__nv_bfloat16*>(owned));
  }
  ~Bf16Operand() { release(owned); }  // stream-ordered: after the product that reads it
  Bf16Operand(const Bf16Operand&) = delete;
  Bf16Operand& operator=(const Bf16Operand&) = delete;
};

}  // namespace

namespace {

// The terms of a matrix's column sums that round it into its bfloat16 copy
// on the way: one read of x for both (a linear's output gradient: its bias's
// gradient and its products' operand).
struct ColumnsRounded {
  static constexpr int kSums = 1;
  const float* x;
  int64_t ld_x;
  __nv_bfloat16* y;
  int64_t ld_y;
  __device__ void operator()(int64_t r, int64_t j, float* t) const {
    const float v = x[r * ld_x + j];
    y[r * ld_y + j] = __float2bfloat16_rn(v);
    t[0] = v;
  }
};

// Σ over rows of each column, in its own pass.
void sum_columns(const float* x, int64_t rows, int64_t cols, int64_t ld, float* sums) {
  detail::column_sums(detail::MatrixColumns{x, ld}, rows, cols, {sums});
}

}  // namespace

ProductOperand::ProductOperand(const float* data, int64_t rows, int64_t cols, int64_t ld, float* column_sums,
                               Unary activation)
    : ref_{data, ld, 0, Element::f32} {
  if (activation != Unary::identity) {
    TAPELM_CHECK(!column_sums && derivative_reads_x_alone(activation),
                 "cuda ProductOperand: an activation is for a relu, gelu, gelu_tanh or silu input, without sums");
    if (rows == 0 || cols == 0) return;
    if (g_precision != ProductPrecision::bf16) {  // the activation's output in float32, held here
      rounded_ = std::shared_ptr<void>(allocate(rows * cols * sizeof(float)), [](void* p) { release(p); });
      convert_rows(data, ld, 0, static_cast<float*>(rounded_.get()), cols, 0, {rows, cols, rows, cols, 1}, activation);
      ref_ = {rounded_.get(), cols, 0, Element::f32};
      return;
    }
    rounded_ = std::shared_ptr<void>(allocate(padded_bf16_bytes(rows, cols, 1)), [](void* p) { release(p); });
    ref_ = padded_bf16_copy(data, ld, 0, rows, cols, 1, static_cast<__nv_bfloat16*>(rounded_.get()), activation);
    return;
  }
  if (g_precision != ProductPrecision::bf16 || rows == 0 || cols == 0) {
    if (column_sums) sum_columns(data, rows, cols, ld, column_sums);
    return;
  }
  rounded_ = std::shared_ptr<void>(allocate(padded_bf16_bytes(rows, cols, 1)), [](void* p) { release(p); });
  auto* y = static_cast<__nv_bfloat16*>(rounded_.get());
  if (column_sums && cols % 8 == 0) {  // no padding columns: the sums' pass writes the copy too
    detail::column_sums(ColumnsRounded{data, ld, y, cols}, rows, cols, {column_sums});
    if (round8(rows) > rows) fill_bytes(y + rows * cols, 0, (round8(rows) - rows) * cols * sizeof(__nv_bfloat16));
    ref_ = {y, cols, 0, Element::bf16, true};
    return;
  }
  ref_ = padded_bf16_copy(data, ld, 0, rows, cols, 1, y);
  if (column_sums) sum_columns(data, rows, cols, ld, column_sums);
}

void copy_rows(const float* x, int64_t ld_x, float* y, int64_t ld_y, int64_t rows, int64_t cols) {
  convert_rows(x, ld_x, 0, y, ld_y, 0, {rows, cols, rows, cols, 1});
}

void set_product_precision(ProductPrecision p) { g_precision = p; }
ProductPrecision product_precision() { return g_precision; }

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, MatrixRef A, MatrixRef B, MutableMatrixRef C,
          int64_t batch, float beta) {
  if (m == 0 || n == 0 || batch == 0) return;
  const float alpha = 1.f;
  if (k == 0) {  // an empty sum: C = beta·C
    TAPELM_CHECK(beta == 0.f || beta == 1.f, "cuda gemm: k = 0 with beta {}", beta);
    if (beta == 0.f)
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t r = 0; r < m; ++r) fill(C.data + b * C.batch_stride + r * C.ld, n, 0.f);
    return;
  }
  for (int64_t v : {m, n, k, A.ld, B.ld, C.ld, batch})
    TAPELM_CHECK(v <= INT32_MAX, "cuda gemm: a size or row stride of {} is past cuBLAS's 32-bit int", v);
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (g_precision == ProductPrecision::fp32) {
    TAPELM_CHECK(A.element == Element::f32 && B.element == Element::f32,
                 "cuda gemm: a bfloat16 operand in an fp32 product");
    check(cublas().set_math_mode(handle(), CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");
    check(cublas().sgemm_strided_batched(handle(), op_b, op_a, (int)n, (int)m, (int)k, &alpha,
                                         static_cast<const float*>(B.data), (int)B.ld, B.batch_stride,
                                         static_cast<const float*>(A.data), (int)A.ld, A.batch_stride, &beta, C.data,
                                         (int)C.ld, C.batch_stride, (int)batch),
          "cublasSgemmStridedBatched");
    return;
  }
  const Bf16Operand a(A, trans_a ? k : m, trans_a ? m : k, batch), b(B, trans_b ? n : k, trans_b ? k : n, batch);
  const bool padded = a.ref.padded && b.ref.padded;
  const int64_t mp = padded ? round8(m) : m, np = padded ? round8(n) : n, kp = padded ? round8(k) : k;
  // A result of other sizes than the product's, or unaligned, is made in a
  // buffer and copied out: two passes over it cost less than the slow kernel.
  MutableMatrixRef out = C;
  const bool staged = mp != m || np != n || !aligned(C.data, C.ld, C.batch_stride, sizeof(float));
  const int64_t entries = C.batch_stride ? batch : 1;
  if (staged) {
    const int64_t ld = round8(np);
    out = {static_cast<float*>(allocate(entries * mp * ld * sizeof(float))), ld, C.batch_stride ? mp * ld : 0};
    if (beta != 0.f)
      convert_rows(C.data, C.ld, C.batch_stride, out.data, out.ld, out.batch_stride, {m, n, mp, np, entries});
  }
  for (int64_t v : {mp, np, kp, out.ld}) TAPELM_CHECK(v <= INT32_MAX, "cuda gemm: a size of {} past 32 bits", v);
  check(cublas().set_math_mode(handle(), CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  check(cublas().gemm_strided_batched_ex(handle(), op_b, op_a, (int)np, (int)mp, (int)kp, &alpha, b.ref.data,
                                         CUDA_R_16BF, (int)b.ref.ld, b.ref.batch_stride, a.ref.data, CUDA_R_16BF,
                                         (int)a.ref.ld, a.ref.batch_stride, &beta, out.data, CUDA_R_32F, (int)out.ld,
                                         out.batch_stride, (int)batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmStridedBatchedEx");
  if (staged) {
    convert_rows(out.data, out.ld, out.batch_stride, C.data, C.ld, C.batch_stride, {m, n, m, n, entries});
    release(out.data);
  }
}

void gemm_bf16_result(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, MatrixRef A, MatrixRef B, void* C,
                      int64_t ldc) {
  TAPELM_CHECK(g_precision == ProductPrecision::bf16 && A.element == Element::bf16 && B.element == Element::bf16 &&
                   A.padded && B.padded,
               "cuda gemm_bf16_result: needs bf16 precision and padded bfloat16 operands");
  const int64_t mp = round8(m), np = round8(n), kp = round8(k);
  TAPELM_CHECK(ldc >= np, "cuda gemm_bf16_result: row stride {} under the padded width {}", ldc, np);
  if (mp == 0 || np == 0) return;
  if (kp == 0) return fill_bytes(C, 0, mp * ldc * sizeof(__nv_bfloat16));  // an empty sum
  for (int64_t v : {mp, np, kp, ldc, A.ld, B.ld})
    TAPELM_CHECK(v <= INT32_MAX, "cuda gemm_bf16_result: a size or row stride of {} past 32 bits", v);
  const float alpha = 1.f, beta = 0.f;
  check(cublas().set_math_mode(handle(), CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  check(cublas().gemm_strided_batched_ex(handle(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                         trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, (int)np, (int)mp, (int)kp, &alpha, B.data,
                                         CUDA_R_16BF, (int)B.ld, 0, A.data, CUDA_R_16BF, (int)A.ld, 0, &beta, C,
                                         CUDA_R_16BF, (int)ldc, 0, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmStridedBatchedEx");
}

namespace {

// One shape's cuBLASLt plan for y = x·Wᵀ + bias: its descriptors and the
// algorithm the heuristic chose, made at the shape's first product and kept,
// so every later product of that shape runs the same algorithm (the same
// bits) and pays no heuristic query.
struct BiasPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t w = nullptr, x = nullptr, y = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool usable = false;  // false: cuBLASLt offered no algorithm; the caller adds the bias itself
};

constexpr size_t kLtWorkspace = 32 << 20;  // cuBLASLt's scratch, as PyTorch gives it on Hopper

// The plan for rows × out × in with these row strides (column-major to
// cuBLASLt, as in gemm(): y's transpose = W · xᵀ, so W is its "A" transposed).
const BiasPlan& bias_plan(int64_t rows, int64_t out, int64_t in, int64_t ld_x, int64_t ld_w, int64_t ld_y,
                          const float* bias) {
  static std::map<std::array<int64_t, 6>, BiasPlan> plans;
  const std::array<int64_t, 6> key{rows, out, in, ld_x, ld_w, ld_y};
  auto found = plans.find(key);
  if (found != plans.end()) return found->second;
  const CublasLt& lt = cublas_lt();
  BiasPlan p;
  auto ok = [](cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS; };
  const int32_t trans = CUBLAS_OP_T, no_trans = CUBLAS_OP_N;
  const uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
  cublasLtMatmulPreference_t preference = nullptr;
  const uint64_t workspace = kLtWorkspace;
  cublasLtMatmulHeuristicResult_t result{};
  int found_algos = 0;
  p.usable =
      ok(lt.desc_create(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F)) &&
      ok(lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof trans)) &&
      ok(lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &no_trans, sizeof no_trans)) &&
      ok(lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue)) &&
      ok(lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias)) &&
      ok(lt.layout_create(&p.w, CUDA_R_16BF, in, out, ld_w)) &&
      ok(lt.layout_create(&p.x, CUDA_R_16BF, in, rows, ld_x)) &&
      ok(lt.layout_create(&p.y, CUDA_R_32F, out, rows, ld_y)) && ok(lt.preference_create(&preference)) &&
      ok(lt.preference_set(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof workspace)) &&
      ok(lt.heuristic(lt_handle(), p.desc, p.w, p.x, p.y, p.y, preference, 1, &result, &found_algos)) &&
      found_algos > 0;
  if (p.usable) p.algo = result.algo;
  return plans.emplace(key, p).first->second;
}

}  // namespace

void linear_forward(int64_t rows, int64_t out, int64_t in, MatrixRef x, MatrixRef w, const float* bias, float* y) {
  const MutableMatrixRef result{y, out, 0};
  if (!bias) return gemm(false, true, rows, out, in, x, w, result, 1, 0.f);
  // The epilogue's way: bf16 padded operands, sizes and y's rows already multiples of 8, everything 16-byte aligned.
  const bool epilogue = g_precision == ProductPrecision::bf16 && x.padded && w.padded && rows % 8 == 0 &&
                        out % 8 == 0 && in % 8 == 0 && aligned(y, out, 0, sizeof(float)) &&
                        aligned(bias, 0, 0, sizeof(float)) && rows <= INT32_MAX;
  if (epilogue) {
    const BiasPlan& p = bias_plan(rows, out, in, x.ld, w.ld, out, bias);
    if (p.usable) {
      static void* workspace = allocate(kLtWorkspace);  // held for the process, like cuBLAS's own
      const CublasLt& lt = cublas_lt();
      const float alpha = 1.f, beta = 0.f;
      check(lt.desc_set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias),
            "cublasLtMatmulDescSetAttribute");
      check(lt.matmul(lt_handle(), p.desc, &alpha, w.data, p.w, x.data, p.x, &beta, y, p.y, y, p.y, &p.algo, workspace,
                      kLtWorkspace, stream()),
            "cublasLtMatmul");
      return;
    }
  }
  copy_rows(bias, 0, y, out, rows, out);  // y starts as the bias in every row, and the product adds onto it
  gemm(false, true, rows, out, in, x, w, result, 1, 1.f);
}

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* A, int64_t stride_a, const float* B,
          int64_t stride_b, float* C, int64_t stride_c, int64_t batch, float beta) {
  gemm(trans_a, trans_b, m, n, k, MatrixRef{A, trans_a ? m : k, stride_a}, MatrixRef{B, trans_b ? k : n, stride_b},
       MutableMatrixRef{C, n, stride_c}, batch, beta);
}

namespace {
// Uniform numbers in [−1, 1) from a hash of the index: products are never
// timed on zeros (whose multiplies the hardware can shortcut).
__global__ void k_fill_hash(float* x, int64_t n, uint32_t seed) {
  const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint32_t h = (uint32_t)i * 2654435761u ^ seed;
  h ^= h >> 16, h *= 0x7feb352du, h ^= h >> 15, h *= 0x846ca68bu, h ^= h >> 16;
  x[i] = (float)(h >> 8) * (2.f / 16777216.f) - 1.f;
}
}  // namespace

double measure_product_peak(int64_t n, int repeats) {
  float* m[3];
  for (int i = 0; i < 3; ++i) {
    m[i] = static_cast<float*>(allocate(n * n * sizeof(float)));
    k_fill_hash<<<(unsigned)((n * n + 255) / 256), 256, 0, stream()>>>(m[i], n * n, 17u * (i + 1));
    TAPELM_CUDA_LAUNCHED();
  }
  cudaEvent_t start, stop;
  TAPELM_CUDA(cudaEventCreate(&start));
  TAPELM_CUDA(cudaEventCreate(&stop));
  float best = 1e30f;
  for (int r = 0; r <= repeats; ++r) {
    TAPELM_CUDA(cudaEventRecord(start, stream()));
    gemm(false, false, n, n, n, m[0], 0, m[1], 0, m[2], 0, 1, 0.f);
    TAPELM_CUDA(cudaEventRecord(stop, stream()));
    TAPELM_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    TAPELM_CUDA(cudaEventElapsedTime(&ms, start, stop));
    if (r > 0) best = std::min(best, ms);  // r = 0 warms up (cuBLAS's first call picks its kernel)
  }
  TAPELM_CUDA(cudaEventDestroy(start));
  TAPELM_CUDA(cudaEventDestroy(stop));
  for (float* p : m) release(p);
  return 2.0 * n * n * n / (best * 1e-3);
}

}  // namespace tapelm::cuda
