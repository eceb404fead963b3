#include "tests/mixture_oracle.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

namespace memaudit::testing {

MixtureDerivatives ExactMixtureDerivatives(const toy::GaussianMixture& mixture, double alpha_bar,
                                           const Eigen::VectorXd& x,
                                           const std::vector<bool>& allowed) {
  const int64_t k = mixture.size();
  const int64_t d = mixture.dim();
  const at::Tensor means = mixture.means.to(at::kDouble).contiguous();
  const at::Tensor covariances = mixture.covariances.to(at::kDouble).contiguous();
  const at::Tensor weights = mixture.weights.to(at::kDouble).contiguous();
  std::vector<Eigen::VectorXd> gradients(k);
  std::vector<Eigen::MatrixXd> precisions(k);
  std::vector<double> log_terms(k, -std::numeric_limits<double>::infinity());
  double max_log = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < k; ++i) {
    if (!allowed.empty() && !allowed[i]) continue;
    Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> sigma(
        covariances[i].data_ptr<double>(), d, d);
    Eigen::Map<const Eigen::VectorXd> mu(means[i].data_ptr<double>(), d);
    Eigen::MatrixXd s = alpha_bar * sigma + (1.0 - alpha_bar) * Eigen::MatrixXd::Identity(d, d);
    Eigen::LLT<Eigen::MatrixXd> llt(s);
    precisions[i] = llt.solve(Eigen::MatrixXd::Identity(d, d));
    Eigen::VectorXd diff = x - std::sqrt(alpha_bar) * mu;
    gradients[i] = -precisions[i] * diff;
    const double log_det = 2.0 * llt.matrixL().toDenseMatrix().diagonal().array().log().sum();
    log_terms[i] = std::log(weights[i].item<double>()) - 0.5 * (diff.dot(-gradients[i]) + log_det);
    max_log = std::max(max_log, log_terms[i]);
  }
  std::vector<double> r(k, 0.0);
  double total = 0.0;
  for (int64_t i = 0; i < k; ++i) {
    if (std::isinf(log_terms[i])) continue;
    r[i] = std::exp(log_terms[i] - max_log);
    total += r[i];
  }
  MixtureDerivatives result;
  result.score = Eigen::VectorXd::Zero(d);
  result.hessian = Eigen::MatrixXd::Zero(d, d);
  Eigen::MatrixXd second_moment = Eigen::MatrixXd::Zero(d, d);
  for (int64_t i = 0; i < k; ++i) {
    if (r[i] == 0.0) continue;
    const double ri = r[i] / total;
    result.score += ri * gradients[i];
    result.hessian -= ri * precisions[i];
    second_moment += ri * gradients[i] * gradients[i].transpose();
  }
  result.hessian += second_moment - result.score * result.score.transpose();
  return result;
}

}  // namespace memaudit::testing
