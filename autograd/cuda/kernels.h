// The CUDA kernels the ops call, as plain C++ declarations: raw device
// pointers and sizes, float32 elements. Implemented in autograd/cuda/*.cu;
// without CUDA, no_cuda.cpp implements each by throwing (no op can reach one
// then, since no cuda tensor can exist). Every kernel runs on the one stream
// (runtime.h) and is deterministic: no float atomics, reductions in a fixed
// order, products through cuBLAS with one fixed algorithm.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

namespace tapelm::cuda {

constexpr int kMaxDims = 8;

// A view of up to kMaxDims dimensions: sizes and element strides.
struct Strided {
  int ndim = 0;
  int64_t size[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};
};

void fill(float* p, int64_t n, float value);

// ---- elementwise (ops/unary.cpp, scalar.cpp, binary.cpp) -----------------
enum class Unary { neg, exp, log, sqrt, tanh, sigmoid, relu, gelu, gelu_tanh, silu, softplus, elu, square, identity };
// The functions whose derivative reads x alone, not their output: unary_backward takes y = null for them.
inline bool derivative_reads_x_alone(Unary op) {
  return op == Unary::relu || op == Unary::gelu || op == Unary::gelu_tanh || op == Unary::silu || op == Unary::identity;
}
void unary_forward(Unary op, const float* x, float* y, int64_t n, float alpha);
void unary_backward(Unary op, const float* x, const float* y, const float* dy, float* dx, int64_t n, float alpha);

enum class ScalarOp { add, mul, rsub, rdiv, pow };
void scalar_map(ScalarOp op, const float* x, float* y, int64_t n, float s);

enum class Binary { add, sub, mul, div };
// out (contiguous, shape `a.size`) = a ∘ b, a and b read through their
// strides (0 on a broadcast dimension).
void binary(Binary op, const float* a, const Strided& as, const float* b, const Strided& bs, float* out);

// dst (strided) = src (strided), same sizes: permute, slice, concat, expand.
void copy_strided(const float* src, const Strided& s, float* dst, const Strided& d);
void copy_strided_bytes(const uint8_t* src, const Strided& s, uint8_t* dst, const Strided& d);

// out (contiguous, shape ms.size) = mask ? value : a; the mask read through
// its strides ms (0 where it broadcasts).
void masked_fill(const float* a, const uint8_t* mask, const Strided& ms, float* out, float value);

// Inverted dropout: scale_mask[i] = 0 with probability p, else keep_scale;
// y = x ⊙ scale_mask. The mask is a function of (seed, i) only.
void dropout(const float* x, float* y, float* scale_mask, int64_t n, float p, float keep_scale, uint64_t seed);

// dst += src, n elements.
void add_inplace(float* dst, const float* src, int64_t n);

// out[o] = Σ over the reduced index r of x at o·(kept strides) + r·(reduced
// strides), r in row-major order: each output element by one thread, in a
// fixed order. `kept` and `reduced` describe x's dimensions split in two.
void reduce_sum(const float* x, const Strided& kept, const Strided& reduced, float* out, float scale);

// y = the cumulative sum of x viewed as [outer, n, inner] along n (from the
// end when `reverse`: the backward's), each line added in order.
void cumsum(const float* x, float* y, int64_t outer, int64_t n, int64_t inner, bool reverse);

// ---- products (gemm.cu, cuBLAS) --------------------------------------------
// The operands' precision, for every product until changed: fp32 (exact
// float32, no TF32) or bf16 (as PyTorch's autocast: the operands rounded to
// bfloat16 on their way in, products accumulated and written in float32).
enum class ProductPrecision { fp32, bf16 };
void set_product_precision(ProductPrecision p);
ProductPrecision product_precision();

// An operand's elements: float32, or bfloat16 already (stored as uint16_t
// bit patterns: attention's probabilities in bf16 mode, made so by the
// kernel that computes them). A bf16 operand needs the bf16 precision.
enum class Element { f32, bf16 };
// One operand of a batched product: its first element, its row stride
// (leading dimension) and the stride between batch entries (0: the same
// matrix for every entry), in elements.
struct MatrixRef {
  const void* data;
  int64_t ld, batch_stride;
  Element element = Element::f32;
  // Rows and columns held, zero, up to multiples of 8 (a padded bf16 copy:
  // a product of two such runs at sizes rounded up to 8, see gemm.cu).
  bool padded = false;
};
struct MutableMatrixRef {
  float* data;
  int64_t ld, batch_stride;
};
// C[b] = op(A[b]) · op(B[b]) for b < batch, row-major: A is m×k (k×m when
// trans_a), B is k×n (n×k when trans_b), C m×n. beta = 1 adds into C.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, MatrixRef A, MatrixRef B, MutableMatrixRef C,
          int64_t batch, float beta);
// bf16 copies are padded to multiples of 8 rows and columns (see gemm.cu).
inline int64_t round8(int64_t v) { return (v + 7) / 8 * 8; }
// C (bfloat16, row stride ldc ≥ round8(n)) = op(A)·op(B) for two padded
// bfloat16 operands, accumulated in float32, at the sizes rounded up to 8:
// all round8(m) × round8(n) entries are written (zeros past m and n, the
// operands' padding). For a result only bf16 kernels and products read: the
// classifier's logits (linear_cross_entropy).
void gemm_bf16_result(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, MatrixRef A, MatrixRef B, void* C,
                      int64_t ldc);
// A float32 matrix (rows × cols, row stride ld) as products read it: in
// bf16 precision a bfloat16 copy made once, padded with zeros to multiples
// of 8 rows and columns (cuBLAS's fast kernels need 16-byte aligned rows and
// sizes that are multiples of 8), shared by every product that reads it (a linear's input by its
// forward and its weight gradient) and held while any copy of this object
// lives; in fp32 precision the matrix itself, held by its tensor. With
// column_sums (cols floats), the matrix's column sums too, from the pass that
// rounds it where it can (no padding columns): a linear's bias gradient.
// With an activation (one whose value at 0 is 0: relu, gelu, gelu_tanh,
// silu), the operand is activation(matrix), applied by the pass that makes
// the copy (a float32 copy in fp32 precision): a linear that reads its input
// through its activation never stores the activation's output in float32.
class ProductOperand {
 public:
  ProductOperand() = default;
  ProductOperand(const float* data, int64_t rows, int64_t cols, int64_t ld, float* column_sums = nullptr,
                 Unary activation = Unary::identity);
  MatrixRef ref() const { return ref_; }  // batch stride 0

 private:
  MatrixRef ref_{nullptr, 0, 0};
  std::shared_ptr<void> rounded_;  // bfloat16 elements, in bf16 precision only
};
// y [rows, out] = x·Wᵀ + bias (bias may be null), x rows × in and W out × in
// as ProductOperand gives them. In bf16 precision with padded operands the
// bias is added in cuBLASLt's epilogue; otherwise y starts as the bias in
// every row and the product adds onto it (as on the CPU).
void linear_forward(int64_t rows, int64_t out, int64_t in, MatrixRef x, MatrixRef w, const float* bias, float* y);
// y's rows = x's rows (rows × cols, each with its row stride; ld_x = 0
// repeats x's first row, a bias broadcast).
void copy_rows(const float* x, int64_t ld_x, float* y, int64_t ld_y, int64_t rows, int64_t cols);
// The same for densely packed matrices (each row stride its row's width).
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* A, int64_t stride_a, const float* B,
          int64_t stride_b, float* C, int64_t stride_c, int64_t batch, float beta);

// The GPU's practical product peak in FLOP/s at the current precision: the
// fastest of `repeats` n×n×n products (after one warm-up) on random operands,
// timed with CUDA events. MFU on the GPU is achieved FLOP/s over this.
double measure_product_peak(int64_t n, int repeats);

// ---- rows (nn.cu) -----------------------------------------------------------
// Per row of `cols`: LayerNorm (center: μ = mean) or RMSNorm (μ = 0),
// y = (x − μ)·r·w + b with r = 1/√(mean((x − μ)²) + eps); b may be null;
// μ and r saved per row.
void norm_forward(bool center, const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                  int64_t rows, int64_t cols, float eps);
// dx per row; dw and db (db may be null) summed over the rows in row order.
void norm_backward(bool center, const float* x, const float* w, const float* mean, const float* rstd, const float* dy,
                   float* dx, float* dw, float* db, int64_t rows, int64_t cols);
void softmax_forward(const float* x, float* y, int64_t rows, int64_t cols, bool log);
void softmax_backward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols, bool log);
// Attention's softmax over scores [batch, heads, tq, tk]: each row scaled,
// masked entries (mask [batch, tq, tk], true = hidden, shared by the heads;
// null = none) set to −∞, then softmax; a row with every key masked gives
// zeros. P goes to `probs`: float32 (may be `scores`: in place) or bfloat16.
void masked_softmax(const float* scores, const uint8_t* mask, void* probs, Element probs_element, int64_t batch,
                    int64_t heads, int64_t tq, int64_t tk, float scale);
// Its backward: dS = scale·P ⊙ (dP − rowsum(dP ⊙ P)) per row, P as the
// forward wrote it, dS to float32 (may be dP: in place) or bfloat16.
void masked_softmax_backward(const void* probs, Element probs_element, const float* dp, void* ds, Element ds_element,
                             int64_t rows, int64_t cols, float scale);
// Fused attention for bf16 mode (flash_attention.cu, FlashAttention-2):
// q [batch, tq, heads, head_dim], k and v [batch, tk, heads, head_dim],
// float32, each token's row row_stride elements after the previous one (0:
// heads·head_dim, contiguous; 3·heads·head_dim reads q, k and v in place
// from one packed projection); dq, dk and dv are written with the same
// layout. The kernels read bfloat16 copies (flash_attention_round_operands):
// head-major [batch, heads, t rounded up to 64, head_dim], the rows past t
// zero, so every 64-row tile is one contiguous block copied to shared memory
// asynchronously, without bounds checks. mask [batch, tq, tk] (true = hidden)
// or null. The forward writes out [batch, tq, heads, head_dim] and each row's
// log-sum-exp [batch, heads, tq rounded up to 64] (+∞ past tq). The tile map
// (uint8, tile_map_size entries, from flash_attention_tile_map) classes each
// 64×64 tile of every batch row as hidden, visible or mixed, so hidden tiles
// are skipped and only mixed ones read the mask. Every row start must be
// 16-byte aligned.
struct FlashAttentionShape {
  int64_t batch, tq, tk, heads, head_dim;
  float scale;
  int64_t row_stride = 0;
};
bool flash_attention_supported(int64_t head_dim);  // 32, 64, 128
int64_t flash_attention_padded(int64_t t);         // t rounded up to the 64-row tile
int64_t flash_attention_tile_map_size(const FlashAttentionShape& s);
void flash_attention_tile_map(const uint8_t* mask, const FlashAttentionShape& s, uint8_t* map);
// q16 holds batch·heads·padded(tq)·head_dim bfloat16 values, k16 and v16 batch·heads·padded(tk)·head_dim.
void flash_attention_round_operands(const float* q, const float* k, const float* v, const FlashAttentionShape& s,
                                    void* q16, void* k16, void* v16);
void flash_attention_forward(const void* q16, const void* k16, const void* v16, const uint8_t* mask, const uint8_t* map,
                             const FlashAttentionShape& s, float* out, float* lse);
void flash_attention_backward(const void* q16, const void* k16, const void* v16, const float* out, const float* dout,
                              const float* lse, const uint8_t* mask, const uint8_t* map, const FlashAttentionShape& s,
                              float* dq, float* dk, float* dv);

// The depthwise causal convolution (ops/conv1d.cpp): x and y [batch, t,
// channels], w [channels, k], bias [channels] or null; the backward writes
// dx, dw and db (null without a bias).
void causal_conv1d_forward(const float* x, const float* w, const float* bias, float* y, int64_t batch, int64_t t,
                           int64_t channels, int64_t k);
void causal_conv1d_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                            int64_t batch, int64_t t, int64_t channels, int64_t k);

// The linear-recurrence core (ops/recurrence.cpp) in its recurrent form:
// per slice (batch row × head) q, k [steps, K], v, o [steps, V], g [steps,
// GK] (GK = K, or 1: one decay per step), slices one after another. `state`
// ([slices, K, V], may be null) is the initial state, and gets the final one.
// The backward writes dq, dk, dv and dg (training: from a zero state).
struct RecurrenceShape {
  int64_t slices, steps, K, V, GK;
};
bool gated_recurrence_supported(int64_t K);  // K ≤ 1024
void gated_recurrence_forward(const float* q, const float* k, const float* v, const float* g, float* o, float* state,
                              const RecurrenceShape& s);
void gated_recurrence_backward(const float* q, const float* k, const float* v, const float* g, const float* dout,
                               float* dq, float* dk, float* dv, float* dg, const RecurrenceShape& s);
// The delta rule (ops/delta_rule.cpp) in its recurrent form, laid out as
// gated_recurrence's (GK = 1): beta and g [slices, steps]; K ≤ 1024.
void delta_rule_forward(const float* q, const float* k, const float* v, const float* beta, const float* g, float* o,
                        float* state, const RecurrenceShape& s);
void delta_rule_backward(const float* q, const float* k, const float* v, const float* beta, const float* g,
                         const float* dout, float* dq, float* dk, float* dv, float* dbeta, float* dg,
                         const RecurrenceShape& s);

// A chunk's scores under a decay per key (ops/decay_scores.cpp): q, k, L
// and their gradients [chunks, C, K], A and dA [chunks, C, C],
// A_{t,s} = Σ_k q_{t,k} k_{s,k} e^{L_{t,k} − L_{s,k}} for s ≤ t, 0 above.
void decay_scores_forward(const float* q, const float* k, const float* L, float* A, int64_t chunks, int64_t C,
                          int64_t K);
void decay_scores_backward(const float* q, const float* k, const float* L, const float* dA, float* dq, float* dk,
                           float* dL, int64_t chunks, int64_t C, int64_t K);

// X = (I + N)⁻¹ for N strictly lower-triangular (ops/unit_tril_inverse.cpp):
// N and X [matrices, C, C]; N's diagonal and upper part are not read.
void unit_tril_inverse(const float* N, float* X, int64_t matrices, int64_t C);

// Mamba's selective scan (ops/selective_scan.cpp): u, delta, y [batch,
// steps, channels], A [channels, N], B, C [batch, steps, N]; `state` ([batch,
// channels, N], may be null) the initial state, and gets the final one. The
// backward writes du, ddelta, dA, dB and dC (training: from a zero state).
struct ScanShape {
  int64_t batch, steps, channels, N;
};
bool selective_scan_supported(int64_t N);  // N ≤ 256
void selective_scan_forward(const float* u, const float* delta, const float* A, const float* B, const float* C,
                            float* y, float* state, const ScanShape& s);
void selective_scan_backward(const float* u, const float* delta, const float* A, const float* B, const float* C,
                             const float* dy, float* du, float* ddelta, float* dA, float* dB, float* dC,
                             const ScanShape& s);

// The causal and key-padding mask [batch, tq, tk]: entry (b, i, j) is true
// where j > past + i or key_pad[b, j] (key_pad [batch, tk], may be null).
void attention_mask(const uint8_t* key_pad, uint8_t* mask, int64_t batch, int64_t tq, int64_t tk, int64_t past);
// out[i, :] = weight[ids[i], :]; ids on the device.
void embedding_forward(const float* weight, const int32_t* ids, float* out, int64_t n, int64_t dim);
// dweight (zeroed here) [vocab, dim]: each row the sum of its ids' rows of
// dout in position order. `order` lists positions sorted by id (stable) and
// `starts` [vocab + 1] where each id's run begins; both on the device.
void embedding_backward(const float* dout, const int32_t* order, const int32_t* starts, float* dweight, int64_t vocab,
                        int64_t dim);
// Cross-entropy over logits [rows, cols] with row stride ld, float32 or
// bfloat16 (the classifier's logits in bf16 precision, linear_cross_entropy),
// arithmetic in float32. Per row: loss = lse − x[target] (0 where target ==
// ignore); lse saved.
void cross_entropy_forward(const void* logits, Element element, int64_t ld, const int32_t* targets, float* loss,
                           float* lse, int64_t rows, int64_t cols, int32_t ignore);
// dlogits = (softmax − onehot)·(*seed)·scale per row, of the logits' element
// type and row stride (dlogits may be logits: in place). seed is the loss's
// gradient, read on the device (no wait for it). Ignored rows, rows in
// [rows, out_rows) and columns in [cols, out_cols) get zeros: the padding of
// a padded bf16 matrix, which the products then read.
void cross_entropy_backward(const void* logits, Element element, int64_t ld, const int32_t* targets, const float* lse,
                            void* dlogits, int64_t rows, int64_t cols, int64_t out_rows, int64_t out_cols,
                            int32_t ignore, const float* seed, float scale);

// ---- optimizer (optim.cu): every tensor of a step in one launch -----------
// Σ x² of each piece, as a double, in a fixed order (chunks' partial sums
// added in chunk order), then one wait for them all.
struct Span {
  const float* data;
  int64_t n;
};
std::vector<double> sum_of_squares(const std::vector<Span>& pieces);
// x *= s over every piece (writes through the pieces' pointers).
void scale_inplace(const std::vector<Span>& pieces, float s);
// torch.optim.AdamW's update (see optim/optimizer.h) of each tensor with its
// group's learning rate and weight decay.
struct AdamWTensor {
  float* p;
  const float* g;
  float *m, *v;
  int64_t n;
  float lr, weight_decay;
};
void adamw_step(const std::vector<AdamWTensor>& tensors, float beta1, float beta2, float eps, float bias_correction1,
                float bias_correction2_sqrt);

}  // namespace tapelm::cuda
