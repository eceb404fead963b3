// Closed-form score and Hessian of a noised Gaussian mixture, computed with
// Eigen in float64 independently of the TorchScript model (docs/DESIGN.md §2):
//   p_t = Σ w_i N(√ᾱ·μ_i, S_i),  S_i = ᾱ·Σ_i + σ²·I,
//   ∇² log p = Σ r_i(−S_i⁻¹) + Σ r_i g_i g_iᵀ − (Σ r_i g_i)(Σ r_i g_i)ᵀ,
//   g_i = −S_i⁻¹(x − √ᾱ·μ_i), r_i the responsibilities.
#ifndef MEMAUDIT_TESTS_MIXTURE_ORACLE_H_
#define MEMAUDIT_TESTS_MIXTURE_ORACLE_H_

#include <Eigen/Dense>
#include <vector>

#include "tools/toy/gaussian_mixture.h"

namespace memaudit::testing {

struct MixtureDerivatives {
  Eigen::VectorXd score;
  Eigen::MatrixXd hessian;
};

// `allowed` (empty: all) restricts the mixture to a subset of components, as
// a class condition does.
MixtureDerivatives ExactMixtureDerivatives(const toy::GaussianMixture& mixture, double alpha_bar,
                                           const Eigen::VectorXd& x,
                                           const std::vector<bool>& allowed = {});

}  // namespace memaudit::testing

#endif  // MEMAUDIT_TESTS_MIXTURE_ORACLE_H_
