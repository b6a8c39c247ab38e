#include "optim/optimizer.h"

#include <Eigen/Core>
#include <cmath>

#include "autograd/flops.h"
#include "autograd/parallel.h"

namespace tapelm::optim {

std::vector<ParamGroup> decay_groups(const nn::Module& model, double weight_decay) {
  ParamGroup decay{"decay", {}, 1e-3, weight_decay}, no_decay{"no_decay", {}, 1e-3, 0.0};
  for (auto& p : model.named_parameters()) (p.is_matrix() ? decay : no_decay).params.push_back(p);
  return {decay, no_decay};
}

std::string describe_groups(const std::vector<ParamGroup>& groups) {
  std::string s;
  for (auto& g : groups) {
    int64_t n = 0;
    for (auto& p : g.params) n += p.tensor.numel();
    s += fmt::format("{}{}: {} tensors, {} parameters, weight_decay {}", s.empty() ? "" : "; ",
                     g.name, g.params.size(), n, g.weight_decay);
  }
  return s;
}

Tensor& Optimizer::slot(const std::string& name, const nn::NamedParameter& p) {
  Tensor& t = slots_[name][p.name];
  if (!t.defined()) t = zeros(p.tensor.shape(), p.tensor.dtype());
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
  TAPELM_CHECK(it != f.metadata.end() && it->second == kind_, "optimizer state: expected a '{}' state, found optimizer '{}'",
               kind_, it == f.metadata.end() ? "" : it->second);
  step_ = std::stoll(f.metadata.at("step"));
  slots_.clear();
  for (auto& g : groups_)
    for (auto& p : g.params) {
      int found = 0;
      for (auto& name : slot_names_) found += f.tensors.count(name + "." + p.name) ? 1 : 0;
      if (found == 0) continue;  // never updated
      for (auto& name : slot_names_) {
        auto t = f.tensors.find(name + "." + p.name);
        TAPELM_CHECK(t != f.tensors.end() && t->second.shape() == p.tensor.shape(),
                     "optimizer state: missing or mis-shaped {} for '{}' {}", name, p.name, p.tensor.str_shape());
        slots_[name][p.name] = t->second.to(p.tensor.dtype());
      }
    }
}

namespace {
template <class T>
using Vec = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <class T>
using ConstVec = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// Runs f(T* θ, const T* g, int64_t n, state tensors...) with the parameter's dtype.
template <class F>
void for_each_param(std::vector<ParamGroup>& groups, F f) {
  for (auto& g : groups)
    for (auto& p : g.params) {
      Tensor grad = p.tensor.grad();
      if (!grad.defined()) continue;
      f(g, p, grad);
    }
}
}  // namespace

AdamW::AdamW(std::vector<ParamGroup> groups, double b1, double b2, double e)
    : Optimizer(std::move(groups), "adamw", {"exp_avg", "exp_avg_sq"}), beta1(b1), beta2(b2), eps(e) {}

void AdamW::step() {
  ++step_;
  const double bc1 = 1 - std::pow(beta1, (double)step_);
  const double bc2_sqrt = std::sqrt(1 - std::pow(beta2, (double)step_));
  for_each_param(groups_, [&](ParamGroup& g, nn::NamedParameter& p, const Tensor& grad) {
    Tensor& m = slot("exp_avg", p);
    Tensor& v = slot("exp_avg_sq", p);
    dispatch_float("AdamW", p.tensor.dtype(), [&](auto tag) {
      using T = decltype(tag);
      const T decay = T(1 - g.lr * g.weight_decay), b1 = T(beta1), b2 = T(beta2);
      const T step_size = T(g.lr / bc1), bc2s = T(bc2_sqrt), e = T(eps);
      T *pth = p.tensor.data<T>(), *pmv = m.data<T>(), *pvv = v.data<T>();
      const T* pg = grad.data<T>();
      // Each thread takes a contiguous part and walks it in L1-sized blocks,
      // so the four statements read each element from memory once.
      constexpr int64_t kBlock = 2048;
      parallel_chunks(p.tensor.numel(), [&](int64_t begin, int64_t len) {
        for (int64_t s = begin; s < begin + len; s += kBlock) {
          const int64_t n = std::min(kBlock, begin + len - s);
          Vec<T> th(pth + s, n), pm(pmv + s, n), pv(pvv + s, n);
          ConstVec<T> gr(pg + s, n);
          // torch.optim.AdamW's order: decay θ, update the moments, then the step.
          // Eigen arrays vectorise the sqrt and the division (a plain loop did not).
          th *= decay;
          pm = b1 * pm + (T(1) - b1) * gr;
          pv = b2 * pv + (T(1) - b2) * gr * gr;
          th -= step_size * pm / (pv.sqrt() / bc2s + e);
        }
      });
    });
    FlopCounter::add("adamw", 12 * p.tensor.numel());
  });
}

SGD::SGD(std::vector<ParamGroup> groups, double mu) : Optimizer(std::move(groups), "sgd", {"momentum_buffer"}), momentum(mu) {}

void SGD::step() {
  ++step_;
  for_each_param(groups_, [&](ParamGroup& g, nn::NamedParameter& p, const Tensor& grad) {
    const bool first = !has_slot("momentum_buffer", p.name);
    Tensor& b = slot("momentum_buffer", p);
    dispatch_float("SGD", p.tensor.dtype(), [&](auto tag) {
      using T = decltype(tag);
      T* th = p.tensor.data<T>();
      const T* gr = grad.data<T>();
      T* pb = b.data<T>();
      const T wd = T(g.weight_decay), mu = T(momentum), lr = T(g.lr);
      for (int64_t i = 0; i < p.tensor.numel(); ++i) {
        T d = gr[i] + wd * th[i];
        pb[i] = first ? d : mu * pb[i] + d;  // torch: the first buffer is the gradient
        th[i] -= lr * (momentum ? pb[i] : d);
      }
    });
  });
}

double clip_grad_norm(const std::vector<ParamGroup>& groups, double max_norm) {
  // Σ g² in double over fixed blocks summed in block order, so the norm does
  // not depend on the thread count.
  constexpr int64_t kBlock = int64_t(1) << 16;
  double sq = 0;
  std::vector<double> partial;
  for (auto& g : groups)
    for (auto& p : g.params) {
      Tensor grad = p.tensor.grad();
      if (!grad.defined()) continue;
      const int64_t n = grad.numel(), blocks = (n + kBlock - 1) / kBlock;
      partial.assign(blocks, 0.0);
      dispatch_float("clip_grad_norm", grad.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* pg = grad.data<T>();
#pragma omp parallel for schedule(static) if (blocks > 1)
        for (int64_t b = 0; b < blocks; ++b)
          partial[b] = ConstVec<T>(pg + b * kBlock, std::min(kBlock, n - b * kBlock)).template cast<double>().square().sum();
      });
      for (double v : partial) sq += v;
    }
  const double norm = std::sqrt(sq);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1)
    for (auto& g : groups)
      for (auto& p : g.params) {
        Tensor grad = p.tensor.grad();
        if (!grad.defined()) continue;
        dispatch_float("clip_grad_norm", grad.dtype(), [&](auto tag) {
          using T = decltype(tag);
          T* pg = grad.data<T>();
          parallel_chunks(grad.numel(), [&](int64_t begin, int64_t len) { Vec<T>(pg + begin, len) *= T(coef); });
        });
      }
  return norm;
}

}  // namespace tapelm::optim
