// Every differentiable op of tapelm. Each op lives in autograd/ops/<file>.cpp
// with its forward kernel, its backward (recorded on the tape) and its FLOP
// count side by side. Floating ops accept float32 and float64 alike. The fused
// cores' primitive-op references, for tests, are in autograd/ops_reference.h.
#pragma once
#include <string>
#include <vector>

#include "autograd/accumulate.h"
#include "autograd/tape.h"
#include "autograd/tensor.h"

namespace tapelm {

// ---- binary.cpp: arithmetic with NumPy broadcasting -----------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
// add_(dst, src): dst += src in place (autograd/accumulate.h).

// ---- scalar.cpp: ops with a scalar ---------------------------------------
Tensor add_scalar(const Tensor& a, double s);   // a + s
Tensor mul_scalar(const Tensor& a, double s);   // a * s
Tensor rsub_scalar(double s, const Tensor& a);  // s - a
Tensor rdiv_scalar(double s, const Tensor& a);  // s / a
Tensor pow(const Tensor& a, double p);          // a^p (elementwise)

// ---- unary.cpp: elementwise functions --------------------------------------
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x);       // x·Φ(x), the exact (erf) form
Tensor gelu_tanh(const Tensor& x);  // the tanh approximation (GPT-2's "gelu_new")
Tensor silu(const Tensor& x);       // x·sigmoid(x), a.k.a. swish
Tensor softplus(const Tensor& x);   // log(1+e^x); linear above 20 as in PyTorch
Tensor elu(const Tensor& x, double alpha = 1.0);
Tensor square(const Tensor& x);

// ---- matmul.cpp ----------------------------------------------------------
// a [..., m, k] @ b [..., k, n] -> [..., m, n], batch dims broadcast. With
// trans_a, a is stored [..., k, m]; with trans_b, b is stored [..., n, k]
// (read transposed in place, never copied). 2·m·n·k FLOPs per matrix.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// x Wᵀ + b over the last axis of x (F.linear); W [out, in]; b [out] or undefined.
// With an activation, act(x) Wᵀ + b as one op: linear(gelu(x), W, b). On the
// GPU the activation is applied by the pass that makes the product's operand
// (its bfloat16 copy in bf16), so act(x) is never written in float32; on the
// CPU it is the two ops composed.
enum class Activation { none, relu, gelu, gelu_tanh, silu };
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Activation activation = Activation::none);

// ---- reduce.cpp ----------------------------------------------------------
Tensor sum(const Tensor& a, std::vector<int64_t> axes, bool keepdim = false);
Tensor sum(const Tensor& a);  // over everything -> shape []
Tensor mean(const Tensor& a, std::vector<int64_t> axes, bool keepdim = false);
Tensor mean(const Tensor& a);
Tensor max(const Tensor& a, std::vector<int64_t> axes, bool keepdim = false);
// Sums g down to `shape` (the inverse of broadcasting `shape` up to g's shape).
Tensor sum_to(const Tensor& g, const Shape& shape);

// ---- shape_ops.cpp: reshape, permute, slice, concat ----------------------
Tensor reshape(const Tensor& a, Shape shape);  // one dim may be -1; shares storage
Tensor unsqueeze(const Tensor& a, int64_t axis);
Tensor squeeze(const Tensor& a, int64_t axis);
Tensor permute(const Tensor& a, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& a, int64_t d0, int64_t d1);
// a[..., start:end, ...] along `axis` (negative indices count from the end).
Tensor slice(const Tensor& a, int64_t axis, int64_t start, int64_t end);
Tensor concat(const std::vector<Tensor>& parts, int64_t axis);
std::vector<Tensor> split(const Tensor& a, const std::vector<int64_t>& sizes, int64_t axis);
std::vector<Tensor> chunk(const Tensor& a, int64_t n, int64_t axis);  // n equal parts
Tensor expand(const Tensor& a, const Shape& shape);                   // broadcast_to (copies)

// A copy on another device, recorded: its backward copies the gradient back.
// The way a tensor crosses between the CPU and the GPU inside a graph.
Tensor to_device(const Tensor& a, Device device);

// ---- gather.cpp ----------------------------------------------------------
// weight [V, D], ids int32 [...] -> [..., D]; backward scatter-adds into rows.
Tensor embedding(const Tensor& weight, const Tensor& ids);

// ---- softmax.cpp: over the last axis, max-subtracted ----------------------
Tensor softmax(const Tensor& x);
Tensor log_softmax(const Tensor& x);

// ---- attention.cpp: fused softmax(scale·Q Kᵀ, masked) V ---------------
// q [B,Tq,H,hd], k and v [B,Tk,H,hd] -> [B,Tq,H,hd]; mask (bool, true = hidden)
// [B,1,Tq,Tk] or [B,Tq,Tk], shared by the heads, or undefined.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& mask,
                                    double scale);
// The same self-attention from one packed projection qkv [B,T,3·H·hd] (q,
// k, v side by side, as GPT-2's c_attn gives them) -> [B,T,H,hd]. On the GPU
// in bf16 the fused kernel reads the parts in place and the gradient comes
// back packed; elsewhere it splits them and calls the op above.
Tensor attention_qkv(const Tensor& qkv, int64_t heads, const Tensor& mask, double scale);

// ---- norm.cpp: fused over the last axis; weight (and bias) of [last dim] --
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias,
                  double eps = 1e-5);  // bias may be undefined
Tensor rms_norm(const Tensor& x, const Tensor& weight, double eps = 1e-5);
// ScaleNorm: x / max(‖x‖·d^−½, eps) · gain, gain of shape [1] (FLASH-pytorch's).
Tensor scale_norm(const Tensor& x, const Tensor& gain, double eps = 1e-5);

// ---- cross_entropy.cpp ---------------------------------------------------
// logits [..., V], targets int32 [...]; mean over targets != ignore_index
// (0 when every target is ignored). Fused: log-softmax and NLL in one pass.
// tapelm's batches mark ignored targets (padding) with kIgnoreIndex; PyTorch's
// default is −100.
inline constexpr int32_t kIgnoreIndex = -1;
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index = kIgnoreIndex);
// cross_entropy(linear(x, weight), targets): a bias-free classifier and its
// loss, x [..., in], weight [classes, in]. On the GPU in bf16 precision the
// logits stay bfloat16 and are never written in float32 (see the .cpp).
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets,
                            int32_t ignore_index = kIgnoreIndex);

// ---- mask.cpp: boolean masks (dtype b8) ----------------------------------
// mask broadcasts to a's shape; positions where mask is true become `value`.
Tensor masked_fill(const Tensor& a, const Tensor& mask, double value);
// mask ? a : b, all three broadcast together.
Tensor where(const Tensor& mask, const Tensor& a, const Tensor& b);
Tensor logical_not(const Tensor& mask);  // not differentiable
// Mask [n, n] on `device`, true above the diagonal (j > i), or on and above
// it when `diagonal`: the entries a causal block leaves out (made on the host
// and copied: n² bytes).
Tensor above_diagonal(int64_t n, bool diagonal = false, Device device = Device::cpu);
// Attention's causal and key-padding mask [B,1,Tq,Tk] on `device`: query i
// (at position past + i; past < 0 means Tk − Tq) hides key j when j > past + i
// or key_pad[b, j] (key_pad: bool [B,Tk] on the host, or undefined).
Tensor attention_mask(int64_t B, int64_t Tq, int64_t Tk, const Tensor& key_pad, int64_t past = -1,
                      Device device = Device::cpu);

// ---- dropout.cpp ---------------------------------------------------------
// Zeroes each element with probability p and scales the rest by 1/(1-p) when
// training; the identity (no node) in eval mode or with p == 0.
Tensor dropout(const Tensor& a, double p, bool training, Generator& gen);

// ---- cumsum.cpp ----------------------------------------------------------
Tensor cumsum(const Tensor& a, int64_t axis);

// ---- recurrence.cpp: the linear-attention core ---------------------------
// S_t = diag(exp g_t)·S_{t−1} + k_t v_tᵀ,  o_t = S_tᵀ q_t, per batch and head.
// q, k [B,H,T,K], v [B,H,T,V], g (log-decay ≤ 0) [B,H,T,K] or [B,H,T,1];
// returns o [B,H,T,V]. The three forms give the same numbers; `chunk` is the
// chunk size of the chunkwise form. With `state` (inference, no grad), the
// recurrence starts from *state ([B,H,K,V], zeros if undefined) and leaves the
// final state there.
enum class RecurrenceForm { recurrent, parallel, chunkwise };
Tensor gated_recurrence(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& g,
                        RecurrenceForm form = RecurrenceForm::chunkwise, int64_t chunk = 64, Tensor* state = nullptr);
// The forward FLOPs gated_recurrence counts for b sequences of s steps over H
// heads of key width K and value width V in `form` (chunk C), with the formula
// in words: the FLOP formulas of the mixers that run on it.
int64_t gated_recurrence_flops(int64_t b, int64_t s, int64_t H, int64_t K, int64_t V, RecurrenceForm form,
                               int64_t chunk, std::string* formula);

// ---- delta_rule.cpp: the DeltaNet core -----------------------------------
// S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,  o_t = S_tᵀ q_t, α_t = exp(g_t).
// q, k [B,H,T,K], v [B,H,T,V], beta and g [B,H,T,1]; forms and state as above
// (chunkwise is the WY/UT form; parallel is one chunk over the sequence).
Tensor delta_rule(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& beta, const Tensor& g,
                  RecurrenceForm form = RecurrenceForm::chunkwise, int64_t chunk = 64, Tensor* state = nullptr);

// ---- selective_scan.cpp: Mamba's scan -------------------------------------
// h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t u_t B_t, y_t = C_t·h_t per batch and channel:
// u, delta [B,T,D], A [D,N], B, C [B,T,N] -> y [B,T,D]. With `state` ([B,D,N],
// inference only) the scan continues from it and leaves the final state there.
Tensor selective_scan(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& Bm, const Tensor& Cm,
                      Tensor* state = nullptr);

// ---- gau_attention.cpp: GAU and FLASH ------------------------------------
// Per row, with positions [B,T] (int32, non-decreasing: nn::position_ids),
// chunks of chunk_len positions (FLASH's groups; 0: one chunk, GAU) and
// key_pad [B,T] (bool, true: not a key):
//   o_t = Σ_{u ≤ t, same chunk} relu(q_t·k_u·scale + bias[Δ])²·v_u + Σ_{u in earlier chunks} (ql_t·kl_u)·norm·v_u,
// Δ = min(position_t − position_u, D − 1); q, k, ql, kl [B,T,s], v [B,T,e],
// bias [D] -> o [B,T,e]. ql and kl undefined: no linear part (GAU); bias
// undefined: none. Forms as the recurrence ops' (chunkwise: per chunk,
// S = Σ kl vᵀ carried across chunks). With `state` (inference) decoding
// continues from the keys, values and S it holds, and updates them.
struct GauAttentionState {
  std::vector<Tensor> S;                          // per row [s, e]: Σ kl vᵀ over finished chunks
  std::vector<Tensor> keys, linear_keys, values;  // per row: the current chunk's k, kl [n, s] and v [n, e]
  std::vector<Tensor> key_positions;              // per row: their positions [n] (int32)
  std::vector<int64_t> chunk;                     // per row: the current chunk id (−1 before any token)
  int64_t bytes() const;
};
struct GauAttentionInputs {
  Tensor q, k, v;         // [B,T,s], [B,T,s], [B,T,e]
  Tensor ql, kl;          // FLASH's linear part [B,T,s]; undefined: none (GAU)
  Tensor bias;            // [D], the score bias per distance; undefined: none
  Tensor position;        // [B,T] int32, non-decreasing per row
  Tensor key_pad;         // [B,T] bool, true: not a key
  int64_t chunk_len = 0;  // positions per chunk; 0: one chunk (GAU)
  double scale = 1.0;     // of the quadratic scores
  double norm = 1.0;      // of the linear part
};
Tensor gau_attention(const GauAttentionInputs& in, RecurrenceForm form = RecurrenceForm::chunkwise,
                     GauAttentionState* state = nullptr);

// ---- decay_scores.cpp ----------------------------------------------------
// A chunk's scores under a decay per key (GLA's vector gates; the chunkwise
// form's intra-chunk part): q, k, L [..., C, K] -> A [..., C, C],
// A_{t,s} = Σ_k q_{t,k} k_{s,k} e^{L_{t,k} − L_{s,k}} for s ≤ t, 0 above the
// diagonal; L the cumulative log-decay inside the chunk. Exact (no
// sub-chunk rescaling): with L non-increasing no factor exceeds 1.
Tensor decay_scores(const Tensor& q, const Tensor& k, const Tensor& L);

// ---- unit_tril_inverse.cpp -----------------------------------------------
// (I + N)⁻¹ for N strictly lower-triangular [..., C, C] (its diagonal and
// upper part are not read): the delta rule's UT transform, by forward
// substitution.
Tensor unit_tril_inverse(const Tensor& N);

// ---- conv1d.cpp ----------------------------------------------------------
// Depthwise causal convolution: x [B,T,C], w [C,K], b [C] (optional) -> [B,T,C],
// y_t = b + Σ_j w_j ⊙ x_{t−K+1+j} with zeros before the start (Mamba's conv1d).
Tensor causal_conv1d(const Tensor& x, const Tensor& w, const Tensor& b = Tensor());

// ---- operators -----------------------------------------------------------
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, double s) { return add_scalar(a, s); }
inline Tensor operator+(double s, const Tensor& a) { return add_scalar(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return add_scalar(a, -s); }
inline Tensor operator-(double s, const Tensor& a) { return rsub_scalar(s, a); }
inline Tensor operator*(const Tensor& a, double s) { return mul_scalar(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul_scalar(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return mul_scalar(a, 1.0 / s); }
inline Tensor operator/(double s, const Tensor& a) { return rdiv_scalar(s, a); }

}  // namespace tapelm
