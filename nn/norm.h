// Normalisation layers over the last axis.
//   LayerNorm (Ba et al. 2016):  (x − μ)/√(σ² + ε) · γ + β   (β optional)
//   RMSNorm (Zhang & Sennrich 2019):  x/√(mean(x²) + ε) · γ
//   DyT (Zhu et al. 2025, "Transformers without Normalization"): tanh(αx) · γ + β,
//     α a learned scalar (init 0.5)
//   ScaleNorm (Nguyen & Salazar 2019; FLASH-pytorch's norm): x / max(‖x‖·d^−½, ε) · g,
//     g one learned scalar (init 1)
#pragma once
#include <memory>
#include <string>

#include "nn/constant_tensor.h"
#include "nn/module.h"

namespace tapelm::nn {

class Norm : public Module {
 public:
  virtual Tensor forward(const Tensor& x) const = 0;
};

class LayerNorm : public Norm {
 public:
  LayerNorm(int64_t dim, bool bias, double eps = 1e-5);
  Tensor forward(const Tensor& x) const override;
  Tensor weight, bias;
  double eps;
};

class RMSNorm : public Norm {
 public:
  // elementwise_affine false: no weight (γ = 1), as fla's o_norm of YOCO's gated retention.
  explicit RMSNorm(int64_t dim, double eps = 1e-5, bool elementwise_affine = true);
  Tensor forward(const Tensor& x) const override;
  Tensor weight;  // undefined without elementwise_affine
  double eps;

 private:
  ConstantTensor unit_;  // γ = 1 without elementwise_affine
};

class DyT : public Norm {
 public:
  DyT(int64_t dim, bool bias, double alpha_init = 0.5);
  Tensor forward(const Tensor& x) const override;
  Tensor alpha, weight, bias;
};

class ScaleNorm : public Norm {
 public:
  explicit ScaleNorm(double eps = 1e-5);
  Tensor forward(const Tensor& x) const override;
  Tensor g;  // FLASH-pytorch's name
  double eps;
};

// kind: "layernorm", "rmsnorm", "dyt" or "scalenorm"; eps is ignored by DyT.
std::shared_ptr<Norm> make_norm(const std::string& kind, int64_t dim, bool bias, double eps = 1e-5);

}  // namespace tapelm::nn
