#include "client/report_format.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli_options.h"

namespace memaudit::client {
namespace {

nlohmann::json ConditionJson(const v1::Condition& condition) {
  nlohmann::json json;
  switch (condition.kind_case()) {
    case v1::Condition::kClassLabel:
      json = {{"class_label", condition.class_label()}};
      break;
    case v1::Condition::kEmbedding:
      json = {{"embedding_shape", std::vector<int64_t>(condition.embedding().shape().begin(),
                                                       condition.embedding().shape().end())}};
      break;
    case v1::Condition::kNullCondition:
      json = {{"null", true}};
      break;
    case v1::Condition::kPrompt:
      json = {{"prompt", condition.prompt()}};
      break;
    case v1::Condition::KIND_NOT_SET:
      break;
  }
  if (!condition.name().empty()) json["name"] = condition.name();
  return json;
}

std::string WidthText(const v1::SpectrumSummary& summary) {
  return summary.has_width() ? absl::StrFormat("%.4g", summary.width()) : "inf";
}

std::string RadiusText(const v1::SpectrumSummary& summary) {
  return summary.has_radius() ? absl::StrFormat("%.4g", summary.radius()) : "inf";
}

nlohmann::json OptionalJson(bool has, double value) {
  return has ? nlohmann::json(value) : nlohmann::json(nullptr);
}

double MemorizedFraction(const v1::ConditionReport& condition) {
  return condition.samples_size() > 0
             ? static_cast<double>(condition.memorized()) / condition.samples_size()
             : 0.0;
}

// How many conditions the reports list as the worst.
constexpr size_t kWorstConditions = 5;

}  // namespace

std::vector<const v1::ConditionReport*> WorstFirst(const v1::AuditReport& report) {
  std::vector<const v1::ConditionReport*> order;
  for (const v1::ConditionReport& condition : report.conditions()) order.push_back(&condition);
  std::stable_sort(order.begin(), order.end(),
                   [](const v1::ConditionReport* a, const v1::ConditionReport* b) {
                     if (a->verdict() != b->verdict()) return a->verdict() > b->verdict();
                     if (MemorizedFraction(*a) != MemorizedFraction(*b)) {
                       return MemorizedFraction(*a) > MemorizedFraction(*b);
                     }
                     return a->partial() > b->partial();
                   });
  return order;
}

std::string VerdictWord(v1::Verdict verdict) {
  return verdict == v1::VERDICT_UNSPECIFIED ? "UNKNOWN" : v1::Verdict_Name(verdict);
}

std::string MethodWord(v1::SpectrumMethod method) {
  return std::string(WordOf(MethodWords(), method).value_or("unknown"));
}

std::string PhaseWord(v1::AuditPhase phase) {
  switch (phase) {
    case v1::AUDIT_PHASE_QUEUED:
      return "queued";
    case v1::AUDIT_PHASE_STARTING:
      return "starting";
    case v1::AUDIT_PHASE_SAMPLING:
      return "sampling";
    case v1::AUDIT_PHASE_CURVATURE:
      return "curvature";
    case v1::AUDIT_PHASE_MEASURED:
      return "measured";
    case v1::AUDIT_PHASE_EARLY_METRICS:
      return "early metrics";
    case v1::AUDIT_PHASE_DONE:
      return "done";
    default:
      return "";
  }
}

nlohmann::json SampleReportJson(const v1::SampleReport& sample) {
  const v1::SpectrumSummary& s = sample.summary();
  nlohmann::json entry = {
      {"seed", sample.seed()},
      {"verdict", VerdictWord(sample.verdict())},
      {"t", sample.timestep()},
      {"sigma", sample.sigma()},
      {"dimension", s.dimension()},
      {"positive_eigenvalues", s.positive_eigenvalues()},
      {"flat_directions", s.flat_directions()},
      {"min_kappa", s.min_kappa()},
      {"max_kappa", s.max_kappa()},
      {"mean_kappa", s.mean_kappa()},
      {"width", OptionalJson(s.has_width(), s.width())},
      {"radius", OptionalJson(s.has_radius(), s.radius())},
      {"noise_radius", OptionalJson(s.has_noise_radius(), s.noise_radius())},
  };
  if (s.unconverged_eigenvalues() > 0)
    entry["unconverged_eigenvalues"] = s.unconverged_eigenvalues();
  if (sample.has_nearest()) {
    entry["nearest_ratio"] = sample.nearest().ratio();
    entry["nearest_index"] = sample.nearest().index();
    entry["nearest_distance"] = sample.nearest().d1();
    entry["nearest_multiplicity"] = sample.nearest().multiplicity();
    entry["nearest_gap"] = sample.nearest().gap();
    entry["copy"] = sample.nearest().is_copy();
  }
  if (sample.profile_size() > 0) {
    nlohmann::json profile = nlohmann::json::array();
    for (const v1::SpectrumProfilePoint& point : sample.profile()) {
      profile.push_back(
          {{"t", point.timestep()},
           {"sigma", point.sigma()},
           {"positive_eigenvalues", point.summary().positive_eigenvalues()},
           {"flat_directions", point.summary().flat_directions()},
           {"max_kappa", point.summary().max_kappa()},
           {"width", OptionalJson(point.summary().has_width(), point.summary().width())},
           {"radius", OptionalJson(point.summary().has_radius(), point.summary().radius())},
           {"noise_radius",
            OptionalJson(point.summary().has_noise_radius(), point.summary().noise_radius())}});
    }
    entry["profile"] = profile;
  }
  return entry;
}

nlohmann::json AuditReportJson(const v1::AuditJob& job) {
  const v1::AuditReport& report = job.report();
  nlohmann::json conditions = nlohmann::json::array();
  for (const v1::ConditionReport& condition : report.conditions()) {
    nlohmann::json samples = nlohmann::json::array();
    for (const v1::SampleReport& sample : condition.samples()) {
      samples.push_back(SampleReportJson(sample));
    }
    nlohmann::json condition_entry = {{"condition", ConditionJson(condition.condition())},
                                      {"label", condition.label()},
                                      {"verdict", VerdictWord(condition.verdict())},
                                      {"memorized", condition.memorized()},
                                      {"partial", condition.partial()},
                                      {"not_memorized", condition.not_memorized()},
                                      {"samples", samples}};
    if (condition.has_early()) condition_entry["early"] = EarlyMetricsJson(condition.early());
    if (condition.has_early_outlier_z()) {
      condition_entry["early_outlier_z"] = condition.early_outlier_z();
    }
    if (condition.has_token_attribution()) {
      const v1::TokenAttribution& attribution = condition.token_attribution();
      nlohmann::json tokens = nlohmann::json::array();
      for (const v1::TokenAttribution::Token& token : attribution.tokens()) {
        tokens.push_back({{"position", token.position()},
                          {"text", token.text()},
                          {"score", token.score()},
                          {"share", token.share()},
                          {"gradient", token.gradient()}});
      }
      condition_entry["token_attribution"] = {{"timestep", attribution.timestep()},
                                              {"samples", attribution.samples()},
                                              {"tokens", tokens}};
      if (!attribution.gradient_unavailable().empty()) {
        condition_entry["token_attribution"]["gradient_unavailable"] =
            attribution.gradient_unavailable();
      }
      if (!attribution.unavailable().empty()) {
        condition_entry["token_attribution"] = {{"unavailable", attribution.unavailable()}};
      }
    }
    conditions.push_back(condition_entry);
  }
  const v1::PolicyUsed& policy = report.policy();
  const v1::AuditTiming& timing = report.timing();
  nlohmann::json worst = nlohmann::json::array();
  for (const v1::ConditionReport* condition : WorstFirst(report)) {
    if (worst.size() == kWorstConditions) break;
    if (condition->memorized() == 0 && condition->partial() == 0) break;
    worst.push_back({{"label", condition->label()},
                     {"verdict", VerdictWord(condition->verdict())},
                     {"memorized_fraction", MemorizedFraction(*condition)}});
  }
  nlohmann::json json = {{"job_id", job.id()},
                         {"model", report.model()},
                         {"model_checksum", report.model_checksum()},
                         {"device", report.device()},
                         {"verdict", VerdictWord(report.verdict())},
                         {"memorized_samples", report.memorized_samples()},
                         {"total_samples", report.total_samples()},
                         {"memorized_fraction", report.memorized_fraction()},
                         {"worst_conditions", worst},
                         {"conditions", conditions},
                         {"policy",
                          {{"rule", policy.rule()},
                           {"max_positive_eigenvalues", policy.max_positive_eigenvalues()},
                           {"spacing", policy.spacing()},
                           {"memorized_radius", policy.memorized_radius()},
                           {"partial_radius", policy.partial_radius()},
                           {"memorized_noise_radius", policy.memorized_noise_radius()},
                           {"partial_noise_radius", policy.partial_noise_radius()},
                           {"memorized_width", policy.memorized_width()},
                           {"partial_width", policy.partial_width()},
                           {"data_scale", policy.data_scale()},
                           {"condition_memorized_fraction", policy.condition_memorized_fraction()},
                           {"model_memorized_fraction", policy.model_memorized_fraction()},
                           {"early_rule", policy.early_rule()}}},
                         {"timing",
                          {{"total_seconds", timing.total_seconds()},
                           {"sampling_seconds", timing.sampling_seconds()},
                           {"curvature_seconds", timing.curvature_seconds()},
                           {"queued_seconds", timing.queued_seconds()}}}};
  if (report.has_shard()) {
    const v1::AuditShard& shard = report.shard();
    json["shard"] = {{"index", shard.index()},
                     {"count", shard.count()},
                     {"first_condition", shard.first_condition()},
                     {"conditions", shard.conditions()},
                     {"total_conditions", shard.total_conditions()},
                     {"first_sample", shard.first_sample()},
                     {"samples", shard.samples()},
                     {"samples_per_condition", shard.samples_per_condition()}};
    std::string whole;
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(report, &whole, options);
    json["shard_report"] = nlohmann::json::parse(whole);
  }
  return json;
}

absl::StatusOr<v1::AuditReport> ShardReportFromJson(const nlohmann::json& json) {
  if (!json.is_object() || !json.contains("shard_report")) {
    return absl::InvalidArgumentError(
        "not the --json report of a shard (no \"shard_report\": made by memaudit audit "
        "--shard-index I --shard-count N --json)");
  }
  v1::AuditReport report;
  const google::protobuf::util::Status parsed =
      google::protobuf::util::JsonStringToMessage(json["shard_report"].dump(), &report);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"shard_report\" is not an AuditReport: ", parsed.message().as_string()));
  }
  return report;
}

std::string AuditReportText(const v1::AuditReport& report, bool per_sample) {
  // An early-only audit judges conditions by their first steps' metric and
  // takes no spectra: no sample is judged, so counts of samples say nothing.
  const bool early_only = report.total_samples() == 0 && !report.policy().early_rule().empty();
  std::string text;
  if (early_only) {
    const int64_t flagged =
        std::count_if(report.conditions().begin(), report.conditions().end(),
                      [](const auto& c) { return c.verdict() == v1::MEMORIZED; });
    text = absl::StrFormat("model %s (%s, %s): %s — %d of %d conditions flagged early (%s)\n",
                           report.model(), report.device(), report.model_checksum().substr(0, 19),
                           VerdictWord(report.verdict()), flagged, report.conditions_size(),
                           report.policy().early_rule());
  } else {
    text = absl::StrFormat("model %s (%s, %s): %s — %d of %d samples memorized (%.1f%%)\n",
                           report.model(), report.device(), report.model_checksum().substr(0, 19),
                           VerdictWord(report.verdict()), report.memorized_samples(),
                           report.total_samples(), 100.0 * report.memorized_fraction());
  }
  // Conditions worst first, so the ones a release team must look at lead.
  for (const v1::ConditionReport* condition_ptr : WorstFirst(report)) {
    const v1::ConditionReport& condition = *condition_ptr;
    if (early_only) {
      absl::StrAppendFormat(&text, "  condition %-10s %-13s %s\n", condition.label(),
                            VerdictWord(condition.verdict()),
                            condition.verdict() == v1::MEMORIZED ? "flagged early" : "not flagged");
    } else {
      absl::StrAppendFormat(
          &text, "  condition %-10s %-13s memorized %d, partial %d, not %d (of %d)\n",
          condition.label(), VerdictWord(condition.verdict()), condition.memorized(),
          condition.partial(), condition.not_memorized(), condition.samples_size());
    }
    if (condition.has_early()) {
      absl::StrAppend(&text, "    ", EarlyMetricsText(condition.early()));
    }
    if (condition.has_early_outlier_z()) {
      absl::StrAppendFormat(&text, "    label-free outlier z %.2f\n", condition.early_outlier_z());
    }
    if (!condition.token_attribution().unavailable().empty()) {
      absl::StrAppend(&text, "    token attribution unavailable: ",
                      condition.token_attribution().unavailable(), "\n");
    }
    if (!condition.token_attribution().tokens().empty()) {
      // The prompt's three strongest tokens, strongest first.
      std::vector<const v1::TokenAttribution::Token*> tokens;
      for (const auto& token : condition.token_attribution().tokens()) tokens.push_back(&token);
      std::stable_sort(tokens.begin(), tokens.end(),
                       [](const auto* a, const auto* b) { return a->score() > b->score(); });
      tokens.resize(std::min<size_t>(tokens.size(), 3));
      std::vector<std::string> words;
      for (const auto* token : tokens) {
        if (token->score() <= 0) break;  // deleting it does not lower the metric
        words.push_back(absl::StrFormat("\"%s\" %.0f%%", absl::StripAsciiWhitespace(token->text()),
                                        100 * token->share()));
      }
      absl::StrAppend(&text, "    strongest tokens: ",
                      words.empty() ? "none (no token's deletion lowers the metric)"
                                    : absl::StrJoin(words, ", "),
                      "\n");
    }
    if (!per_sample) continue;
    absl::StrAppend(&text,
                    "    seed  verdict          t   n+  flat  kappa_max  kappa_min      width     "
                    "radius  d1/d2\n");
    for (const v1::SampleReport& sample : condition.samples()) {
      const v1::SpectrumSummary& s = sample.summary();
      absl::StrAppendFormat(
          &text, "    %4d  %-13s %4d  %3d  %4d  %9.4f  %9.4f  %9s  %9s  %s\n", sample.seed(),
          VerdictWord(sample.verdict()), sample.timestep(), s.positive_eigenvalues(),
          s.flat_directions(), s.max_kappa(), s.min_kappa(), WidthText(s), RadiusText(s),
          sample.has_nearest()
              ? absl::StrFormat("%.3f%s", sample.nearest().ratio(),
                                !sample.nearest().is_copy() ? ""
                                : sample.nearest().multiplicity() > 1
                                    ? absl::StrFormat(" copy of an item repeated x%d",
                                                      sample.nearest().multiplicity())
                                    : " copy")
              : "-");
      if (s.unconverged_eigenvalues() > 0) {
        text.pop_back();  // the line's newline
        absl::StrAppendFormat(&text, "  (%d eigenvalues unconverged: at most PARTIAL)\n",
                              s.unconverged_eigenvalues());
      }
    }
  }
  const v1::AuditTiming& timing = report.timing();
  const v1::PolicyUsed& policy = report.policy();
  std::string rule;
  if (policy.rule() == "width") {
    rule = absl::StrFormat("width < %.3g x %.3g memorized, < %.3g x %.3g partial",
                           policy.memorized_width(), policy.data_scale(), policy.partial_width(),
                           policy.data_scale());
  } else if (policy.rule() == "noise radius + radius/spacing") {
    rule = absl::StrFormat(
        "noise radius < %.3g and radius < %.3g x gap memorized, < %.3g and < %.3g x gap partial "
        "(gap: around the nearest training item; median %.4g)",
        policy.memorized_noise_radius(), policy.memorized_radius(), policy.partial_noise_radius(),
        policy.partial_radius(), policy.spacing());
  } else {
    rule = absl::StrFormat("noise radius < %.3g memorized, < %.3g partial (no reference set)",
                           policy.memorized_noise_radius(), policy.partial_noise_radius());
  }
  absl::StrAppendFormat(&text,
                        "policy: n+ <= %d, %s; model MEMORIZED at >= %.3g of samples%s\n"
                        "timing: %.2f s (sampling %.2f s, curvature %.2f s, queued %.2f s)\n",
                        policy.max_positive_eigenvalues(), rule, policy.model_memorized_fraction(),
                        policy.early_rule().empty() ? "" : "; early: " + policy.early_rule(),
                        timing.total_seconds(), timing.sampling_seconds(),
                        timing.curvature_seconds(), timing.queued_seconds());
  return text;
}

std::string ModelTable(const v1::ListModelsResponse& models) {
  std::string text = absl::StrFormat("%-20s %-15s %-8s %6s %10s  %s\n", "MODEL", "STATE", "DEVICE",
                                     "DIM", "REFERENCE", "ERROR");
  for (const v1::ModelInfo& model : models.models()) {
    absl::StrAppendFormat(&text, "%-20s %-15s %-8s %6d %10d  %s\n", model.name(),
                          v1::ModelState_Name(model.state()), model.device(), model.dimension(),
                          model.reference_size(), model.last_error());
  }
  return text;
}

nlohmann::json ModelJson(const v1::ModelInfo& model) {
  const v1::ModelConfig& config = model.config();
  nlohmann::json json = {
      {"name", model.name()},           {"state", v1::ModelState_Name(model.state())},
      {"device", model.device()},       {"dtype", model.dtype()},
      {"dimension", model.dimension()}, {"checksum", model.checksum()},
      {"error", model.last_error()},
  };
  // What the model takes and gives, once a config was loaded.
  if (config.has_conditioning()) {
    json["conditioning"] = v1::Conditioning::Kind_Name(config.conditioning().kind());
    json["prompts"] = config.conditioning().has_text_encoder();
  }
  if (config.has_latent()) {
    json["decoded_shape"] = std::vector<int64_t>(config.latent().image_shape().begin(),
                                                 config.latent().image_shape().end());
  }
  return json;
}

nlohmann::json ModelsJson(const v1::ListModelsResponse& models) {
  nlohmann::json json = nlohmann::json::array();
  for (const v1::ModelInfo& model : models.models()) json.push_back(ModelJson(model));
  return json;
}

std::string ModelDetails(const v1::ModelInfo& model) {
  const v1::ModelConfig& config = model.config();
  std::string conditioning = v1::Conditioning::Kind_Name(config.conditioning().kind());
  if (config.conditioning().has_text_encoder()) {
    const int64_t length = config.conditioning().text_encoder().max_length();
    absl::StrAppend(&conditioning, " from prompts (text encoder, ", length > 0 ? length : 77,
                    " tokens)");
  }
  std::string latent;
  if (config.has_latent()) {
    latent = absl::StrFormat("latent:      decoded to [%s], scaling factor %.6g\n",
                             absl::StrJoin(config.latent().image_shape(), ", "),
                             config.latent().scaling_factor());
  }
  return absl::StrFormat(
      "name:        %s\nstate:       %s\ndevice:      %s\ndtype:       %s\nchecksum:    %s\n"
      "sample_shape: [%s]\n"
      "prediction:  %s\nschedule:    %s (T = %d)\nconditioning: %s\n%sreference:   %d items\n"
      "load time:   %.3f s\n%s",
      model.name(), v1::ModelState_Name(model.state()), model.device(),
      model.dtype().empty() ? "-" : model.dtype(), model.checksum(),
      absl::StrJoin(config.sample_shape(), ", "), v1::PredictionType_Name(config.prediction_type()),
      v1::NoiseSchedule::Kind_Name(config.noise_schedule().kind()),
      config.noise_schedule().num_train_timesteps(), conditioning, latent, model.reference_size(),
      model.load_seconds(),
      model.last_error().empty() ? "" : absl::StrCat("last error:  ", model.last_error(), "\n"));
}

std::string SpectrumText(const v1::SpectrumResponse& spectrum, int top) {
  const v1::SpectrumSummary& s = spectrum.summary();
  std::string text = absl::StrFormat(
      "model %s, t = %d (sigma_t = %.4g), %s%s, %s\n"
      "n+ = %d, flat directions = %d%s, kappa in [%.4f, %.4f], mean %.4f, width %s%s\n",
      spectrum.model(), spectrum.timestep(), spectrum.sigma(),
      s.partial() ? absl::StrFormat("%d eigenvalues found", s.dimension())
                  : absl::StrFormat("d = %d", s.dimension()),
      spectrum.symmetrized() ? " (symmetric part)" : "",
      spectrum.method() == v1::ARNOLDI
          ? absl::StrFormat("Arnoldi (%d of %d requested converged%s), %d network products, %.2f s",
                            s.dimension(), spectrum.requested_eigenvalues(),
                            spectrum.converged() ? "" : "; raise max_restarts for the rest",
                            spectrum.matvecs(), spectrum.seconds())
          : absl::StrFormat("dense, %.2f s", spectrum.seconds()),
      s.positive_eigenvalues(), s.flat_directions(),
      s.flat_directions_lower_bound() ? " (all found are flat: a lower bound)" : "", s.min_kappa(),
      s.max_kappa(), s.mean_kappa(), WidthText(s),
      s.partial() ? " (of the eigenvalues found)" : "");
  const int n = spectrum.eigenvalues_real_size();
  const int shown = top <= 0 ? n : std::min(top, n);
  absl::StrAppendFormat(&text,
                        "top %d of %d eigenvalues by real part:\n     i          Re lambda         "
                        " Im lambda      kappa\n",
                        shown, n);
  const double sigma2 = spectrum.sigma() * spectrum.sigma();
  if (spectrum.has_early()) absl::StrAppend(&text, EarlyMetricsText(spectrum.early()));
  for (int i = 0; i < shown; ++i) {
    absl::StrAppendFormat(&text, "  %4d  %17.6g  %17.6g  %9.4f\n", i, spectrum.eigenvalues_real(i),
                          spectrum.eigenvalues_imag(i), sigma2 * spectrum.eigenvalues_real(i));
  }
  return text;
}

nlohmann::json SpectrumJson(const v1::SpectrumResponse& spectrum) {
  const v1::SpectrumSummary& s = spectrum.summary();
  return {{"model", spectrum.model()},
          {"t", spectrum.timestep()},
          {"sigma", spectrum.sigma()},
          {"symmetrized", spectrum.symmetrized()},
          {"dimension", s.dimension()},
          {"positive_eigenvalues", s.positive_eigenvalues()},
          {"flat_directions", s.flat_directions()},
          {"min_kappa", s.min_kappa()},
          {"max_kappa", s.max_kappa()},
          {"mean_kappa", s.mean_kappa()},
          {"width", s.has_width() ? nlohmann::json(s.width()) : nlohmann::json(nullptr)},
          {"eigenvalues_real", std::vector<double>(spectrum.eigenvalues_real().begin(),
                                                   spectrum.eigenvalues_real().end())},
          {"eigenvalues_imag", std::vector<double>(spectrum.eigenvalues_imag().begin(),
                                                   spectrum.eigenvalues_imag().end())},
          {"seconds", spectrum.seconds()},
          {"method", MethodWord(spectrum.method())},
          {"matvecs", spectrum.matvecs()},
          {"requested_eigenvalues", spectrum.requested_eigenvalues()},
          {"converged", spectrum.converged()},
          {"partial", s.partial()},
          {"flat_directions_lower_bound", s.flat_directions_lower_bound()},
          {"early", spectrum.has_early() ? EarlyMetricsJson(spectrum.early()) : nullptr}};
}

namespace {
using EarlyResponse = v1::EarlyMetricsResponse;
struct EarlyField {
  const char* name;
  bool (EarlyResponse::*has)() const;
  const v1::EarlyMetricValues& (EarlyResponse::*get)() const;
};
const EarlyField kEarlyFields[] = {
    {"wen_noise_difference", &EarlyResponse::has_wen_noise_difference,
     &EarlyResponse::wen_noise_difference},
    {"jeon_sharpness", &EarlyResponse::has_jeon_sharpness, &EarlyResponse::jeon_sharpness},
    {"score_norm_squared", &EarlyResponse::has_score_norm_squared,
     &EarlyResponse::score_norm_squared},
    {"hessian_score_squared", &EarlyResponse::has_hessian_score_squared,
     &EarlyResponse::hessian_score_squared},
    {"hutchinson_trace", &EarlyResponse::has_hutchinson_trace, &EarlyResponse::hutchinson_trace},
    {"anisotropy_norm", &EarlyResponse::has_anisotropy_norm, &EarlyResponse::anisotropy_norm},
    {"anisotropy_alignment", &EarlyResponse::has_anisotropy_alignment,
     &EarlyResponse::anisotropy_alignment},
};
}  // namespace

std::string CalibrationText(const v1::CalibrationResponse& calibration) {
  std::string text = absl::StrFormat("%-24s %7s %15s %14s %14s\n", "METRIC", "AUC", "TPR@1%FPR",
                                     "THRESHOLD", "DIRECTION");
  for (const v1::CalibratedMetric& metric : calibration.metrics()) {
    absl::StrAppendFormat(&text, "%-24s %7.3f %15.3f %14.6g %14s\n", metric.name(), metric.auc(),
                          metric.tpr_at_1pct_fpr(), metric.threshold(),
                          metric.higher_is_memorized() ? ">= memorized" : "<= memorized");
  }
  absl::StrAppendFormat(&text, "rule: %s\ndata scale %.4g; %.1f s\n\n%s",
                        calibration.roc_point_rule(), calibration.data_scale(),
                        calibration.seconds(), calibration.verdict_policy());
  return text;
}

nlohmann::json CalibrationJson(const v1::CalibrationResponse& calibration) {
  nlohmann::json metrics = nlohmann::json::array();
  for (const v1::CalibratedMetric& metric : calibration.metrics()) {
    metrics.push_back(
        {{"name", metric.name()},
         {"higher_is_memorized", metric.higher_is_memorized()},
         {"auc", metric.auc()},
         {"tpr_at_1pct_fpr", metric.tpr_at_1pct_fpr()},
         {"threshold", metric.threshold()},
         {"youden_threshold", metric.youden_threshold()},
         {"memorized_scores",
          std::vector<double>(metric.memorized_scores().begin(), metric.memorized_scores().end())},
         {"not_memorized_scores", std::vector<double>(metric.not_memorized_scores().begin(),
                                                      metric.not_memorized_scores().end())}});
  }
  return {{"metrics", metrics},
          {"roc_point_rule", calibration.roc_point_rule()},
          {"data_scale", calibration.data_scale()},
          {"verdict_policy", calibration.verdict_policy()},
          {"seconds", calibration.seconds()}};
}

std::string EarlyMetricsText(const v1::EarlyMetricsResponse& metrics) {
  std::string text = absl::StrFormat("%s metrics over the first %d step(s) (t = %s), %.2f s\n",
                                     metrics.conditional() ? "conditional" : "unconditional",
                                     metrics.timesteps_size(),
                                     absl::StrJoin(metrics.timesteps(), ", "), metrics.seconds());
  for (const EarlyField& field : kEarlyFields) {
    if (!(metrics.*field.has)()) continue;
    const v1::EarlyMetricValues& values = (metrics.*field.get)();
    absl::StrAppendFormat(&text, "  %-22s mean %12.6g  over %d generations\n", field.name,
                          values.mean(), values.values_size());
  }
  if (metrics.has_anisotropy_alignment()) {
    absl::StrAppendFormat(&text, "  (anisotropy at x_T: norm at t = %d, alignment at t = %d)\n",
                          metrics.timesteps_size() > 0 ? metrics.timesteps(0) : 0,
                          metrics.alignment_timestep());
  }
  return text;
}

nlohmann::json EarlyMetricsJson(const v1::EarlyMetricsResponse& metrics) {
  nlohmann::json json = {
      {"conditional", metrics.conditional()},
      {"timesteps", std::vector<int64_t>(metrics.timesteps().begin(), metrics.timesteps().end())},
      {"seconds", metrics.seconds()}};
  if (metrics.has_anisotropy_alignment()) json["alignment_timestep"] = metrics.alignment_timestep();
  for (const EarlyField& field : kEarlyFields) {
    if (!(metrics.*field.has)()) continue;
    const v1::EarlyMetricValues& values = (metrics.*field.get)();
    json[field.name] = {
        {"mean", values.mean()},
        {"values", std::vector<double>(values.values().begin(), values.values().end())}};
  }
  return json;
}

std::string XmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string SpectrumSvg(const v1::SpectrumResponse& spectrum, const std::string& title) {
  constexpr double kWidth = 720, kHeight = 420, kLeft = 70, kRight = 20, kTop = 40, kBottom = 50;
  const int n = spectrum.eigenvalues_real_size();
  const double sigma2 = spectrum.sigma() * spectrum.sigma();
  double low = -1.1, high = 0.1;
  for (int i = 0; i < n; ++i) {
    low = std::min(low, sigma2 * spectrum.eigenvalues_real(i));
    high = std::max(high, std::max(sigma2 * spectrum.eigenvalues_real(i),
                                   sigma2 * std::abs(spectrum.eigenvalues_imag(i))));
  }
  const double pad = 0.05 * (high - low);
  low -= pad;
  high += pad;
  auto x_of = [&](int i) {
    return kLeft + (n <= 1 ? 0.5 : static_cast<double>(i) / (n - 1)) * (kWidth - kLeft - kRight);
  };
  auto y_of = [&](double kappa) {
    return kTop + (high - kappa) / (high - low) * (kHeight - kTop - kBottom);
  };
  // A long title (a prompt's label) is set smaller rather than cut off at
  // the right edge (~0.6 em per character of sans-serif).
  const double title_size = std::clamp(
      (kWidth - kLeft - 8) / (0.6 * static_cast<double>(std::max<size_t>(title.size(), 1))), 8.0,
      15.0);
  std::string svg = absl::StrFormat(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
      "<text x=\"%.0f\" y=\"22\" font-size=\"%.1f\">%s</text>\n",
      kWidth, kHeight, kLeft, title_size, XmlEscape(title));
  // Axes, reference lines and ticks.
  absl::StrAppendFormat(
      &svg, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", kLeft,
      kTop, kLeft, kHeight - kBottom);
  for (double reference : {0.0, -0.5, -1.0}) {
    if (reference < low || reference > high) continue;
    absl::StrAppendFormat(&svg,
                          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" "
                          "stroke-dasharray=\"4 3\"/>\n<text x=\"%.1f\" y=\"%.1f\" "
                          "text-anchor=\"end\">%.1f</text>\n",
                          kLeft, y_of(reference), kWidth - kRight, y_of(reference), kLeft - 6,
                          y_of(reference) + 4, reference);
  }
  absl::StrAppendFormat(&svg,
                        "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">eigenvalue index "
                        "(by descending Re lambda), d = %d, t = %d</text>\n"
                        "<text x=\"16\" y=\"%.0f\" transform=\"rotate(-90 16 %.0f)\" "
                        "text-anchor=\"middle\">kappa = sigma_t^2 Re lambda</text>\n",
                        (kWidth + kLeft) / 2, kHeight - 15, n, spectrum.timestep(), (kHeight) / 2,
                        (kHeight) / 2);
  std::string real_path, imag_points;
  for (int i = 0; i < n; ++i) {
    absl::StrAppendFormat(&real_path, "%s%.1f,%.1f ", i == 0 ? "" : "", x_of(i),
                          y_of(sigma2 * spectrum.eigenvalues_real(i)));
    if (spectrum.eigenvalues_imag(i) != 0.0) {
      absl::StrAppendFormat(&imag_points,
                            "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2\" fill=\"#d95f02\"/>\n", x_of(i),
                            y_of(sigma2 * std::abs(spectrum.eigenvalues_imag(i))));
    }
  }
  absl::StrAppendFormat(&svg,
                        "<polyline points=\"%s\" fill=\"none\" stroke=\"#1b9e77\" "
                        "stroke-width=\"2\"/>\n%s",
                        real_path, imag_points);
  absl::StrAppendFormat(
      &svg,
      "<text x=\"%.0f\" y=\"%.0f\" fill=\"#1b9e77\">kappa (real part)</text>\n"
      "<text x=\"%.0f\" y=\"%.0f\" fill=\"#d95f02\">sigma^2 |Im lambda|</text>\n"
      "<text x=\"%.0f\" y=\"%.0f\">dashed: kappa = 0, -1/2 (flat), -1 (peak)</text>\n",
      // Bottom left: κ sorted descending starts near 0 at the left and
      // falls to the right, and the |Im λ| points lie near the top, so that
      // corner stays clear of both.
      kLeft + 12, kHeight - kBottom - 40, kLeft + 12, kHeight - kBottom - 24, kLeft + 12,
      kHeight - kBottom - 8);
  svg += "</svg>\n";
  return svg;
}

}  // namespace memaudit::client
