#include "client/mitigation_format.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/report_format.h"

namespace memaudit::client {
namespace {

std::string CopyWord(const v1::SampleReport& report) {
  if (!report.has_nearest()) return "-";
  return report.nearest().is_copy() ? "copy" : "novel";
}

std::string DistanceText(const v1::SampleReport& report) {
  return report.has_nearest() ? absl::StrFormat("%.2f", report.nearest().d1()) : "-";
}

}  // namespace

MitigationTotals SumMitigation(const std::vector<v1::MitigatedSample>& results) {
  MitigationTotals totals;
  totals.seeds = static_cast<int64_t>(results.size());
  if (results.empty()) return totals;
  for (const v1::MitigatedSample& r : results) {
    totals.has_truth = totals.has_truth || r.before().has_nearest();
    totals.copies_before += r.before().nearest().is_copy() ? 1 : 0;
    totals.copies_after += r.after().nearest().is_copy() ? 1 : 0;
    totals.memorized_before += r.before().verdict() == v1::MEMORIZED ? 1 : 0;
    totals.memorized_after += r.after().verdict() == v1::MEMORIZED ? 1 : 0;
    totals.mean_sharpness_before += r.sharpness_before();
    totals.mean_sharpness_after += r.sharpness_after();
    totals.mean_steps += static_cast<double>(r.steps());
    totals.mean_initial_noise_change += r.initial_noise_change();
    totals.mean_guard_seconds += r.guard_seconds();
  }
  const double n = static_cast<double>(results.size());
  totals.mean_sharpness_before /= n;
  totals.mean_sharpness_after /= n;
  totals.mean_steps /= n;
  totals.mean_initial_noise_change /= n;
  totals.mean_guard_seconds /= n;
  return totals;
}

std::string MitigationText(const std::vector<v1::MitigatedSample>& results) {
  const bool conditional = !results.empty() && results.front().conditional();
  std::string text =
      absl::StrFormat("%-10s  %-21s  %5s  %6s  %-29s  %-15s  %s\n", "seed",
                      conditional ? "|H^D s^D| before->after" : "|Hs|^2 before->after", "steps",
                      "moved", "verdict before -> after", "nearest d1", "truth");
  for (const v1::MitigatedSample& r : results) {
    absl::StrAppendFormat(
        &text, "%-10d  %9.4g -> %-9.4g  %5d  %5.1f%%  %-13s -> %-13s  %6s -> %-6s  %s -> %s\n",
        r.seed(), r.sharpness_before(), r.sharpness_after(), r.steps(),
        100 * r.initial_noise_change(), VerdictWord(r.before().verdict()),
        VerdictWord(r.after().verdict()), DistanceText(r.before()), DistanceText(r.after()),
        CopyWord(r.before()), CopyWord(r.after()));
  }
  const MitigationTotals t = SumMitigation(results);
  absl::StrAppendFormat(&text, "\nmemorized verdicts: %d/%d -> %d/%d", t.memorized_before, t.seeds,
                        t.memorized_after, t.seeds);
  if (t.has_truth) {
    absl::StrAppendFormat(&text, "; copies (nearest neighbour): %d/%d -> %d/%d", t.copies_before,
                          t.seeds, t.copies_after, t.seeds);
  }
  absl::StrAppendFormat(&text,
                        "\nmean sharpness %.4g -> %.4g in %.1f steps; x_T moved %.1f%% of its "
                        "norm; guard %.3f s per seed\n",
                        t.mean_sharpness_before, t.mean_sharpness_after, t.mean_steps,
                        100 * t.mean_initial_noise_change, t.mean_guard_seconds);
  return text;
}

nlohmann::json MitigationJson(const std::string& model,
                              const std::vector<v1::MitigatedSample>& results) {
  nlohmann::json seeds = nlohmann::json::array();
  for (const v1::MitigatedSample& r : results) {
    seeds.push_back({{"seed", r.seed()},
                     {"sharpness_before", r.sharpness_before()},
                     {"sharpness_after", r.sharpness_after()},
                     {"steps", r.steps()},
                     {"initial_noise_change", r.initial_noise_change()},
                     {"guard_seconds", r.guard_seconds()},
                     {"before", SampleReportJson(r.before())},
                     {"after", SampleReportJson(r.after())}});
  }
  const MitigationTotals t = SumMitigation(results);
  nlohmann::json totals = {{"seeds", t.seeds},
                           {"memorized_before", t.memorized_before},
                           {"memorized_after", t.memorized_after},
                           {"mean_sharpness_before", t.mean_sharpness_before},
                           {"mean_sharpness_after", t.mean_sharpness_after},
                           {"mean_steps", t.mean_steps},
                           {"mean_initial_noise_change", t.mean_initial_noise_change},
                           {"mean_guard_seconds", t.mean_guard_seconds}};
  if (t.has_truth) {
    totals["copies_before"] = t.copies_before;
    totals["copies_after"] = t.copies_after;
  }
  const bool conditional = !results.empty() && results.front().conditional();
  return {{"model", model},
          {"metric", conditional ? "jeon" : "hessian_score"},
          {"totals", totals},
          {"seeds", seeds}};
}

}  // namespace memaudit::client
