#include "core/model/denoiser.h"

#include <ATen/ATen.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace memaudit {

const char* ScoreKindName(ScoreKind kind) {
  switch (kind) {
    case ScoreKind::kConditional:
      return "conditional";
    case ScoreKind::kUnconditional:
      return "unconditional";
    case ScoreKind::kGuided:
      return "guided";
    case ScoreKind::kDifference:
      return "difference";
  }
  return "unknown";
}

Denoiser::Denoiser(std::shared_ptr<const DiffusionNetwork> network) : network_(std::move(network)) {
  const std::vector<double>& alpha_bars = network_->schedule().alpha_bars();
  alpha_bars_ = at::tensor(at::ArrayRef<double>(alpha_bars), at::kDouble).to(network_->device());
}

std::pair<at::Tensor, at::Tensor> Denoiser::Coefficients(const at::Tensor& t,
                                                         const at::Tensor& x) const {
  at::Tensor alpha_bar = alpha_bars_.index_select(0, t.to(alpha_bars_.device()));
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  at::Tensor sqrt_alpha_bar = alpha_bar.sqrt().to(x.scalar_type()).view(shape);
  at::Tensor sigma = (1.0 - alpha_bar).sqrt().to(x.scalar_type()).view(shape);
  return {sqrt_alpha_bar, sigma};
}

at::Tensor Denoiser::EpsilonFromOutput(const at::Tensor& out, const at::Tensor& x,
                                       const at::Tensor& t) const {
  switch (network_->config().prediction_type()) {
    case v1::V_PREDICTION: {
      auto [sqrt_alpha_bar, sigma] = Coefficients(t, x);
      return sqrt_alpha_bar * out + sigma * x;
    }
    case v1::SAMPLE: {
      auto [sqrt_alpha_bar, sigma] = Coefficients(t, x);
      return (x - sqrt_alpha_bar * out) / sigma;
    }
    case v1::SCORE: {
      auto [sqrt_alpha_bar, sigma] = Coefficients(t, x);
      return -sigma * out;
    }
    default:
      return out;
  }
}

at::Tensor Denoiser::Epsilon(const at::Tensor& x, const at::Tensor& t,
                             const at::Tensor& condition) const {
  return EpsilonFromOutput(network_->Forward(x, t, condition), x, t);
}

at::Tensor Denoiser::GuidedEpsilon(const at::Tensor& x, const at::Tensor& t,
                                   const at::Tensor& condition, double guidance) const {
  if (!network_->conditional() || guidance == 1.0) return Epsilon(x, t, condition);
  if (guidance == 0.0) return Epsilon(x, t, network_->NullCondition(x.size(0)));
  const auto [conditional, unconditional] = ConditionalAndNullEpsilon(x, t, condition);
  return unconditional + guidance * (conditional - unconditional);
}

std::pair<at::Tensor, at::Tensor> Denoiser::ConditionalAndNullEpsilon(
    const at::Tensor& x, const at::Tensor& t, const at::Tensor& condition) const {
  const int64_t batch = x.size(0);
  at::Tensor both = Epsilon(at::cat({x, x}), at::cat({t, t}),
                            at::cat({condition, network_->NullCondition(batch)}));
  return {both.narrow(0, 0, batch), both.narrow(0, batch, batch)};
}

absl::StatusOr<at::Tensor> Denoiser::PrepareConditions(const at::Tensor& conditions,
                                                       int64_t batch) const {
  const v1::Conditioning& config = network_->config().conditioning();
  const at::Device device = network_->device();
  switch (config.kind()) {
    case v1::Conditioning::CLASS_LABEL: {
      if (!conditions.defined()) return network_->NullCondition(batch);
      if (conditions.dim() != 1 || conditions.size(0) != batch) {
        return absl::InvalidArgumentError(
            absl::StrCat("condition: expected ", batch, " class labels, got a tensor of shape [",
                         absl::StrJoin(conditions.sizes(), ", "), "]"));
      }
      at::Tensor labels = conditions.to(at::kLong);
      const int64_t low = labels.min().item<int64_t>();
      const int64_t high = labels.max().item<int64_t>();
      if (low < 0 || high > config.num_classes()) {
        return absl::InvalidArgumentError(
            absl::StrCat("condition: class labels must be in [0, ", config.num_classes(), "] (",
                         config.num_classes(), " is the null class), got ", low < 0 ? low : high));
      }
      return labels.to(device);
    }
    case v1::Conditioning::EMBEDDING: {
      if (!conditions.defined()) {
        at::Tensor null_condition = network_->NullCondition(batch);
        if (!null_condition.defined()) {
          return absl::FailedPreconditionError(
              absl::StrCat("condition: model has no ", DiffusionNetwork::kNullConditionFile,
                           " to stand for the null condition; pass an embedding"));
        }
        return null_condition;
      }
      std::vector<int64_t> expected{batch};
      expected.insert(expected.end(), config.embedding_shape().begin(),
                      config.embedding_shape().end());
      if (conditions.sizes().vec() != expected) {
        return absl::InvalidArgumentError(
            absl::StrCat("condition: expected embeddings of shape [", absl::StrJoin(expected, ", "),
                         "], got [", absl::StrJoin(conditions.sizes(), ", "), "]"));
      }
      return conditions.to(device, network_->dtype());
    }
    default:
      if (conditions.defined() && conditions.numel() > 0) {
        return absl::InvalidArgumentError(
            "condition: the model is unconditional (conditioning NONE) but a condition was given");
      }
      return at::Tensor();
  }
}

absl::StatusOr<Field> Denoiser::ScoreField(int64_t t, ScoreKind kind, const at::Tensor& conditions,
                                           double guidance) const {
  if (t < 0 || t >= schedule().num_train_timesteps()) {
    return absl::InvalidArgumentError(absl::StrCat("t: timestep ", t, " outside [0, ",
                                                   schedule().num_train_timesteps() - 1, "]"));
  }
  const bool conditional = network_->conditional();
  if (!conditional && (kind == ScoreKind::kGuided || kind == ScoreKind::kDifference)) {
    return absl::InvalidArgumentError(
        absl::StrCat("score_kind: ", ScoreKindName(kind), " needs a conditional model"));
  }
  if (conditional && kind != ScoreKind::kConditional) {
    // These kinds evaluate the null condition; make sure one exists.
    if (!network_->NullCondition(1).defined()) {
      return absl::FailedPreconditionError(
          absl::StrCat("score_kind: ", ScoreKindName(kind), " needs the null condition, and ",
                       "the model has no ", DiffusionNetwork::kNullConditionFile));
    }
  }
  const double inverse_sigma = 1.0 / schedule().sigma(t);
  std::shared_ptr<const DiffusionNetwork> network = network_;
  if (conditional && !conditions.defined()) {
    return absl::InvalidArgumentError("condition: the model is conditional; pass conditions");
  }
  const Denoiser self = *this;  // the field may outlive this object
  return Field([self, network, t, kind, conditions, guidance, conditional, inverse_sigma](
                   const at::Tensor& x, const at::Tensor& rows) -> at::Tensor {
    const int64_t batch = x.size(0);
    at::Tensor steps =
        at::full({batch}, t, at::TensorOptions().dtype(at::kLong).device(x.device()));
    at::Tensor condition;
    if (conditional && conditions.defined()) condition = conditions.index_select(0, rows);
    at::Tensor epsilon;
    switch (kind) {
      case ScoreKind::kConditional:
        epsilon = self.Epsilon(x, steps, condition);
        break;
      case ScoreKind::kUnconditional:
        epsilon = self.Epsilon(x, steps, conditional ? network->NullCondition(batch) : condition);
        break;
      case ScoreKind::kGuided:
        epsilon = self.GuidedEpsilon(x, steps, condition, guidance);
        break;
      case ScoreKind::kDifference: {
        const auto [with_condition, without] = self.ConditionalAndNullEpsilon(x, steps, condition);
        epsilon = with_condition - without;
        break;
      }
    }
    return epsilon * (-inverse_sigma);
  });
}

}  // namespace memaudit
