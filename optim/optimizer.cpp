#include "optim/optimizer.h"

#include <cmath>

#include "autograd/flops.h"

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

namespace {
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
    : Optimizer(std::move(groups)), beta1(b1), beta2(b2), eps(e) {}

void AdamW::step() {
  ++step_;
  const double bc1 = 1 - std::pow(beta1, (double)step_);
  const double bc2_sqrt = std::sqrt(1 - std::pow(beta2, (double)step_));
  for_each_param(groups_, [&](ParamGroup& g, nn::NamedParameter& p, const Tensor& grad) {
    Tensor& m = m_[p.name];
    Tensor& v = v_[p.name];
    if (!m.defined()) {
      m = zeros(p.tensor.shape(), p.tensor.dtype());
      v = zeros(p.tensor.shape(), p.tensor.dtype());
    }
    dispatch_float("AdamW", p.tensor.dtype(), [&](auto tag) {
      using T = decltype(tag);
      T* th = p.tensor.data<T>();
      const T* gr = grad.data<T>();
      T* pm = m.data<T>();
      T* pv = v.data<T>();
      const T decay = T(1 - g.lr * g.weight_decay), b1 = T(beta1), b2 = T(beta2);
      const T step_size = T(g.lr / bc1), bc2s = T(bc2_sqrt), e = T(eps);
      const int64_t n = p.tensor.numel();
#pragma omp parallel for simd if (n > (1 << 16))
      for (int64_t i = 0; i < n; ++i) {
        th[i] *= decay;
        pm[i] = b1 * pm[i] + (T(1) - b1) * gr[i];
        pv[i] = b2 * pv[i] + (T(1) - b2) * gr[i] * gr[i];
        th[i] -= step_size * pm[i] / (std::sqrt(pv[i]) / bc2s + e);
      }
    });
    FlopCounter::add("adamw", 12 * p.tensor.numel());
  });
}

TensorFile AdamW::state() const {
  TensorFile f;
  for (auto& [name, t] : m_) f.tensors["exp_avg." + name] = t;
  for (auto& [name, t] : v_) f.tensors["exp_avg_sq." + name] = t;
  f.metadata["optimizer"] = "adamw";
  f.metadata["step"] = std::to_string(step_);
  return f;
}

void AdamW::load_state(const TensorFile& f) {
  auto it = f.metadata.find("optimizer");
  TAPELM_CHECK(it != f.metadata.end() && it->second == "adamw",
               "optimizer state: not an AdamW state (optimizer = '{}')",
               it == f.metadata.end() ? "" : it->second);
  step_ = std::stoll(f.metadata.at("step"));
  m_.clear();
  v_.clear();
  for (auto& g : groups_)
    for (auto& p : g.params) {
      auto m = f.tensors.find("exp_avg." + p.name), v = f.tensors.find("exp_avg_sq." + p.name);
      if (m == f.tensors.end() && v == f.tensors.end()) continue;  // never updated
      TAPELM_CHECK(m != f.tensors.end() && v != f.tensors.end() &&
                       m->second.shape() == p.tensor.shape() && v->second.shape() == p.tensor.shape(),
                   "optimizer state: missing or mis-shaped moments for '{}' {}", p.name,
                   p.tensor.str_shape());
      m_[p.name] = m->second.to(p.tensor.dtype());
      v_[p.name] = v->second.to(p.tensor.dtype());
    }
}

SGD::SGD(std::vector<ParamGroup> groups, double mu) : Optimizer(std::move(groups)), momentum(mu) {}

void SGD::step() {
  ++step_;
  for_each_param(groups_, [&](ParamGroup& g, nn::NamedParameter& p, const Tensor& grad) {
    Tensor& b = buf_[p.name];
    const bool first = !b.defined();
    if (first) b = zeros(p.tensor.shape(), p.tensor.dtype());
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

TensorFile SGD::state() const {
  TensorFile f;
  for (auto& [name, t] : buf_) f.tensors["momentum_buffer." + name] = t;
  f.metadata["optimizer"] = "sgd";
  f.metadata["step"] = std::to_string(step_);
  return f;
}

void SGD::load_state(const TensorFile& f) {
  auto it = f.metadata.find("optimizer");
  TAPELM_CHECK(it != f.metadata.end() && it->second == "sgd", "optimizer state: not an SGD state");
  step_ = std::stoll(f.metadata.at("step"));
  buf_.clear();
  for (auto& [k, t] : f.tensors)
    if (k.rfind("momentum_buffer.", 0) == 0) buf_[k.substr(16)] = t;
}

double clip_grad_norm(const std::vector<ParamGroup>& groups, double max_norm) {
  double sq = 0;
  for (auto& g : groups)
    for (auto& p : g.params) {
      Tensor grad = p.tensor.grad();
      if (!grad.defined()) continue;
      dispatch_float("clip_grad_norm", grad.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* pg = grad.data<T>();
        for (int64_t i = 0; i < grad.numel(); ++i) sq += (double)pg[i] * pg[i];
      });
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
          for (int64_t i = 0; i < grad.numel(); ++i) pg[i] *= T(coef);
        });
      }
  return norm;
}

}  // namespace tapelm::optim
