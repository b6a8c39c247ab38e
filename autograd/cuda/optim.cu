// The optimizer's kernels: AdamW's update (torch.optim.AdamW's order, as
// optim/optimizer.cpp), a deterministic Σx² for the gradient norm, a scale;
// each over every tensor of the step in one launch.
#include <vector>

#include "autograd/cuda/check.cuh"
#include "autograd/cuda/kernels.h"
#include "autograd/cuda/runtime.h"

namespace tapelm::cuda {

namespace {

constexpr int kBlock = 256;
// Every tensor of a step is cut into chunks of kChunk elements (the last one
// shorter), a block per chunk, all in one launch: a step has ~150 tensors,
// most of them small, and a launch per tensor left the GPU idle between them.
constexpr int64_t kChunk = 1 << 16;

// One tensor of a multi-tensor launch: its buffers (unused ones null) and
// its AdamW group settings.
struct TensorArgs {
  float* p;
  const float* g;
  float* m;
  float* v;
  int64_t n;
  float lr, wd;
};
struct ChunkArgs {
  int32_t tensor;
  int64_t start;
};

// What a kernel reads: the tensors and the chunks, block b taking chunks[b].
struct MultiTensorView {
  const TensorArgs* tensors;
  const ChunkArgs* chunks;
};

// The tensors and their chunks in device memory, for one launch; released
// after it (stream-ordered).
struct MultiTensor {
  MultiTensorView view{nullptr, nullptr};
  int64_t n_chunks = 0;
  void* owned = nullptr;
  explicit MultiTensor(const std::vector<TensorArgs>& list) {
    std::vector<ChunkArgs> cs;
    for (size_t t = 0; t < list.size(); ++t)
      for (int64_t start = 0; start < list[t].n; start += kChunk) cs.push_back({(int32_t)t, start});
    n_chunks = (int64_t)cs.size();
    if (n_chunks == 0) return;
    const size_t tensor_bytes = (list.size() * sizeof(TensorArgs) + 15) / 16 * 16;
    owned = allocate(tensor_bytes + cs.size() * sizeof(ChunkArgs));
    copy_to_device(owned, list.data(), list.size() * sizeof(TensorArgs));
    copy_to_device(static_cast<char*>(owned) + tensor_bytes, cs.data(), cs.size() * sizeof(ChunkArgs));
    view = {static_cast<const TensorArgs*>(owned),
            reinterpret_cast<const ChunkArgs*>(static_cast<const char*>(owned) + tensor_bytes)};
  }
  ~MultiTensor() { release(owned); }
  MultiTensor(const MultiTensor&) = delete;
  MultiTensor& operator=(const MultiTensor&) = delete;
};

// This block's chunk: elements [begin, end) of tensor t.
__device__ inline void chunk_of(const MultiTensorView& mt, const TensorArgs*& t, int64_t& begin, int64_t& end) {
  const ChunkArgs c = mt.chunks[blockIdx.x];
  t = mt.tensors + c.tensor;
  begin = c.start;
  end = begin + kChunk < t->n ? begin + kChunk : t->n;
}

__global__ void k_adamw(MultiTensorView mt, float b1, float b2, float eps, float bc1, float bc2s) {
  const TensorArgs* t;
  int64_t begin, end;
  chunk_of(mt, t, begin, end);
  const float decay = 1.f - t->lr * t->wd, step_size = t->lr / bc1;
  float *p = t->p, *m = t->m, *v = t->v;
  const float* g = t->g;
  for (int64_t i = begin + threadIdx.x; i < end; i += kBlock) {
    const float gr = g[i];
    float th = p[i] * decay;
    const float mi = b1 * m[i] + (1.f - b1) * gr;
    const float vi = b2 * v[i] + (1.f - b2) * gr * gr;
    th -= step_size * mi / (sqrtf(vi) / bc2s + eps);
    p[i] = th, m[i] = mi, v[i] = vi;
  }
}

// partial[chunk] = Σ g² over the chunk: each thread's strided sum, then a
// fixed tree. The host adds the partials in chunk order, in double.
__global__ void k_sum_squares(MultiTensorView mt, double* partial) {
  const TensorArgs* t;
  int64_t begin, end;
  chunk_of(mt, t, begin, end);
  __shared__ double part[kBlock];
  double s = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kBlock) s += (double)t->g[i] * t->g[i];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int w = kBlock / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = part[0];
}

__global__ void k_scale(MultiTensorView mt, float s) {
  const TensorArgs* t;
  int64_t begin, end;
  chunk_of(mt, t, begin, end);
  for (int64_t i = begin + threadIdx.x; i < end; i += kBlock) t->p[i] *= s;
}

std::vector<TensorArgs> spans_as_tensors(const std::vector<Span>& spans) {
  std::vector<TensorArgs> list;
  for (const Span& x : spans) list.push_back({const_cast<float*>(x.data), x.data, nullptr, nullptr, x.n, 0.f, 0.f});
  return list;
}

}  // namespace

void adamw_step(const std::vector<AdamWTensor>& tensors, float beta1, float beta2, float eps, float bias_correction1,
                float bias_correction2_sqrt) {
  std::vector<TensorArgs> list;
  for (const AdamWTensor& t : tensors) list.push_back({t.p, t.g, t.m, t.v, t.n, t.lr, t.weight_decay});
  const MultiTensor mt(list);
  if (mt.n_chunks == 0) return;
  TAPELM_CHECK(mt.n_chunks <= INT32_MAX, "adamw: {} chunks past the grid", mt.n_chunks);
  k_adamw<<<(unsigned)mt.n_chunks, kBlock, 0, stream()>>>(mt.view, beta1, beta2, eps, bias_correction1,
                                                          bias_correction2_sqrt);
  TAPELM_CUDA_LAUNCHED();
}

std::vector<double> sum_of_squares(const std::vector<Span>& pieces) {
  std::vector<double> sums(pieces.size(), 0.0);
  const MultiTensor mt(spans_as_tensors(pieces));
  if (mt.n_chunks == 0) return sums;
  double* partial = static_cast<double*>(allocate(mt.n_chunks * sizeof(double)));
  k_sum_squares<<<(unsigned)mt.n_chunks, kBlock, 0, stream()>>>(mt.view, partial);
  TAPELM_CUDA_LAUNCHED();
  std::vector<double> host(mt.n_chunks);
  copy_to_host(host.data(), partial, host.size() * sizeof(double));  // the one wait, for every piece
  release(partial);
  size_t c = 0;  // chunks are in piece order
  for (size_t t = 0; t < pieces.size(); ++t)
    for (int64_t start = 0; start < pieces[t].n; start += kChunk) sums[t] += host[c++];
  return sums;
}

void scale_inplace(const std::vector<Span>& pieces, float s) {
  const MultiTensor mt(spans_as_tensors(pieces));
  if (mt.n_chunks == 0) return;
  k_scale<<<(unsigned)mt.n_chunks, kBlock, 0, stream()>>>(mt.view, s);
  TAPELM_CUDA_LAUNCHED();
}

}  // namespace tapelm::cuda
