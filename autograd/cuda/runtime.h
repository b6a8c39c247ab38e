// The CUDA device's host side, as plain C++ (no CUDA headers): memory,
// copies, the stream every kernel runs on, the device's description. A build
// with the CUDA toolkit implements it in runtime.cu; a build without it links
// no_cuda.cpp, whose functions say that tapelm was built without CUDA, so no
// op file needs an #ifdef.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tapelm::cuda {

bool built();                   // this build has the CUDA device
int device_count();             // GPUs the driver sees (0 on error or without CUDA)
std::string describe();         // "NVIDIA H100 80GB HBM3, 79.1 GiB, compute 9.0, driver 13.0, runtime 13.0"
std::string why_unavailable();  // "" when a GPU can be used

// Device memory from the stream-ordered pool (cudaMallocAsync on the one
// stream), so a step's buffers are reused step after step without an
// allocator of our own. With TAPELM_CUDA_POISON=1 every new buffer is filled
// with 0xFF bytes (a NaN in every float), so a kernel that leaves an element
// unwritten fails its test.
void* allocate(size_t bytes);
void release(void* p);
// Scratch of n floats (one at least, so a zero size still gives a buffer to release).
inline float* allocate_floats(int64_t n) {
  return static_cast<float*>(allocate(size_t(n > 1 ? n : 1) * sizeof(float)));
}
bool poison_enabled();

void copy_to_device(void* dst, const void* src, size_t bytes);  // waits for nothing: the stream orders it
void copy_to_host(void* dst, const void* src, size_t bytes);    // returns once the bytes are on the host
void copy_on_device(void* dst, const void* src, size_t bytes);
void fill_bytes(void* p, int value, size_t bytes);
void synchronize();  // waits for every kernel launched so far; throws with the first asynchronous error

// The pool's high-water marks since the start or reset_peak_memory(): bytes
// handed out (as torch.cuda.max_memory_allocated reports) and bytes the pool
// took from the GPU (torch.cuda.max_memory_reserved).
struct PeakMemory {
  int64_t allocated = 0, reserved = 0;
};
PeakMemory peak_memory();
void reset_peak_memory();

// GPU time on the stream between start() and stop(), from CUDA events (the
// host's clock would time the launches, not the kernels).
class StreamTimer {
 public:
  StreamTimer();
  ~StreamTimer();
  StreamTimer(const StreamTimer&) = delete;
  StreamTimer& operator=(const StreamTimer&) = delete;
  void start();
  double stop();  // seconds; waits until the stream has passed stop

 private:
  void* start_ = nullptr;
  void* stop_ = nullptr;
};

// Events recorded on the stream one after another: the profiler's GPU clock
// (autograd/profiler.h). The events are made once and reused after clear().
class EventTrail {
 public:
  EventTrail() = default;
  ~EventTrail();
  EventTrail(const EventTrail&) = delete;
  EventTrail& operator=(const EventTrail&) = delete;
  int64_t record();                          // the index of the event just recorded
  void synchronize();                        // waits until the stream has passed every recorded event
  double seconds(int64_t from, int64_t to);  // GPU time between two recorded events, after synchronize()
  void clear();                              // forget the recorded events (they are reused)

 private:
  std::vector<void*> events_;
  int64_t used_ = 0;
};

}  // namespace tapelm::cuda
