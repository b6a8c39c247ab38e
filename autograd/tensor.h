// Tensor: a shape, a dtype and a handle on contiguous row-major storage.
//
// A Tensor is a cheap handle (a shared_ptr); copying it aliases the same data,
// as in PyTorch. Views (reshape, slices of leading rows) share the storage
// with an element offset. Gradients live in `grad()`, filled by backward().
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

#include "autograd/device.h"
#include "autograd/error.h"
#include "autograd/random.h"
#include "autograd/shape.h"

namespace tapelm {

// One buffer: 64-byte-aligned host memory, or GPU memory from the CUDA
// device's pool. Counts live bytes process-wide, per device, so tests can
// prove that training steps do not leak.
struct Storage {
  explicit Storage(size_t bytes, Device device = Device::cpu);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data = nullptr;  // host: 64-byte aligned, inside `block`; cuda: a device pointer
  size_t bytes = 0;
  Device device = Device::cpu;
  // Host bytes and buffers (what the memory cap and the leak tests count).
  static int64_t live_bytes();
  static int64_t live_buffers();
  static int64_t live_cuda_bytes();  // GPU bytes held by tensors
  // The most live bytes since the last reset_peak_bytes() (or the start).
  static int64_t peak_live_bytes();
  static void reset_peak_bytes();  // to the bytes live now

 private:
  void* block = nullptr;  // what malloc returned
};

// Caps what this thread may allocate while it lives: a Storage that would
// take the thread's allocations past `bytes` throws Error("<what> (its budget
// of N MB exceeded)") instead. For work whose size comes from untrusted input (a checkpoint's
// config), so that an absurd size fails at once instead of hanging or
// exhausting memory. Budgets nest; each counts what is allocated inside it.
class AllocationBudget {
 public:
  AllocationBudget(int64_t bytes, std::string what);
  ~AllocationBudget();
  AllocationBudget(const AllocationBudget&) = delete;
  AllocationBudget& operator=(const AllocationBudget&) = delete;
  // Throws if `bytes` more would exceed this budget or an enclosing one.
  static void charge(int64_t bytes);

 private:
  int64_t limit_, used_ = 0;
  std::string what_;
  AllocationBudget* outer_;
};

// A cap on the bytes of all live tensors, process-wide (0: none; the
// default). A Storage that would take them past it throws MemoryLimitError
// instead of asking for pages the machine does not have: Linux grants an
// impossible malloc and kills the process when the pages are touched.
// `tapelm` sets it to the memory the machine has available when it starts.
void set_tensor_memory_limit(int64_t bytes, std::string what);
int64_t tensor_memory_limit();
const std::string& tensor_memory_limit_reason();  // the `what` it was set with

class MemoryLimitError : public Error {
 public:
  MemoryLimitError(const std::string& what, int64_t asked, int64_t live, int64_t limit)
      : Error(what), asked(asked), live(live), limit(limit) {}
  int64_t asked, live, limit;  // bytes: the refused buffer, the live tensors, the cap
};

// "1.5 GiB", "812 MiB", "64 KiB", "12 bytes": for messages about memory.
std::string format_bytes(double bytes);

struct TensorImpl {
  Shape shape;
  DType dtype = DType::f32;
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements
  bool requires_grad = false;
  bool is_leaf = true;       // false for results of recorded ops
  bool retain_grad = false;  // keep .grad on a non-leaf after backward
  std::shared_ptr<TensorImpl> grad;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}
  // A fresh, uninitialised contiguous tensor.
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
  // The same, of like's shape, dtype and device.
  static Tensor empty_like(const Tensor& like) { return empty(like.shape(), like.dtype(), like.device()); }

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  int64_t dim() const { return (int64_t)impl().shape.size(); }
  int64_t size(int64_t axis) const;  // negative axes count from the end
  int64_t numel() const { return numel_of(impl().shape); }
  DType dtype() const { return impl().dtype; }
  // Bytes of the elements (PyTorch's nbytes); 0 for an undefined tensor, so a
  // decoding state can sum its slots whether or not they are filled yet.
  int64_t nbytes() const { return defined() ? numel() * (int64_t)dtype_size(dtype()) : 0; }
  std::string str_shape() const { return shape_str(shape()); }

  Device device() const { return impl().storage ? impl().storage->device : Device::cpu; }
  bool is_cuda() const { return device() == Device::cuda; }

  // Typed host access to the elements; throws if T is not the dtype, or if
  // the tensor lives on the GPU (host code cannot read device memory).
  template <class T>
  T* data() {
    check_host<T>();
    return static_cast<T*>(impl().storage->data) + impl().offset;
  }
  template <class T>
  const T* data() const {
    check_host<T>();
    return static_cast<const T*>(impl().storage->data) + impl().offset;
  }
  // The device pointer of a cuda tensor, for kernels; throws on a cpu tensor.
  template <class T>
  T* cuda_data() const {
    check_cuda(dtype_of<T>::value);
    return static_cast<T*>(impl().storage->data) + impl().offset;
  }
  // Untyped host access (I/O); refused on a cuda tensor like data<T>().
  void* raw_data() {
    if (is_cuda()) refuse_host_access(dtype());
    return address();
  }
  const void* raw_data() const {
    if (is_cuda()) refuse_host_access(dtype());
    return address();
  }
  // The first element's address on the tensor's own device (copies between devices).
  void* address() const { return (char*)impl().storage->data + impl().offset * dtype_size(dtype()); }

  // Element i of the flattened tensor as a double (any dtype); for tests and I/O.
  double flat(int64_t i) const;
  void set_flat(int64_t i, double v);
  double item() const;  // the value of a one-element tensor
  std::vector<double> to_vector() const;

  bool requires_grad() const { return impl().requires_grad; }
  // Marks a leaf as a parameter whose gradient backward() should compute.
  Tensor& requires_grad_(bool on = true);
  bool is_leaf() const { return impl().is_leaf; }
  void retain_grad() { impl().retain_grad = true; }
  // The accumulated gradient (undefined until backward reaches this tensor).
  Tensor grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }
  void set_grad(const Tensor& gradient);
  void zero_grad() { impl().grad.reset(); }

  // Same data, cut from the tape.
  Tensor detach() const;
  // A contiguous copy with its own storage (not recorded).
  Tensor clone() const;
  // Copy converted to another dtype (not recorded; a cuda tensor only to its own dtype).
  Tensor to(DType d) const;
  // Copy on another device (not recorded; ops.h's to_device is the recorded op).
  Tensor to(Device d) const;
  // Overwrites this tensor's elements with src's (same shape; not recorded).
  void copy_(const Tensor& src);
  void fill_(double v);

  bool same_storage(const Tensor& o) const { return impl().storage == o.impl().storage; }
  TensorImpl& impl() const {
    TAPELM_CHECK(impl_ != nullptr, "tensor: use of an undefined tensor");
    return *impl_;
  }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  void check_dtype(DType want) const;
  template <class T>
  void check_host() const {
    check_dtype(dtype_of<T>::value);
    if (is_cuda()) refuse_host_access(dtype_of<T>::value);
  }
  [[noreturn]] void refuse_host_access(DType want) const;
  void check_cuda(DType want) const;
  std::shared_ptr<TensorImpl> impl_;
};

// Creation helpers. Floating dtypes default to float32.
Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu);
Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu);
Tensor from_vector(const std::vector<double>& values, const Shape& shape, DType dtype = DType::f32);
Tensor from_ints(const std::vector<int32_t>& values, const Shape& shape);
Tensor from_bools(const std::vector<bool>& values, const Shape& shape);
Tensor arange(int64_t n, DType dtype = DType::f32);
Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::f32, double mean = 0, double std = 1);
Tensor uniform(const Shape& shape, Generator& gen, double lo, double hi, DType dtype = DType::f32);
Tensor randn(const Shape& shape, DType dtype = DType::f32);  // default generator
// int32 ids drawn uniformly from [0, high) (torch.randint), e.g. random tokens.
Tensor randint(const Shape& shape, int64_t high, Generator& gen);

// Calls f(T{}) with T = float or double matching `dtype`; throws naming `op` otherwise.
template <class F>
decltype(auto) dispatch_float(const char* op, DType dtype, F&& f) {
  if (dtype == DType::f32) return f(float{});
  if (dtype == DType::f64) return f(double{});
  throw Error(fmt::format("{}: expects a float32 or float64 tensor, got {}", op, dtype_name(dtype)));
}

}  // namespace tapelm
