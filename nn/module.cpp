#include "nn/module.h"

#include <set>

namespace tapelm::nn {

Tensor Module::register_parameter(const std::string& name, Tensor t, bool weight_decay) {
  t.requires_grad_(true);
  params_.push_back({name, t, weight_decay});
  return t;
}

void Module::tie_parameter(const std::string& name, const Tensor& t) {
  for (NamedParameter& p : params_)
    if (p.name == name) {
      TAPELM_CHECK(p.tensor.shape() == t.shape(), "tie_parameter: '{}' is {} but the tied tensor is {}", name,
                   p.tensor.str_shape(), t.str_shape());
      p.tensor = t;
      return;
    }
  throw Error(fmt::format("tie_parameter: no parameter named '{}'", name));
}

void Module::collect(const std::string& prefix, std::vector<NamedParameter>& out) const {
  for (const NamedParameter& p : params_) out.push_back({prefix + p.name, p.tensor, p.weight_decay});
  for (auto& [name, child] : children_) child->collect(prefix + name + ".", out);
}

std::vector<NamedParameter> Module::state_dict() const {
  std::vector<NamedParameter> out;
  collect("", out);
  return out;
}

std::vector<NamedParameter> Module::named_parameters() const {
  std::vector<NamedParameter> out;
  std::set<const TensorImpl*> seen;
  for (auto& p : state_dict())
    if (seen.insert(p.tensor.impl_ptr().get()).second) out.push_back(p);
  return out;
}

void Module::load_state_dict(const std::map<std::string, Tensor>& values, bool strict) {
  std::set<std::string> used;
  for (auto& p : state_dict()) {
    auto it = values.find(p.name);
    TAPELM_CHECK(it != values.end(), "load_state_dict: missing parameter '{}' {}", p.name, p.tensor.str_shape());
    TAPELM_CHECK(it->second.shape() == p.tensor.shape(),
                 "load_state_dict: parameter '{}' has shape {} in the file but {} in the model", p.name,
                 it->second.str_shape(), p.tensor.str_shape());
    const auto floating = [](DType t) { return t == DType::f32 || t == DType::f64; };
    TAPELM_CHECK(it->second.dtype() == p.tensor.dtype() || (floating(it->second.dtype()) && floating(p.tensor.dtype())),
                 "load_state_dict: parameter '{}' is {} in the file but {} in the model", p.name,
                 dtype_name(it->second.dtype()), dtype_name(p.tensor.dtype()));
    p.tensor.copy_(it->second);
    used.insert(p.name);
  }
  if (strict)
    for (auto& [name, t] : values)
      TAPELM_CHECK(used.count(name), "load_state_dict: unexpected parameter '{}' {}", name, t.str_shape());
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& p : named_parameters()) n += p.tensor.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::zero_grad() {
  for (auto& p : named_parameters()) p.tensor.zero_grad();
}

void Module::to(DType dtype) {
  for (auto& p : named_parameters()) {
    if (p.tensor.dtype() == dtype) continue;
    Tensor converted = p.tensor.to(dtype);
    TensorImpl& impl = p.tensor.impl();  // swap storage in place: every alias follows
    impl.storage = converted.impl().storage;
    impl.offset = 0;
    impl.dtype = dtype;
    impl.grad.reset();
  }
}

void Module::to(Device device) {
  for (auto& p : named_parameters()) {
    if (p.tensor.device() == device) continue;
    Tensor moved = p.tensor.to(device);
    TensorImpl& impl = p.tensor.impl();  // swap storage in place: every alias follows
    impl.storage = moved.impl().storage;
    impl.offset = 0;
    impl.grad.reset();
  }
}

std::vector<std::pair<std::string, const Module*>> Module::named_modules() const {
  std::vector<std::pair<std::string, const Module*>> out{{"", this}};
  for (auto& [name, child] : children_)
    for (auto& [sub, m] : child->named_modules()) out.emplace_back(sub.empty() ? name : name + "." + sub, m);
  return out;
}

}  // namespace tapelm::nn
