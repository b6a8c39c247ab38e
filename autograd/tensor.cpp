#include "autograd/tensor.h"

#include "autograd/cuda/kernels.h"
#include "autograd/cuda/runtime.h"
#include "autograd/parallel.h"

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

namespace tapelm {

// Training allocates the same activation buffers every step. glibc serves
// each block above its mmap threshold (at most 32 MB, so a GPT-2 logits
// tensor always) with a fresh mmap, whose pages fault on first touch: zeroing
// a new 206 MB buffer took 600 ms on this project's VM, against 15 ms for
// reused memory. M_MMAP_MAX = 0 makes every block come from the heap, and a
// trim threshold of -1 (no trimming, mallopt(3)) keeps freed memory there, so
// step N reuses step N−1's pages: RSS stays at the peak of one step. (Setting
// M_MMAP_THRESHOLD above 32 MB, as this code once did, is refused by glibc,
// and a 1 GB trim threshold still gave back the GPT-2 shape's 1.2 GB between
// steps.)
static const bool g_malloc_tuned = [] { return mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, -1) == 1; }();

static std::atomic<int64_t> g_live_bytes{0};
static std::atomic<int64_t> g_live_buffers{0};
static std::atomic<int64_t> g_peak_bytes{0};
static std::atomic<int64_t> g_live_cuda_bytes{0};

// malloc plus a 64-byte alignment of our own, not aligned_alloc: glibc's
// aligned_alloc asks for the size plus the alignment and splits the block,
// so a freed buffer is slightly too small for the next request of the same
// size, and every step grew the heap into fresh, faulting pages again.
namespace {
thread_local AllocationBudget* t_budget = nullptr;
}

AllocationBudget::AllocationBudget(int64_t bytes, std::string what)
    : limit_(bytes), what_(std::move(what)), outer_(t_budget) {
  t_budget = this;
}

AllocationBudget::~AllocationBudget() { t_budget = outer_; }

void AllocationBudget::charge(int64_t bytes) {
  for (AllocationBudget* b = t_budget; b; b = b->outer_) {
    TAPELM_CHECK(bytes <= b->limit_ - b->used_, "{} (its budget of {:.1f} MB exceeded)", b->what_,
                 b->limit_ / 1048576.0);
  }
  for (AllocationBudget* b = t_budget; b; b = b->outer_) b->used_ += bytes;
}

namespace {
std::atomic<int64_t> g_memory_limit{0};
std::string g_memory_limit_what;  // set with the limit, before any thread allocates
}  // namespace

void set_tensor_memory_limit(int64_t bytes, std::string what) {
  g_memory_limit_what = std::move(what);
  g_memory_limit = std::max<int64_t>(bytes, 0);
}

int64_t tensor_memory_limit() { return g_memory_limit.load(); }
const std::string& tensor_memory_limit_reason() { return g_memory_limit_what; }

std::string format_bytes(double bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024 && u < 6) bytes /= 1024, ++u;
  return u == 0 ? fmt::format("{:.0f} bytes", bytes) : fmt::format("{:.{}f} {}", bytes, bytes < 10 ? 1 : 0, units[u]);
}

Storage::Storage(size_t n, Device dev) : bytes(n), device(dev) {
  if (device == Device::cuda) {  // GPU memory: the CUDA pool's; the host cap and budget do not apply
    data = cuda::allocate(n);
    g_live_cuda_bytes += (int64_t)n;
    return;
  }
  AllocationBudget::charge((int64_t)n);
  if (const int64_t limit = g_memory_limit.load(), live = g_live_bytes.load(); limit > 0 && (int64_t)n > limit - live)
    throw MemoryLimitError(
        fmt::format("tensor: a buffer of {} would take the live tensors from {} past {}, {}", format_bytes((double)n),
                    format_bytes((double)live), format_bytes((double)limit), g_memory_limit_what),
        (int64_t)n, live, limit);
  constexpr size_t kAlign = 64;
  block = std::malloc(n + kAlign);
  if (!block) throw Error(fmt::format("tensor: out of memory allocating {} bytes", n));
  data = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(block) + kAlign - 1) / kAlign * kAlign);
  const int64_t live = g_live_bytes += (int64_t)n;
  for (int64_t peak = g_peak_bytes.load(); live > peak && !g_peak_bytes.compare_exchange_weak(peak, live);) {
  }
  g_live_buffers += 1;
}

Storage::~Storage() {
  if (device == Device::cuda) {
    cuda::release(data);
    g_live_cuda_bytes -= (int64_t)bytes;
    return;
  }
  std::free(block);
  g_live_bytes -= (int64_t)bytes;
  g_live_buffers -= 1;
}

int64_t Storage::live_bytes() { return g_live_bytes.load(); }
int64_t Storage::live_buffers() { return g_live_buffers.load(); }
int64_t Storage::live_cuda_bytes() { return g_live_cuda_bytes.load(); }
int64_t Storage::peak_live_bytes() { return g_peak_bytes.load(); }
void Storage::reset_peak_bytes() { g_peak_bytes = g_live_bytes.load(); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  const int64_t bytes = bytes_of(shape, dtype);  // checks the shape
  TAPELM_CHECK(device == Device::cpu || dtype != DType::f64,
               "tensor: float64 is for the CPU (gradient checks); a cuda tensor of {} cannot be made",
               shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(bytes, device);
  return Tensor(std::move(impl));
}

int64_t Tensor::size(int64_t axis) const { return shape()[normalize_axis("size", axis, dim())]; }

void Tensor::refuse_host_access(DType want) const {
  throw Error(fmt::format(
      "tensor: host code read a cuda tensor ({} {}) through data<{}>(): its elements are in GPU memory. An op "
      "without a CUDA kernel runs through the named CPU fallback; other code copies it with .to(Device::cpu)",
      dtype_name(dtype()), str_shape(), dtype_name(want)));
}

void Tensor::check_cuda(DType want) const {
  check_dtype(want);
  TAPELM_CHECK(is_cuda(), "tensor: cuda_data<{}>() on a cpu tensor of shape {}", dtype_name(want), str_shape());
}

void Tensor::check_dtype(DType want) const {
  TAPELM_CHECK(dtype() == want, "tensor: data<{}>() on a {} tensor of shape {}", dtype_name(want), dtype_name(dtype()),
               str_shape());
}

double Tensor::flat(int64_t i) const {
  TAPELM_CHECK(i >= 0 && i < numel(), "tensor: flat index {} out of range for shape {}", i, str_shape());
  switch (dtype()) {
    case DType::f32:
      return data<float>()[i];
    case DType::f64:
      return data<double>()[i];
    case DType::i32:
      return data<int32_t>()[i];
    case DType::b8:
      return data<uint8_t>()[i];
  }
  return 0;
}

void Tensor::set_flat(int64_t i, double v) {
  TAPELM_CHECK(i >= 0 && i < numel(), "tensor: flat index {} out of range for shape {}", i, str_shape());
  switch (dtype()) {
    case DType::f32:
      data<float>()[i] = (float)v;
      break;
    case DType::f64:
      data<double>()[i] = v;
      break;
    case DType::i32:
      data<int32_t>()[i] = (int32_t)v;
      break;
    case DType::b8:
      data<uint8_t>()[i] = v != 0;
      break;
  }
}

double Tensor::item() const {
  TAPELM_CHECK(numel() == 1, "item: tensor of shape {} has {} elements, not 1", str_shape(), numel());
  if (is_cuda()) return to(Device::cpu).flat(0);  // the one read a training step waits for
  return flat(0);
}

std::vector<double> Tensor::to_vector() const {
  if (is_cuda()) return to(Device::cpu).to_vector();
  std::vector<double> v(numel());
  for (int64_t i = 0; i < numel(); ++i) v[i] = flat(i);
  return v;
}

Tensor& Tensor::requires_grad_(bool on) {
  TAPELM_CHECK(!on || is_floating(dtype()), "requires_grad_: a {} tensor cannot have a gradient", dtype_name(dtype()));
  impl().requires_grad = on;
  return *this;
}

void Tensor::set_grad(const Tensor& gradient) {
  if (!gradient.defined()) {
    impl().grad.reset();
    return;
  }
  TAPELM_CHECK(gradient.shape() == shape() && gradient.dtype() == dtype(),
               "set_grad: gradient {} {} does not match tensor {} {}", dtype_name(gradient.dtype()),
               gradient.str_shape(), dtype_name(dtype()), str_shape());
  impl().grad = gradient.impl_ptr();
}

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape();
  impl->dtype = dtype();
  impl->storage = this->impl().storage;
  impl->offset = this->impl().offset;
  return Tensor(std::move(impl));
}

Tensor Tensor::clone() const {
  Tensor out = Tensor::empty(shape(), dtype(), device());
  if (is_cuda())
    cuda::copy_on_device(out.address(), address(), numel() * dtype_size(dtype()));
  else
    std::memcpy(out.raw_data(), raw_data(), numel() * dtype_size(dtype()));
  return out;
}

Tensor Tensor::to(Device d) const {
  if (d == device()) return clone();
  Tensor out = Tensor::empty(shape(), dtype(), d);
  const size_t n = numel() * dtype_size(dtype());
  if (d == Device::cuda)
    cuda::copy_to_device(out.address(), address(), n);
  else
    cuda::copy_to_host(out.address(), address(), n);
  return out;
}

Tensor Tensor::to(DType d) const {
  if (d == dtype()) return clone();
  TAPELM_CHECK(!is_cuda(), "tensor: to({}) of a cuda {} tensor {}: dtype conversions run on the CPU", dtype_name(d),
               dtype_name(dtype()), str_shape());
  Tensor out = Tensor::empty(shape(), d);
  int64_t n = numel();
  if (dtype() == DType::f32 && d == DType::f64) {
    const float* s = data<float>();
    double* o = out.data<double>();
    for (int64_t i = 0; i < n; ++i) o[i] = s[i];
  } else if (dtype() == DType::f64 && d == DType::f32) {
    const double* s = data<double>();
    float* o = out.data<float>();
    for (int64_t i = 0; i < n; ++i) o[i] = (float)s[i];
  } else {
    for (int64_t i = 0; i < n; ++i) out.set_flat(i, flat(i));
  }
  return out;
}

void Tensor::copy_(const Tensor& src) {
  TAPELM_CHECK(src.shape() == shape(), "copy_: source {} does not match destination {}", src.str_shape(), str_shape());
  if (is_cuda() || src.is_cuda()) {  // across or on the GPU: bytes of one dtype
    TAPELM_CHECK(src.dtype() == dtype(), "copy_: {} into {} across devices", dtype_name(src.dtype()),
                 dtype_name(dtype()));
    const size_t n = numel() * dtype_size(dtype());
    if (is_cuda() && src.is_cuda())
      cuda::copy_on_device(address(), src.address(), n);
    else if (is_cuda())
      cuda::copy_to_device(address(), src.address(), n);
    else
      cuda::copy_to_host(address(), src.address(), n);
    return;
  }
  if (src.dtype() == dtype()) {
    std::memmove(raw_data(), src.raw_data(), numel() * dtype_size(dtype()));
  } else {
    Tensor c = src.to(dtype());
    std::memcpy(raw_data(), c.raw_data(), numel() * dtype_size(dtype()));
  }
}

namespace {
template <class T>
void fill_parallel(T* p, int64_t n, T v) {
  parallel_chunks(n, [&](int64_t begin, int64_t len) { std::fill_n(p + begin, len, v); });
}
}  // namespace

void Tensor::fill_(double v) {
  int64_t n = numel();
  if (is_cuda()) {
    if (dtype() == DType::f32)
      cuda::fill(cuda_data<float>(), n, (float)v);
    else if (v == 0)
      cuda::fill_bytes(address(), 0, n * dtype_size(dtype()));
    else
      copy_(full(shape(), v, dtype()));  // other dtypes: through the host
    return;
  }
  switch (dtype()) {
    case DType::f32:
      fill_parallel(data<float>(), n, (float)v);
      break;
    case DType::f64:
      fill_parallel(data<double>(), n, v);
      break;
    case DType::i32:
      fill_parallel(data<int32_t>(), n, (int32_t)v);
      break;
    case DType::b8:
      fill_parallel(data<uint8_t>(), n, (uint8_t)(v != 0));
      break;
  }
}

Tensor zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  t.fill_(0.0);
  return t;
}

Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype) {
  TAPELM_CHECK((int64_t)values.size() == numel_of(shape), "from_vector: {} values do not fill shape {}", values.size(),
               shape_str(shape));
  Tensor t = Tensor::empty(shape, dtype);
  for (size_t i = 0; i < values.size(); ++i) t.set_flat(i, values[i]);
  return t;
}

Tensor from_ints(const std::vector<int32_t>& values, const Shape& shape) {
  TAPELM_CHECK((int64_t)values.size() == numel_of(shape), "from_ints: {} values do not fill shape {}", values.size(),
               shape_str(shape));
  Tensor t = Tensor::empty(shape, DType::i32);
  std::copy(values.begin(), values.end(), t.data<int32_t>());
  return t;
}

Tensor from_bools(const std::vector<bool>& values, const Shape& shape) {
  TAPELM_CHECK((int64_t)values.size() == numel_of(shape), "from_bools: {} values do not fill shape {}", values.size(),
               shape_str(shape));
  Tensor t = Tensor::empty(shape, DType::b8);
  for (size_t i = 0; i < values.size(); ++i) t.data<uint8_t>()[i] = values[i];
  return t;
}

Tensor arange(int64_t n, DType dtype) {
  Tensor t = Tensor::empty({n}, dtype);
  for (int64_t i = 0; i < n; ++i) t.set_flat(i, (double)i);
  return t;
}

Tensor randn(const Shape& shape, Generator& gen, DType dtype, double mean, double std) {
  Tensor t = Tensor::empty(shape, dtype);
  dispatch_float("randn", dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data<T>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = (T)(mean + std * gen.normal());
  });
  return t;
}

Tensor randn(const Shape& shape, DType dtype) { return randn(shape, default_generator(), dtype); }

Tensor randint(const Shape& shape, int64_t high, Generator& gen) {
  TAPELM_CHECK(high > 0 && high <= INT32_MAX, "randint: high must be in [1, 2^31), got {}", high);
  Tensor t = Tensor::empty(shape, DType::i32);
  int32_t* p = t.data<int32_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = (int32_t)gen.randint(high);
  return t;
}

Tensor uniform(const Shape& shape, Generator& gen, double lo, double hi, DType dtype) {
  Tensor t = Tensor::empty(shape, dtype);
  dispatch_float("uniform", dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = t.data<T>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = (T)(lo + (hi - lo) * gen.uniform());
  });
  return t;
}

}  // namespace tapelm
