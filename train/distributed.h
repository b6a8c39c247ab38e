// Data parallelism over MPI (Open MPI): `mpirun -np R tapelm train ...`.
//
// Every rank holds the whole model and draws the same global batch from the
// same generator, then trains on its own rows of it (rank r takes rows
// [r·B/R, (r+1)·B/R)). Each rank weights its mean loss by its share of the
// batch's target tokens, so after backward the gradients summed over the ranks
// (GradientAllReduce, MPI_Allreduce in flat buckets) are exactly the gradient
// of the global batch's mean loss, as one process would compute it up to the
// order of the sum. Every rank then takes the same optimizer step, so the
// weights stay identical (checked by hash at the start, at every checkpoint
// and at the end). Rank 0 alone prints, logs and writes checkpoints.
//
// Without a launcher (no OMPI_COMM_WORLD_SIZE in the environment) MPI is never
// initialised and every collective is the identity: a single process runs
// exactly as before. A build without MPI runs single-process and refuses to
// run as one rank of many.
#pragma once
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "autograd/tensor.h"

namespace tapelm::nn {
class Module;
}

namespace tapelm::train {

// The launcher's view, read from the environment before MPI starts:
// ranks in the job (1 without a launcher) and this rank's number.
int launched_world_size();
int launched_rank();
// Ranks of the job on this machine (1 without a launcher).
int launched_local_size();

// Thrown on the ranks that stop because another rank reported an error that
// every rank learned of (that rank prints it): main exits with `code`
// without printing anything.
struct StoppedByAnotherRank : std::exception {
  int code = 1;
  const char* what() const noexcept override { return "stopped because another rank failed"; }
};

class Communicator {
 public:
  // The job's communicator: MPI starts on the first call when a launcher
  // started this process with more than one rank.
  static Communicator& world();
  // Ends MPI (collective: every rank calls it once, at exit).
  static void finalize();
  // Ends every rank of the job at once, after this rank printed why.
  [[noreturn]] static void abort(int code);
  // Whether MPI is running (a job of two or more ranks).
  static bool running();

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool root() const { return rank_ == 0; }

  // In-place sums over the ranks (no-ops on one rank).
  void sum(float* values, int64_t n) const;
  void sum(double* values, int64_t n) const;
  // Every rank's `mine` (each the same length), rank by rank.
  std::vector<uint64_t> all_gather(const std::vector<uint64_t>& mine) const;

  // Every rank calls this at the same point with its error (empty: none).
  // If any rank failed, the lowest failing rank throws its Error (to be
  // printed) and every other rank throws StoppedByAnotherRank.
  void agree(const std::string& error) const;
  // Whether the error being thrown came out of agree() (every rank knows),
  // rather than from one rank alone (then abort() must end the others).
  static bool failure_agreed();

 private:
  Communicator(int rank, int size) : rank_(rank), size_(size) {}
  int rank_ = 0, size_ = 1;
};

// A 64-bit hash of every parameter's bytes, in the model's parameter order:
// equal on two ranks only if their weights are bit-identical.
uint64_t weights_hash(const nn::Module& model);

// Every rank's weights_hash (rank by rank); if any differs from rank 0's,
// an agreed error (see Communicator::agree) naming the rank and `when`.
std::vector<uint64_t> check_identical_weights(const Communicator& comm, const nn::Module& model,
                                              const std::string& when);

// Sums the parameters' gradients over the ranks after backward, in flat
// buckets of at most `bucket_bytes` (PyTorch DDP's bucket_cap_mb is 25 MB):
// small gradients are packed into one buffer per bucket, a gradient bigger
// than a bucket is reduced in place, piece by piece. Parameters without a
// gradient (not reached by backward) are left out on every rank alike.
class GradientAllReduce {
 public:
  GradientAllReduce(const Communicator& comm, std::vector<Tensor> params, int64_t bucket_bytes = int64_t(25) << 20);
  void run();
  double seconds() const { return seconds_; }  // total time inside run()

 private:
  const Communicator& comm_;
  std::vector<Tensor> params_;
  int64_t bucket_floats_;
  std::vector<float> buffer_;
  double seconds_ = 0;
};

}  // namespace tapelm::train
