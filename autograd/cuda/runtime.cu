#include <cstdlib>
#include <cstring>

#include "autograd/cuda/check.cuh"
#include "autograd/cuda/runtime.h"

namespace tapelm::cuda {

namespace {

struct Context {
  cudaStream_t stream = nullptr;
  Context() {
    TAPELM_CUDA(cudaSetDevice(0));
    TAPELM_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    // Keep freed blocks in the pool between steps instead of returning them
    // to the driver at every synchronisation: step-to-step reuse.
    cudaMemPool_t pool;
    TAPELM_CUDA(cudaDeviceGetDefaultMemPool(&pool, 0));
    uint64_t keep = UINT64_MAX;
    TAPELM_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  }
};

Context& context() {
  static Context c;  // on first use: a CPU-only run never touches the driver
  return c;
}

}  // namespace

cudaStream_t stream() { return context().stream; }

bool built() { return true; }

int device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

std::string why_unavailable() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) return fmt::format("no CUDA GPU can be used: {} ({})", cudaGetErrorName(e), cudaGetErrorString(e));
  if (n == 0) return "no CUDA GPU is present";
  return "";
}

std::string describe() {
  cudaDeviceProp p{};
  TAPELM_CUDA(cudaGetDeviceProperties(&p, 0));
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  return fmt::format("{}, {:.1f} GiB, compute {}.{}, {} SMs, driver CUDA {}.{}, runtime {}.{}", p.name,
                     p.totalGlobalMem / 1073741824.0, p.major, p.minor, p.multiProcessorCount, driver / 1000,
                     driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10);
}

bool poison_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("TAPELM_CUDA_POISON");
    return e && std::strcmp(e, "1") == 0;
  }();
  return on;
}

void* allocate(size_t bytes) {
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  const cudaError_t e = cudaMallocAsync(&p, bytes, stream());
  if (e != cudaSuccess) {
    cudaGetLastError();  // clear it
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw Error(fmt::format("cuda: out of GPU memory allocating {:.1f} MiB ({:.1f} GiB of {:.1f} GiB free): {}",
                            bytes / 1048576.0, free_b / 1073741824.0, total_b / 1073741824.0, cudaGetErrorString(e)));
  }
  if (poison_enabled()) TAPELM_CUDA(cudaMemsetAsync(p, 0xFF, bytes, stream()));
  return p;
}

namespace {
cudaMemPool_t pool() {
  context();  // the pool's settings are made with the stream
  cudaMemPool_t pool;
  TAPELM_CUDA(cudaDeviceGetDefaultMemPool(&pool, 0));
  return pool;
}
}  // namespace

PeakMemory peak_memory() {
  unsigned long long used = 0, reserved = 0;  // the attributes are cuuint64_t (64-bit unsigned)
  TAPELM_CUDA(cudaMemPoolGetAttribute(pool(), cudaMemPoolAttrUsedMemHigh, &used));
  TAPELM_CUDA(cudaMemPoolGetAttribute(pool(), cudaMemPoolAttrReservedMemHigh, &reserved));
  return {(int64_t)used, (int64_t)reserved};
}

void reset_peak_memory() {
  unsigned long long zero = 0;  // "reset to the current value", as the attributes define
  TAPELM_CUDA(cudaMemPoolSetAttribute(pool(), cudaMemPoolAttrUsedMemHigh, &zero));
  TAPELM_CUDA(cudaMemPoolSetAttribute(pool(), cudaMemPoolAttrReservedMemHigh, &zero));
}

StreamTimer::StreamTimer() {
  cudaEvent_t a, b;
  TAPELM_CUDA(cudaEventCreate(&a));
  TAPELM_CUDA(cudaEventCreate(&b));
  start_ = a, stop_ = b;
}

StreamTimer::~StreamTimer() {
  cudaEventDestroy(static_cast<cudaEvent_t>(start_));
  cudaEventDestroy(static_cast<cudaEvent_t>(stop_));
}

void StreamTimer::start() { TAPELM_CUDA(cudaEventRecord(static_cast<cudaEvent_t>(start_), stream())); }

double StreamTimer::stop() {
  TAPELM_CUDA(cudaEventRecord(static_cast<cudaEvent_t>(stop_), stream()));
  TAPELM_CUDA(cudaEventSynchronize(static_cast<cudaEvent_t>(stop_)));
  float ms = 0;
  TAPELM_CUDA(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start_), static_cast<cudaEvent_t>(stop_)));
  return ms * 1e-3;
}

EventTrail::~EventTrail() {
  for (void* e : events_) cudaEventDestroy(static_cast<cudaEvent_t>(e));
}

int64_t EventTrail::record() {
  if (used_ == (int64_t)events_.size()) {
    cudaEvent_t e;
    TAPELM_CUDA(cudaEventCreate(&e));
    events_.push_back(e);
  }
  TAPELM_CUDA(cudaEventRecord(static_cast<cudaEvent_t>(events_[used_]), stream()));
  return used_++;
}

void EventTrail::synchronize() {
  if (used_ > 0) TAPELM_CUDA(cudaEventSynchronize(static_cast<cudaEvent_t>(events_[used_ - 1])));
}

double EventTrail::seconds(int64_t from, int64_t to) {
  TAPELM_CHECK(from >= 0 && from <= to && to < used_, "EventTrail: no events {} to {} (recorded {})", from, to, used_);
  float ms = 0;
  TAPELM_CUDA(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(events_[from]), static_cast<cudaEvent_t>(events_[to])));
  return ms * 1e-3;
}

void EventTrail::clear() { used_ = 0; }

void release(void* p) {
  if (p) cudaFreeAsync(p, stream());  // never throws: called from destructors
}

void copy_to_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  // Pageable host memory: the copy is staged before the call returns, so the
  // host buffer may be reused at once.
  TAPELM_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()));
}

void copy_to_host(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  TAPELM_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()));
  TAPELM_CUDA(cudaStreamSynchronize(stream()));
}

void copy_on_device(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  TAPELM_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()));
}

void fill_bytes(void* p, int value, size_t bytes) {
  if (bytes == 0) return;
  TAPELM_CUDA(cudaMemsetAsync(p, value, bytes, stream()));
}

void synchronize() { TAPELM_CUDA(cudaStreamSynchronize(stream())); }

}  // namespace tapelm::cuda
