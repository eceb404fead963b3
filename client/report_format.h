// How the CLI presents results: the public --json audit report, text
// tables, and the spectrum plot.
#ifndef MEMAUDIT_CLIENT_REPORT_FORMAT_H_
#define MEMAUDIT_CLIENT_REPORT_FORMAT_H_

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "memaudit/v1/audit_service.pb.h"
#include "memaudit/v1/model_service.pb.h"

namespace memaudit::client {

// The --json audit report (a public contract; README.md "JSON report"):
// model, verdict, conditions[{condition, label, verdict, counts, samples[
// {seed, verdict, t, sigma, positive_eigenvalues, flat_directions,
// min_kappa, max_kappa, mean_kappa, width (null = ∞), nearest_ratio,
// nearest_index, copy}]}], policy, timing, job_id. The report of a shard
// (report.has_shard(): `memaudit audit --shard-index`) also has "shard"
// (its AuditShard fields) and "shard_report", the whole AuditReport in
// protobuf's JSON mapping: what `memaudit merge` reads back, since the
// public fields leave some out.
nlohmann::json AuditReportJson(const v1::AuditJob& job);

// One sample of the --json audit report (the samples[] entry above).
nlohmann::json SampleReportJson(const v1::SampleReport& sample);

// The AuditReport in the "shard_report" of a shard's --json report.
// INVALID_ARGUMENT when `json` has none or it does not parse.
absl::StatusOr<v1::AuditReport> ShardReportFromJson(const nlohmann::json& json);

// Human-readable report: one line per condition plus a per-sample table.
std::string AuditReportText(const v1::AuditReport& report, bool per_sample);
// The report's conditions worst first: by verdict, then memorized fraction,
// then partial count; ties keep the request order.
std::vector<const v1::ConditionReport*> WorstFirst(const v1::AuditReport& report);

std::string ModelTable(const v1::ListModelsResponse& models);
std::string ModelDetails(const v1::ModelInfo& model);
// `models --json`: an array of ModelJson, one per model, in the server's
// order. ModelJson: {name, state ("MODEL_READY", ...), device, dimension,
// checksum, error}.
nlohmann::json ModelsJson(const v1::ListModelsResponse& models);
nlohmann::json ModelJson(const v1::ModelInfo& model);

std::string SpectrumText(const v1::SpectrumResponse& spectrum, int top);
// "method" is MethodWord(spectrum.method()).
nlohmann::json SpectrumJson(const v1::SpectrumResponse& spectrum);

// An SVG of the spectrum: κ_i = σ²·Re λ_i in descending order, with the
// flat (κ = −½) and zero lines, and |Im λ|·σ² as a second series.
std::string SpectrumSvg(const v1::SpectrumResponse& spectrum, const std::string& title);
// `text` with & < > " ' as entities: safe in XML and HTML text and
// attribute values.
std::string XmlEscape(const std::string& text);

// "MEMORIZED", "PARTIAL", "NOT_MEMORIZED"; "UNKNOWN" when unset.
std::string VerdictWord(v1::Verdict verdict);

// The --method word of a method the server used: "dense" or "arnoldi"
// ("auto" when unresolved, "unknown" for a value this client does not know).
std::string MethodWord(v1::SpectrumMethod method);

// What an audit is doing, in lowercase words for the progress display:
// "queued", "starting", "sampling", "curvature", "measured", "early
// metrics", "done"; "" when unset or unknown.
std::string PhaseWord(v1::AuditPhase phase);

std::string CalibrationText(const v1::CalibrationResponse& calibration);
nlohmann::json CalibrationJson(const v1::CalibrationResponse& calibration);

std::string EarlyMetricsText(const v1::EarlyMetricsResponse& metrics);
nlohmann::json EarlyMetricsJson(const v1::EarlyMetricsResponse& metrics);  // "MEMORIZED", ...

}  // namespace memaudit::client

#endif  // MEMAUDIT_CLIENT_REPORT_FORMAT_H_
