#include "optim/optimizer.h"

#include "autograd/cuda/kernels.h"

#include <Eigen/Core>
#include <cmath>

#include "autograd/flops.h"
#include "autograd/json_int.h"
#include "autograd/parallel.h"

namespace tapelm::optim {

std::vector<ParamGroup> decay_groups(const nn::Module& model, double weight_decay) {
  ParamGroup decay{"decay", {}, 1e-3, weight_decay}, no_decay{"no_decay", {}, 1e-3, 0.0};
  for (auto& p : model.named_parameters()) (p.decayed() ? decay : no_decay).params.push_back(p);
  return {decay, no_decay};
}

std::string describe_groups(const std::vector<ParamGroup>& groups) {
  std::string s;
  for (auto& group : groups) {
    int64_t n = 0;
    for (auto& p : group.params) n += p.tensor.numel();
    s += fmt::format("{}{}: {} tensors, {} parameters, weight_decay {}", s.empty() ? "" : "; ", group.name,
                     group.params.size(), n, group.weight_decay);
  }
  return s;
}

Tensor& Optimizer::slot(const std::string& name, const nn::NamedParameter& p) {
  Tensor& t = slots_[name][p.name];
  if (!t.defined()) t = zeros(p.tensor.shape(), p.tensor.dtype(), p.tensor.device());
  return t;
}

bool Optimizer::has_slot(const std::string& name, const std::string& param) const {
  auto it = slots_.find(name);
  return it != slots_.end() && it->second.count(param);
}

TensorFile Optimizer::state() const {
  TensorFile f;
  for (auto& [name, per_param] : slots_)
    for (auto& [param, t] : per_param) f.tensors[name + "." + param] = t;
  f.metadata["optimizer"] = kind_;
  f.metadata["step"] = std::to_string(step_);
  return f;
}

void Optimizer::load_state(const TensorFile& f) {
  auto it = f.metadata.find("optimizer");
  TAPELM_CHECK(it != f.metadata.end() && it->second == kind_,
               "optimizer state: expected a '{}' state, found optimizer '{}'", kind_,
               it == f.metadata.end() ? "" : it->second);
  auto step = f.metadata.find("step");
  TAPELM_CHECK(step != f.metadata.end(), "optimizer state: no 'step' in its metadata");
  const auto steps = json_int64(step->second);
  TAPELM_CHECK(steps && *steps >= 0, "optimizer state: 'step' is '{}', not a step count (an integer >= 0)",
               step->second);
  step_ = *steps;
  slots_.clear();
  for (auto& group : groups_)
    for (auto& p : group.params) {
      int found = 0;
      for (auto& name : slot_names_) found += f.tensors.count(name + "." + p.name) ? 1 : 0;
      if (found == 0) continue;  // never updated
      for (auto& name : slot_names_) {
        auto t = f.tensors.find(name + "." + p.name);
        TAPELM_CHECK(t != f.tensors.end() && t->second.shape() == p.tensor.shape(),
                     "optimizer state: missing or mis-shaped {} for '{}' {}", name, p.name, p.tensor.str_shape());
        slots_[name][p.name] = t->second.to(p.tensor.dtype()).to(p.tensor.device());
      }
    }
}

namespace {
template <class T>
using Vec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstVec = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// One piece of one parameter: elements [begin, begin + len) of flat tensor p.
struct Piece {
  const ParamGroup* group;
  const nn::NamedParameter* param;
  Tensor grad;
  int64_t begin, len;
};

// Cuts every parameter that has a gradient into pieces of at most kPieceElements,
// in group and parameter order, so one parallel loop covers the whole model
// (PyTorch's multi-tensor "foreach" idea): a small model's hundred tiny tensors
// would otherwise each pay for a parallel region or run on one thread.
constexpr int64_t kPieceElements = int64_t(1) << 15;
std::vector<Piece> pieces_of(const std::vector<ParamGroup>& groups) {
  std::vector<Piece> pieces;
  for (auto& group : groups)
    for (auto& p : group.params) {
      Tensor grad = p.tensor.grad();
      if (!grad.defined()) continue;
      for (int64_t b = 0; b < p.tensor.numel(); b += kPieceElements)
        pieces.push_back({&group, &p, grad, b, std::min(kPieceElements, p.tensor.numel() - b)});
    }
  return pieces;
}

// Runs body(piece) for every piece, in parallel when there is enough work.
template <class Body>
void for_each_piece(const std::vector<Piece>& pieces, Body body) {
  int64_t total = 0;
  for (auto& piece : pieces) total += piece.len;
  const int64_t n = (int64_t)pieces.size();
#pragma omp parallel for schedule(static) if (total > kParallelElements && n > 1)
  for (int64_t i = 0; i < n; ++i) body(pieces[i]);
}
}  // namespace

namespace {
// Whether the groups' parameters live on the GPU (all of them do, or none).
bool on_cuda(const std::vector<ParamGroup>& groups) {
  for (auto& group : groups)
    for (auto& p : group.params) return p.tensor.is_cuda();
  return false;
}
}  // namespace

AdamW::AdamW(std::vector<ParamGroup> groups, double b1, double b2, double e)
    : Optimizer(std::move(groups), "adamw", {"exp_avg", "exp_avg_sq"}), beta1(b1), beta2(b2), eps(e) {}

void AdamW::step() {
  ++step_;
  const double bc1 = 1 - std::pow(beta1, (double)step_);
  const double bc2_sqrt = std::sqrt(1 - std::pow(beta2, (double)step_));
  if (on_cuda(groups_)) {  // every parameter tensor in one launch (autograd/cuda/optim.cu)
    std::vector<cuda::AdamWTensor> tensors;
    for (auto& group : groups_)
      for (auto& p : group.params) {
        Tensor grad = p.tensor.grad();
        if (!grad.defined()) continue;
        Tensor m = slot("exp_avg", p), v = slot("exp_avg_sq", p);  // held by the optimizer's state
        tensors.push_back({p.tensor.cuda_data<float>(), grad.cuda_data<float>(), m.cuda_data<float>(),
                           v.cuda_data<float>(), p.tensor.numel(), (float)group.lr, (float)group.weight_decay});
        FlopCounter::add("adamw", 12 * p.tensor.numel());
      }
    cuda::adamw_step(tensors, (float)beta1, (float)beta2, (float)eps, (float)bc1, (float)bc2_sqrt);
    return;
  }
  std::vector<Piece> pieces = pieces_of(groups_);
  // The moment slots are looked up (and created) serially, before the parallel loop.
  std::vector<std::pair<Tensor, Tensor>> moments;
  for (auto& piece : pieces) moments.emplace_back(slot("exp_avg", *piece.param), slot("exp_avg_sq", *piece.param));
  for_each_piece(pieces, [&](const Piece& piece) {
    const ParamGroup& group = *piece.group;
    Tensor theta = piece.param->tensor;
    auto [m, v] = moments[&piece - pieces.data()];
    dispatch_float("AdamW", theta.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T decay = T(1 - group.lr * group.weight_decay), b1 = T(beta1), b2 = T(beta2);
      const T step_size = T(group.lr / bc1), bc2s = T(bc2_sqrt), e = T(eps);
      // Walked in L1-sized blocks, so the four statements read each element
      // from memory once.
      constexpr int64_t kBlock = 2048;
      for (int64_t s = piece.begin; s < piece.begin + piece.len; s += kBlock) {
        const int64_t n = std::min(kBlock, piece.begin + piece.len - s);
        Vec<T> th(theta.data<T>() + s, n), pm(m.data<T>() + s, n), pv(v.data<T>() + s, n);
        ConstVec<T> gr(piece.grad.data<T>() + s, n);
        // torch.optim.AdamW's order: decay θ, update the moments, then the step.
        // Eigen arrays vectorise the sqrt and the division (a plain loop did not).
        th *= decay;
        pm = b1 * pm + (T(1) - b1) * gr;
        pv = b2 * pv + (T(1) - b2) * gr * gr;
        th -= step_size * pm / (pv.sqrt() / bc2s + e);
      }
    });
  });
  for (auto& piece : pieces) FlopCounter::add("adamw", 12 * piece.len);
}

SGD::SGD(std::vector<ParamGroup> groups, double mu)
    : Optimizer(std::move(groups), "sgd", {"momentum_buffer"}), momentum(mu) {}

void SGD::step() {
  TAPELM_CHECK(!on_cuda(groups_), "sgd: parameters on cuda: SGD has no CUDA kernel yet; use --optimizer adamw");
  ++step_;
  std::vector<Piece> pieces = pieces_of(groups_);
  std::vector<char> first(pieces.size());
  std::vector<Tensor> buffers;
  for (size_t i = 0; i < pieces.size(); ++i) {
    first[i] = !has_slot("momentum_buffer", pieces[i].param->name);
    buffers.push_back(slot("momentum_buffer", *pieces[i].param));
  }
  const int64_t n_pieces = (int64_t)pieces.size();
#pragma omp parallel for schedule(static) if (n_pieces > 1)
  for (int64_t i = 0; i < n_pieces; ++i) {
    const Piece& piece = pieces[i];
    Tensor theta = piece.param->tensor, b = buffers[i];
    dispatch_float("SGD", theta.dtype(), [&](auto tag) {
      using T = decltype(tag);
      T* th = theta.data<T>();
      const T* gr = piece.grad.data<T>();
      T* pb = b.data<T>();
      const T wd = T(piece.group->weight_decay), mu = T(momentum), lr = T(piece.group->lr);
      for (int64_t j = piece.begin; j < piece.begin + piece.len; ++j) {
        T d = gr[j] + wd * th[j];
        pb[j] = first[i] ? d : mu * pb[j] + d;  // torch: the first buffer is the gradient
        th[j] -= lr * (momentum ? pb[j] : d);
      }
    });
  }
}

double clip_grad_norm(const std::vector<ParamGroup>& groups, double max_norm) {
  if (on_cuda(groups)) {  // Σ g² per tensor on the GPU (a fixed order), added in double in tensor order
    std::vector<cuda::Span> grads;
    for (auto& group : groups)
      for (auto& p : group.params)
        if (Tensor g = p.tensor.grad(); g.defined()) grads.push_back({g.cuda_data<float>(), g.numel()});
    double sq = 0;
    for (double s : cuda::sum_of_squares(grads)) sq += s;  // in parameter order, as one wait
    const double norm = std::sqrt(sq), coef = max_norm / (norm + 1e-6);
    if (coef < 1) cuda::scale_inplace(grads, (float)coef);
    return norm;
  }
  // Σ g² per piece in the gradient's precision (as torch's clip_grad_norm_
  // does per tensor; Eigen's vectorised reduction), then the pieces' sums in
  // double and in piece order: the norm does not depend on the thread count.
  std::vector<Piece> pieces = pieces_of(groups);
  std::vector<double> partial(pieces.size());
  for_each_piece(pieces, [&](const Piece& piece) {
    dispatch_float("clip_grad_norm", piece.grad.dtype(), [&](auto tag) {
      using T = decltype(tag);
      partial[&piece - pieces.data()] =
          double(ConstVec<T>(piece.grad.data<T>() + piece.begin, piece.len).square().sum());
    });
  });
  double sq = 0;
  for (double v : partial) sq += v;
  const double norm = std::sqrt(sq);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1)
    for_each_piece(pieces, [&](const Piece& piece) {
      dispatch_float("clip_grad_norm", piece.grad.dtype(), [&](auto tag) {
        using T = decltype(tag);
        Tensor grad = piece.grad;
        Vec<T>(grad.data<T>() + piece.begin, piece.len) *= T(coef);
      });
    });
  return norm;
}

}  // namespace tapelm::optim
