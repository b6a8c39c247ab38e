#include "autograd/gradcheck.h"

#include <cmath>

#include "autograd/ops.h"

namespace tapelm {

GradcheckResult gradcheck(const GradcheckFn& f, const std::vector<Tensor>& inputs, const GradcheckOptions& opt) {
  for (const Tensor& x : inputs)
    TAPELM_CHECK(!x.defined() || !is_floating(x.dtype()) || x.dtype() == DType::f64,
                 "gradcheck: inputs must be float64, got {} {}", dtype_name(x.dtype()), x.str_shape());
  clear_tape();
  Tensor projection;
  auto scalar_of = [&](const Tensor& y) -> Tensor {
    if (!projection.defined()) {
      Generator gen(opt.seed);
      projection = randn(y.shape(), gen, DType::f64);
    }
    TAPELM_CHECK(y.shape() == projection.shape(), "gradcheck: output shape changed from {} to {}",
                 projection.str_shape(), y.str_shape());
    return sum(mul(y, projection));
  };

  // Analytic gradients.
  for (const Tensor& x : inputs)
    if (x.defined()) const_cast<Tensor&>(x).zero_grad();
  Tensor loss = scalar_of(f(inputs));
  backward(loss);

  GradcheckResult result;
  double worst_excess = -1;
  for (size_t k = 0; k < inputs.size(); ++k) {
    Tensor x = inputs[k];
    if (!x.defined() || !x.requires_grad()) continue;
    Tensor analytic = x.grad();
    double* px = x.data<double>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double saved = px[i];
      double lp, lm;
      {
        NoGradGuard no_grad;
        px[i] = saved + opt.eps;
        lp = scalar_of(f(inputs)).item();
        px[i] = saved - opt.eps;
        lm = scalar_of(f(inputs)).item();
        px[i] = saved;
      }
      const double numeric = (lp - lm) / (2 * opt.eps);
      const double a = analytic.defined() ? analytic.flat(i) : 0.0;
      const double err = std::fabs(a - numeric);
      const double allowed = opt.atol + opt.rtol * std::fabs(numeric);
      result.worst_abs_error = std::max(result.worst_abs_error, err);
      if (err - allowed > worst_excess) {
        worst_excess = err - allowed;
        result.report = fmt::format(
            "worst element: input {} {} flat index {}: analytic {:.12g}, numeric {:.12g}, "
            "|diff| {:.3g} vs allowed {:.3g} (eps {}, atol {}, rtol {})",
            k, x.str_shape(), i, a, numeric, err, allowed, opt.eps, opt.atol, opt.rtol);
      }
      if (err > allowed) result.ok = false;
    }
  }
  if (result.report.empty()) result.report = "no input requires grad";
  return result;
}

}  // namespace tapelm
