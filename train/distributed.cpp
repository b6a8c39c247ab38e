#include "train/distributed.h"

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "nn/module.h"

#ifdef TAPELM_HAVE_MPI
#define OMPI_SKIP_MPICXX 1  // MPI's C API only: the deprecated C++ bindings need libmpi_cxx
#include <mpi.h>
#endif

namespace tapelm::train {

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && std::atoi(v) > 0 ? std::atoi(v) : fallback;
}

bool g_mpi_started = false;
bool g_failure_agreed = false;

}  // namespace

int launched_world_size() { return env_int("OMPI_COMM_WORLD_SIZE", 1); }
int launched_rank() {
  const char* v = std::getenv("OMPI_COMM_WORLD_RANK");
  return v ? std::atoi(v) : 0;
}
int launched_local_size() { return env_int("OMPI_COMM_WORLD_LOCAL_SIZE", 1); }

Communicator& Communicator::world() {
  static Communicator* world = [] {
    const int size = launched_world_size();
    if (size == 1) return new Communicator(0, 1);
#ifdef TAPELM_HAVE_MPI
    // FUNNELED: only the main thread calls MPI (never inside an OpenMP region).
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    g_mpi_started = true;
    int rank = 0, n = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    return new Communicator(rank, n);
#else
    throw Error(
        fmt::format("this tapelm was built without MPI, so it cannot train as one of {} ranks; install libopenmpi-dev "
                    "and openmpi-bin and rebuild (./dev.sh build), or run it without mpirun",
                    size));
#endif
  }();
  return *world;
}

bool Communicator::running() { return g_mpi_started; }

void Communicator::finalize() {
#ifdef TAPELM_HAVE_MPI
  if (g_mpi_started) MPI_Finalize();
  g_mpi_started = false;
#endif
}

void Communicator::abort(int code) {
#ifdef TAPELM_HAVE_MPI
  if (g_mpi_started) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

void Communicator::sum(float* values, int64_t n) const {
#ifdef TAPELM_HAVE_MPI
  if (size_ > 1) MPI_Allreduce(MPI_IN_PLACE, values, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
#endif
}

void Communicator::sum(double* values, int64_t n) const {
#ifdef TAPELM_HAVE_MPI
  if (size_ > 1) MPI_Allreduce(MPI_IN_PLACE, values, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
#endif
}

std::vector<uint64_t> Communicator::all_gather(const std::vector<uint64_t>& mine) const {
  std::vector<uint64_t> all(mine.size() * size_);
  std::copy(mine.begin(), mine.end(), all.begin());
#ifdef TAPELM_HAVE_MPI
  if (size_ > 1)
    MPI_Allgather(mine.data(), (int)mine.size(), MPI_UINT64_T, all.data(), (int)mine.size(), MPI_UINT64_T,
                  MPI_COMM_WORLD);
#endif
  return all;
}

void Communicator::agree(const std::string& error) const {
  int first = error.empty() ? size_ : rank_;  // the lowest failing rank, or size_ if none failed
#ifdef TAPELM_HAVE_MPI
  if (size_ > 1) MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
#endif
  if (first == size_) return;
  g_failure_agreed = true;
  if (first != rank_) throw StoppedByAnotherRank{};
  throw Error(rank_ == 0 ? error : fmt::format("{} (on rank {} of {})", error, rank_, size_));
}

bool Communicator::failure_agreed() { return g_failure_agreed; }

uint64_t weights_hash(const nn::Module& model) {
  // FNV-1a over the raw bytes, eight at a time (plus the tail).
  uint64_t h = 0xcbf29ce484222325ULL;
  auto mix = [&h](uint64_t word) { h = (h ^ word) * 0x100000001b3ULL; };
  for (auto& p : model.named_parameters()) {
    const auto* bytes = static_cast<const unsigned char*>(p.tensor.raw_data());
    const int64_t n = bytes_of(p.tensor.shape(), p.tensor.dtype());
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t word;
      std::memcpy(&word, bytes + i, 8);
      mix(word);
    }
    for (; i < n; ++i) mix(bytes[i]);
  }
  return h;
}

std::vector<uint64_t> check_identical_weights(const Communicator& comm, const nn::Module& model,
                                              const std::string& when) {
  if (comm.size() == 1) return {};
  const std::vector<uint64_t> hashes = comm.all_gather({weights_hash(model)});
  std::string error;
  for (int r = 1; r < comm.size() && error.empty(); ++r)
    if (hashes[r] != hashes[0])
      error = fmt::format(
          "data parallel: the weights of rank {} differ from rank 0's {} (hash {:016x}, not {:016x}): "
          "the ranks no longer train one model",
          r, when, hashes[r], hashes[0]);
  // Every rank holds the same hashes, so rank 0 (the lowest failing) says it.
  comm.agree(comm.root() ? error : "");
  return hashes;
}

GradientAllReduce::GradientAllReduce(const Communicator& comm, std::vector<Tensor> params, int64_t bucket_bytes)
    : comm_(comm), params_(std::move(params)), bucket_floats_(std::max<int64_t>(bucket_bytes / 4, 1)) {}

void GradientAllReduce::run() {
  if (comm_.size() == 1) return;
  const auto t0 = std::chrono::steady_clock::now();
  struct Piece {
    float* data;
    int64_t len;
  };
  std::vector<Piece> bucket;
  int64_t bucket_len = 0;
  // One MPI_Allreduce per bucket: in place for a single piece, else through
  // one flat buffer (packed and unpacked in parallel).
  auto flush = [&] {
    if (bucket.size() == 1) {
      comm_.sum(bucket[0].data, bucket[0].len);
    } else if (bucket.size() > 1) {
      buffer_.resize(bucket_len);
      std::vector<int64_t> offset(bucket.size() + 1, 0);
      for (size_t i = 0; i < bucket.size(); ++i) offset[i + 1] = offset[i] + bucket[i].len;
      const int64_t n = (int64_t)bucket.size();
#pragma omp parallel for schedule(dynamic)
      for (int64_t i = 0; i < n; ++i) std::memcpy(buffer_.data() + offset[i], bucket[i].data, bucket[i].len * 4);
      comm_.sum(buffer_.data(), bucket_len);
#pragma omp parallel for schedule(dynamic)
      for (int64_t i = 0; i < n; ++i) std::memcpy(bucket[i].data, buffer_.data() + offset[i], bucket[i].len * 4);
    }
    bucket.clear();
    bucket_len = 0;
  };
  for (const Tensor& p : params_) {
    Tensor grad = p.grad();
    if (!grad.defined()) continue;
    TAPELM_CHECK(grad.dtype() == DType::f32, "data parallel: gradients must be float32, got {} of shape {}",
                 dtype_name(grad.dtype()), shape_str(grad.shape()));
    float* data = grad.data<float>();
    const int64_t len = grad.numel();
    if (len >= bucket_floats_) {  // big: in place, a bucket-sized piece at a time
      flush();
      for (int64_t begin = 0; begin < len; begin += bucket_floats_)
        comm_.sum(data + begin, std::min(bucket_floats_, len - begin));
      continue;
    }
    if (bucket_len + len > bucket_floats_) flush();
    bucket.push_back({data, len});
    bucket_len += len;
  }
  flush();
  seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace tapelm::train
