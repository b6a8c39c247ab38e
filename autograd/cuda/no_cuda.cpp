// The CUDA device's functions in a build without the CUDA toolkit: each says
// so. Only allocate() and the queries can be reached (no cuda tensor can
// exist without an allocation), so the kernels' stubs never run.
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/runtime.h"
#include "autograd/error.h"

namespace tapelm::cuda {

namespace {
[[noreturn]] void no_cuda() {
  throw Error("cuda: tapelm was built without CUDA (the CUDA toolkit was not found when it was configured)");
}
}  // namespace

bool built() { return false; }
int device_count() { return 0; }
std::string describe() { return "none (built without CUDA)"; }
std::string why_unavailable() {
  return "tapelm was built without CUDA (the CUDA toolkit was not found when it was configured)";
}
void* allocate(size_t) { no_cuda(); }
void release(void*) {}
bool poison_enabled() { return false; }
void copy_to_device(void*, const void*, size_t) { no_cuda(); }
void copy_to_host(void*, const void*, size_t) { no_cuda(); }
void copy_on_device(void*, const void*, size_t) { no_cuda(); }
void fill_bytes(void*, int, size_t) { no_cuda(); }
void synchronize() {}
PeakMemory peak_memory() { return {}; }
void reset_peak_memory() {}
StreamTimer::StreamTimer() { no_cuda(); }
StreamTimer::~StreamTimer() = default;
void StreamTimer::start() { no_cuda(); }
double StreamTimer::stop() { no_cuda(); }
EventTrail::~EventTrail() = default;
int64_t EventTrail::record() { no_cuda(); }
void EventTrail::synchronize() {}
double EventTrail::seconds(int64_t, int64_t) { no_cuda(); }
void EventTrail::clear() {}

void fill(float*, int64_t, float) { no_cuda(); }
void dropout(const float*, float*, float*, int64_t, float, float, uint64_t) { no_cuda(); }
void masked_fill(const float*, const uint8_t*, const Strided&, float*, float) { no_cuda(); }
void unary_forward(Unary, const float*, float*, int64_t, float) { no_cuda(); }
void unary_backward(Unary, const float*, const float*, const float*, float*, int64_t, float) { no_cuda(); }
void scalar_map(ScalarOp, const float*, float*, int64_t, float) { no_cuda(); }
void binary(Binary, const float*, const Strided&, const float*, const Strided&, float*) { no_cuda(); }
void copy_strided(const float*, const Strided&, float*, const Strided&) { no_cuda(); }
void copy_strided_bytes(const uint8_t*, const Strided&, uint8_t*, const Strided&) { no_cuda(); }
void add_inplace(float*, const float*, int64_t) { no_cuda(); }
void reduce_sum(const float*, const Strided&, const Strided&, float*, float) { no_cuda(); }
namespace {
ProductPrecision g_precision = ProductPrecision::fp32;  // kept, though no product can run here
}
void set_product_precision(ProductPrecision p) { g_precision = p; }
ProductPrecision product_precision() { return g_precision; }
void gemm(bool, bool, int64_t, int64_t, int64_t, MatrixRef, MatrixRef, MutableMatrixRef, int64_t, float) { no_cuda(); }
void gemm(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, float*, int64_t, int64_t,
          float) {
  no_cuda();
}
double measure_product_peak(int64_t, int) { no_cuda(); }
ProductOperand::ProductOperand(const float*, int64_t, int64_t, int64_t, float*, Unary) { no_cuda(); }
void copy_rows(const float*, int64_t, float*, int64_t, int64_t, int64_t) { no_cuda(); }
void linear_forward(int64_t, int64_t, int64_t, MatrixRef, MatrixRef, const float*, float*) { no_cuda(); }
void gemm_bf16_result(bool, bool, int64_t, int64_t, int64_t, MatrixRef, MatrixRef, void*, int64_t) { no_cuda(); }
void norm_forward(bool, const float*, const float*, const float*, float*, float*, float*, int64_t, int64_t, float) {
  no_cuda();
}
void norm_backward(bool, const float*, const float*, const float*, const float*, const float*, float*, float*, float*,
                   int64_t, int64_t) {
  no_cuda();
}
void softmax_forward(const float*, float*, int64_t, int64_t, bool) { no_cuda(); }
void softmax_backward(const float*, const float*, float*, int64_t, int64_t, bool) { no_cuda(); }
void masked_softmax(const float*, const uint8_t*, void*, Element, int64_t, int64_t, int64_t, int64_t, float) {
  no_cuda();
}
void masked_softmax_backward(const void*, Element, const float*, void*, Element, int64_t, int64_t, float) { no_cuda(); }
void attention_mask(const uint8_t*, uint8_t*, int64_t, int64_t, int64_t, int64_t) { no_cuda(); }
bool flash_attention_supported(int64_t) { return false; }
int64_t flash_attention_padded(int64_t) { no_cuda(); }
int64_t flash_attention_tile_map_size(const FlashAttentionShape&) { no_cuda(); }
void flash_attention_tile_map(const uint8_t*, const FlashAttentionShape&, uint8_t*) { no_cuda(); }
void flash_attention_round_operands(const float*, const float*, const float*, const FlashAttentionShape&, void*, void*,
                                    void*) {
  no_cuda();
}
void flash_attention_forward(const void*, const void*, const void*, const uint8_t*, const uint8_t*,
                             const FlashAttentionShape&, float*, float*) {
  no_cuda();
}
void flash_attention_backward(const void*, const void*, const void*, const float*, const float*, const float*,
                              const uint8_t*, const uint8_t*, const FlashAttentionShape&, float*, float*, float*) {
  no_cuda();
}
void cumsum(const float*, float*, int64_t, int64_t, int64_t, bool) { no_cuda(); }
bool gated_recurrence_supported(int64_t) { return false; }
void gated_recurrence_forward(const float*, const float*, const float*, const float*, float*, float*,
                              const RecurrenceShape&) {
  no_cuda();
}
void gated_recurrence_backward(const float*, const float*, const float*, const float*, const float*, float*, float*,
                               float*, float*, const RecurrenceShape&) {
  no_cuda();
}
bool selective_scan_supported(int64_t) { return false; }
void selective_scan_forward(const float*, const float*, const float*, const float*, const float*, float*, float*,
                            const ScanShape&) {
  no_cuda();
}
void selective_scan_backward(const float*, const float*, const float*, const float*, const float*, const float*, float*,
                             float*, float*, float*, float*, const ScanShape&) {
  no_cuda();
}
void delta_rule_forward(const float*, const float*, const float*, const float*, const float*, float*, float*,
                        const RecurrenceShape&) {
  no_cuda();
}
void delta_rule_backward(const float*, const float*, const float*, const float*, const float*, const float*, float*,
                         float*, float*, float*, float*, const RecurrenceShape&) {
  no_cuda();
}
void decay_scores_forward(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t) { no_cuda(); }
void decay_scores_backward(const float*, const float*, const float*, const float*, float*, float*, float*, int64_t,
                           int64_t, int64_t) {
  no_cuda();
}
void unit_tril_inverse(const float*, float*, int64_t, int64_t) { no_cuda(); }
void causal_conv1d_forward(const float*, const float*, const float*, float*, int64_t, int64_t, int64_t, int64_t) {
  no_cuda();
}
void causal_conv1d_backward(const float*, const float*, const float*, float*, float*, float*, int64_t, int64_t, int64_t,
                            int64_t) {
  no_cuda();
}
void embedding_forward(const float*, const int32_t*, float*, int64_t, int64_t) { no_cuda(); }
void embedding_backward(const float*, const int32_t*, const int32_t*, float*, int64_t, int64_t) { no_cuda(); }
void cross_entropy_forward(const void*, Element, int64_t, const int32_t*, float*, float*, int64_t, int64_t, int32_t) {
  no_cuda();
}
void cross_entropy_backward(const void*, Element, int64_t, const int32_t*, const float*, void*, int64_t, int64_t,
                            int64_t, int64_t, int32_t, const float*, float) {
  no_cuda();
}
std::vector<double> sum_of_squares(const std::vector<Span>&) { no_cuda(); }
void scale_inplace(const std::vector<Span>&, float) { no_cuda(); }
void adamw_step(const std::vector<AdamWTensor>&, float, float, float, float, float) { no_cuda(); }

}  // namespace tapelm::cuda
