// Golden-file tests of what the CLI prints (the --json audit report is a
// public contract: docs/SERVICE.md "The --json report"), and unit tests of
// the CLI's flag words.
//
// The goldens live in tests/fixtures/reports/. When a format change is
// deliberate, regenerate them and review the diff before committing it:
//
//   MEMAUDIT_UPDATE_GOLDENS=1 build/tests/report_format_test
//   git diff tests/fixtures/reports/
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/cli_options.h"
#include "client/report_format.h"
#include "memaudit/v1/audit_service.pb.h"
#include "memaudit/v1/model_service.pb.h"

namespace memaudit::client {
namespace {

// Where `actual` first departs from `expected`, line by line ("" when
// equal): gtest would print both files whole.
std::string FirstDifference(const std::string& expected, const std::string& actual) {
  std::istringstream want(expected), got(actual);
  std::string want_line, got_line;
  for (int line = 1;; ++line) {
    const bool more_wanted = static_cast<bool>(std::getline(want, want_line));
    const bool more_got = static_cast<bool>(std::getline(got, got_line));
    if (!more_wanted && !more_got) break;
    if (!more_wanted || !more_got || want_line != got_line) {
      return absl::StrCat("line ", line, ":\n  golden: ", more_wanted ? want_line : "(end)",
                          "\n  now:    ", more_got ? got_line : "(end)");
    }
  }
  return expected == actual ? "" : "the final newline";
}

// Compares `actual` with tests/fixtures/reports/`name` byte for byte, or
// rewrites the file when MEMAUDIT_UPDATE_GOLDENS=1.
void ExpectGolden(const std::string& name, const std::string& actual) {
  const std::string path = std::string(MEMAUDIT_FIXTURES) + "/reports/" + name;
  const char* update = std::getenv("MEMAUDIT_UPDATE_GOLDENS");
  if (update != nullptr && std::string(update) == "1") {
    std::ofstream out(path, std::ios::binary);
    out << actual;
    ASSERT_TRUE(out.good()) << path << ": cannot write";
    return;
  }
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in.good()) << path << " is missing; MEMAUDIT_UPDATE_GOLDENS=1 writes it";
  std::stringstream expected;
  expected << in.rdbuf();
  const std::string difference = FirstDifference(expected.str(), actual);
  if (!difference.empty()) {
    ADD_FAILURE() << name << " changed at " << difference << "\nIf that is deliberate, rerun "
                  << "with MEMAUDIT_UPDATE_GOLDENS=1 and review git diff tests/fixtures/reports/ "
                  << "(the JSON report is a public contract).";
  }
}

// What the CLI prints for a JSON value (PrintJson).
std::string Printed(const nlohmann::json& json) { return json.dump(2) + "\n"; }

v1::SpectrumSummary Summary(int64_t positive, int64_t flat, double min_kappa, double max_kappa,
                            double mean_kappa) {
  v1::SpectrumSummary summary;
  summary.set_dimension(8);
  summary.set_positive_eigenvalues(positive);
  summary.set_flat_directions(flat);
  summary.set_min_kappa(min_kappa);
  summary.set_max_kappa(max_kappa);
  summary.set_mean_kappa(mean_kappa);
  return summary;
}

// A summary with a finite peak: width, radius and noise radius set.
v1::SpectrumSummary Peak(double min_kappa, double max_kappa, double width, double radius,
                         double noise_radius) {
  v1::SpectrumSummary summary = Summary(0, 0, min_kappa, max_kappa, (min_kappa + max_kappa) / 2);
  summary.set_width(width);
  summary.set_radius(radius);
  summary.set_noise_radius(noise_radius);
  return summary;
}

v1::NearestNeighbor Nearest(int64_t index, double d1, double ratio, int64_t multiplicity,
                            double gap) {
  v1::NearestNeighbor nearest;
  nearest.set_index(index);
  nearest.set_d1(d1);
  nearest.set_d2(d1 / ratio);
  nearest.set_ratio(ratio);
  nearest.set_multiplicity(multiplicity);
  nearest.set_is_copy(ratio < 1.0 / 3);
  nearest.set_gap(gap);
  return nearest;
}

void AddSample(v1::ConditionReport* condition, uint64_t seed, v1::Verdict verdict,
               const v1::SpectrumSummary& summary, const v1::NearestNeighbor& nearest) {
  v1::SampleReport* sample = condition->add_samples();
  sample->set_seed(seed);
  sample->set_verdict(verdict);
  sample->set_timestep(20);
  sample->set_sigma(0.0791);
  *sample->mutable_summary() = summary;
  *sample->mutable_nearest() = nearest;
  switch (verdict) {
    case v1::MEMORIZED:
      condition->set_memorized(condition->memorized() + 1);
      break;
    case v1::PARTIAL:
      condition->set_partial(condition->partial() + 1);
      break;
    default:
      condition->set_not_memorized(condition->not_memorized() + 1);
  }
}

v1::EarlyMetricsResponse Early(double jeon_first, double jeon_second, double jeon_mean) {
  v1::EarlyMetricsResponse early;
  early.set_conditional(true);
  early.add_timesteps(981);
  early.set_seconds(0.25);
  early.mutable_wen_noise_difference()->add_values(0.5);
  early.mutable_wen_noise_difference()->add_values(0.75);
  early.mutable_wen_noise_difference()->set_mean(0.625);
  early.mutable_jeon_sharpness()->add_values(jeon_first);
  early.mutable_jeon_sharpness()->add_values(jeon_second);
  early.mutable_jeon_sharpness()->set_mean(jeon_mean);
  return early;
}

// A class-conditional audit of three classes: class 3 generalizes (one
// sample with an infinite width and radius), class 7 is memorized (copies,
// one of an item repeated 100 times, and an early outlier), class 9 is
// partial (with a two-step kappa profile).
v1::AuditJob ClassConditionalJob() {
  v1::AuditJob job;
  job.set_id("audit-000042");
  job.set_state(v1::JOB_SUCCEEDED);
  v1::AuditReport& report = *job.mutable_report();
  report.set_model("cifar-toy");
  report.set_device("cuda:0");
  report.set_model_checksum("sha256:0123456789abcdef0123456789abcdef");

  v1::ConditionReport* generalizing = report.add_conditions();
  generalizing->mutable_condition()->set_class_label(3);
  generalizing->set_label("class 3");
  generalizing->set_verdict(v1::NOT_MEMORIZED);
  AddSample(generalizing, 0, v1::NOT_MEMORIZED, Summary(2, 6, -0.93, 0.125, -0.41),
            Nearest(1203, 1.84, 0.812, 1, 2.2));
  AddSample(generalizing, 1, v1::NOT_MEMORIZED, Peak(-0.97, -0.31, 1.5, 2.75, 4.5),
            Nearest(77, 1.21, 0.64, 1, 1.9));
  *generalizing->mutable_early() = Early(0.0031, 0.0042, 0.00365);

  v1::ConditionReport* memorized = report.add_conditions();
  memorized->mutable_condition()->set_class_label(7);
  memorized->set_label("class 7");
  memorized->set_verdict(v1::MEMORIZED);
  AddSample(memorized, 0, v1::MEMORIZED, Peak(-1.13, -1.1, 0.0, 0.00125, 0.015625),
            Nearest(412, 0.002, 0.004, 100, 0.93));
  AddSample(memorized, 1, v1::MEMORIZED, Peak(-1.12, -1.05, 0.0, 0.0025, 0.03125),
            Nearest(5001, 0.004, 0.0125, 1, 0.5));
  AddSample(memorized, 2, v1::PARTIAL, Peak(-1.08, -0.62, 0.25, 0.375, 1.25),
            Nearest(412, 0.41, 0.39, 100, 0.93));
  *memorized->mutable_early() = Early(0.0615, 0.0833, 0.0724);
  memorized->set_early_outlier_z(5.73);

  v1::ConditionReport* partial = report.add_conditions();
  partial->mutable_condition()->set_class_label(9);
  partial->set_label("class 9");
  partial->set_verdict(v1::PARTIAL);
  AddSample(partial, 0, v1::PARTIAL, Peak(-1.01, -0.55, 0.375, 0.5, 1.5),
            Nearest(90, 0.52, 0.36, 2, 1.4));
  for (int64_t t : {40, 60}) {
    v1::SpectrumProfilePoint* point = partial->mutable_samples(0)->add_profile();
    point->set_timestep(t);
    point->set_sigma(t == 40 ? 0.1875 : 0.3125);
    *point->mutable_summary() = t == 40 ? Peak(-0.98, -0.5, 0.5, 0.75, 1.75)
                                        : Summary(1, 5, -0.9, 0.05, -0.35);  // infinite
  }
  AddSample(partial, 1, v1::NOT_MEMORIZED, Peak(-0.99, -0.4, 1.25, 2.5, 3.5),
            Nearest(18, 1.1, 0.7, 1, 1.6));
  *partial->mutable_early() = Early(0.0049, 0.0037, 0.0043);

  report.set_verdict(v1::MEMORIZED);
  report.set_memorized_samples(2);
  report.set_total_samples(7);
  report.set_memorized_fraction(2.0 / 7);

  v1::PolicyUsed& policy = *report.mutable_policy();
  policy.set_rule("noise radius + radius/spacing");
  policy.set_max_positive_eigenvalues(0);
  policy.set_spacing(0.117);
  policy.set_memorized_radius(0.333);
  policy.set_partial_radius(0.667);
  policy.set_memorized_noise_radius(1);
  policy.set_partial_noise_radius(2);
  policy.set_data_scale(1.46);
  policy.set_condition_memorized_fraction(0.5);
  policy.set_model_memorized_fraction(0.1);
  policy.set_early_rule("label-free: jeon_sharpness outlier z >= 3.5");

  v1::AuditTiming& timing = *report.mutable_timing();
  timing.set_total_seconds(12.5);
  timing.set_sampling_seconds(8.25);
  timing.set_curvature_seconds(3.75);
  timing.set_queued_seconds(0.5);
  return job;
}

TEST(AuditReportGolden, Json) {
  ExpectGolden("audit_report.json", Printed(AuditReportJson(ClassConditionalJob())));
}

TEST(AuditReportGolden, Text) {
  ExpectGolden("audit_report.txt", AuditReportText(ClassConditionalJob().report(), false));
}

TEST(AuditReportGolden, TextPerSample) {
  ExpectGolden("audit_report_per_sample.txt",
               AuditReportText(ClassConditionalJob().report(), true));
}

// The properties of the JSON report that README/SERVICE.md promise, so that
// a regenerated golden cannot quietly drop them.
TEST(AuditReportGolden, JsonContract) {
  const nlohmann::json json = AuditReportJson(ClassConditionalJob());
  EXPECT_EQ(json["verdict"], "MEMORIZED");
  EXPECT_EQ(json["job_id"], "audit-000042");
  ASSERT_EQ(json["conditions"].size(), 3u);
  const nlohmann::json& infinite = json["conditions"][0]["samples"][0];
  EXPECT_TRUE(infinite["width"].is_null());
  EXPECT_TRUE(infinite["radius"].is_null());
  EXPECT_TRUE(infinite["noise_radius"].is_null());
  EXPECT_EQ(json["conditions"][1]["samples"][0]["copy"], true);
  EXPECT_EQ(json["conditions"][1]["samples"][0]["nearest_multiplicity"], 100);
  EXPECT_EQ(json["conditions"][1]["early_outlier_z"], 5.73);
  EXPECT_FALSE(json["conditions"][0].contains("early_outlier_z"));
  EXPECT_EQ(json["conditions"][2]["samples"][0]["profile"].size(), 2u);
  EXPECT_EQ(json["worst_conditions"][0]["label"], "class 7");
  EXPECT_EQ(json["worst_conditions"][1]["label"], "class 9");
  EXPECT_EQ(json["worst_conditions"].size(), 2u);  // class 3 has nothing to show
}

// A prompt's token attribution: the text report names the three strongest
// tokens (strongest first, word-end spaces dropped), the JSON carries all.
TEST(AuditReportTokens, StrongestTokensInTextAndAllInJson) {
  v1::AuditJob job = ClassConditionalJob();
  v1::ConditionReport& condition = *job.mutable_report()->mutable_conditions(1);
  condition.mutable_condition()->set_prompt("a seven, the fenwick print");
  v1::TokenAttribution& attribution = *condition.mutable_token_attribution();
  attribution.set_samples(3);
  attribution.set_timestep(40);
  const std::vector<std::pair<std::string, double>> tokens = {{"a ", 0.1},       {"seven", 0.2},
                                                              {", ", 0.05},      {"the ", 0.15},
                                                              {"fenwick ", 0.4}, {"print ", 0.1}};
  for (size_t i = 0; i < tokens.size(); ++i) {
    v1::TokenAttribution::Token& token = *attribution.add_tokens();
    token.set_position(static_cast<int64_t>(i) + 1);
    token.set_text(tokens[i].first);
    token.set_score(tokens[i].second);
    token.set_share(tokens[i].second);
    token.set_gradient(3 * tokens[i].second);
  }
  const std::string text = AuditReportText(job.report(), false);
  EXPECT_NE(text.find("strongest tokens: \"fenwick\" 40%, \"seven\" 20%, \"the\" 15%\n"),
            std::string::npos)
      << text;
  const nlohmann::json json = AuditReportJson(job);
  const nlohmann::json& got = json["conditions"][1]["token_attribution"];
  EXPECT_EQ(got["samples"], 3);
  EXPECT_EQ(got["timestep"], 40);
  ASSERT_EQ(got["tokens"].size(), 6u);
  EXPECT_EQ(got["tokens"][4]["text"], "fenwick ");
  EXPECT_EQ(got["tokens"][4]["position"], 5);
  EXPECT_EQ(got["tokens"][4]["score"], 0.4);
  EXPECT_DOUBLE_EQ(got["tokens"][4]["gradient"].get<double>(), 1.2);
  EXPECT_FALSE(got.contains("gradient_unavailable"));
  EXPECT_FALSE(json["conditions"][0].contains("token_attribution"));
  // No token whose deletion lowers the metric: none is named.
  for (auto& token : *attribution.mutable_tokens()) {
    token.set_score(-token.score());
    token.set_share(0);
  }
  EXPECT_NE(AuditReportText(job.report(), false)
                .find("strongest tokens: none (no token's deletion lowers the metric)\n"),
            std::string::npos);
  attribution.set_gradient_unavailable("text_encoder.pt: no token-embedding table");
  EXPECT_EQ(AuditReportJson(job)["conditions"][1]["token_attribution"]["gradient_unavailable"],
            "text_encoder.pt: no token-embedding table");
}

// An early-only audit judges conditions, not samples: its text says how
// many conditions were flagged and by which rule, never "0 of 0 samples".
TEST(AuditReportEarlyOnly, CountsConditionsFlaggedByTheRule) {
  v1::AuditReport report;
  report.set_model("textmnist");
  report.set_verdict(v1::MEMORIZED);
  report.mutable_policy()->set_early_rule("label-free: anisotropy outlier z >= 3.5");
  for (const auto& [label, verdict] :
       std::vector<std::pair<std::string, v1::Verdict>>{{"mem-00", v1::MEMORIZED},
                                                        {"novel-01", v1::NOT_MEMORIZED},
                                                        {"novel-02", v1::NOT_MEMORIZED}}) {
    v1::ConditionReport* condition = report.add_conditions();
    condition->set_label(label);
    condition->set_verdict(verdict);
  }
  const std::string text = AuditReportText(report, /*per_sample=*/false);
  EXPECT_NE(text.find("MEMORIZED — 1 of 3 conditions flagged early (label-free: anisotropy "
                      "outlier z >= 3.5)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("mem-00     MEMORIZED     flagged early"), std::string::npos) << text;
  EXPECT_NE(text.find("novel-01   NOT_MEMORIZED not flagged"), std::string::npos) << text;
  EXPECT_EQ(text.find("0 of 0 samples"), std::string::npos) << text;
  EXPECT_EQ(text.find("(of 0)"), std::string::npos) << text;
}

// A sample whose Arnoldi spectrum left eigenvalues unconverged says so in
// the per-sample table and in the JSON; a converged one carries no key.
TEST(AuditReportUnconverged, NamedInTextAndJson) {
  v1::AuditJob job = ClassConditionalJob();
  v1::SampleReport& sample = *job.mutable_report()->mutable_conditions(0)->mutable_samples(0);
  sample.set_verdict(v1::PARTIAL);
  sample.mutable_summary()->set_unconverged_eigenvalues(2);
  EXPECT_NE(AuditReportText(job.report(), /*per_sample=*/true)
                .find("  (2 eigenvalues unconverged: at most PARTIAL)\n"),
            std::string::npos);
  const nlohmann::json json = AuditReportJson(job);
  EXPECT_EQ(json["conditions"][0]["samples"][0]["unconverged_eigenvalues"], 2);
  EXPECT_FALSE(json["conditions"][0]["samples"][1].contains("unconverged_eigenvalues"));
}

v1::SpectrumResponse ArnoldiSpectrum() {
  v1::SpectrumResponse spectrum;
  spectrum.set_model("cifar-toy");
  spectrum.set_timestep(20);
  spectrum.set_sigma(0.5);
  for (double re : {0.25, -1.5, -2.0, -4.0}) spectrum.add_eigenvalues_real(re);
  for (double im : {0.0, 0.5, -0.5, 0.0}) spectrum.add_eigenvalues_imag(im);
  *spectrum.mutable_summary() = Summary(1, 2, -1.0, 0.0625, -0.453125);
  spectrum.mutable_summary()->set_dimension(4);
  spectrum.mutable_summary()->set_partial(true);
  spectrum.set_seconds(1.75);
  spectrum.set_method(v1::ARNOLDI);
  spectrum.set_matvecs(96);
  spectrum.set_requested_eigenvalues(6);
  spectrum.set_converged(false);
  return spectrum;
}

TEST(SpectrumGolden, Json) {
  ExpectGolden("spectrum.json", Printed(SpectrumJson(ArnoldiSpectrum())));
}

TEST(SpectrumGolden, Text) { ExpectGolden("spectrum.txt", SpectrumText(ArnoldiSpectrum(), 3)); }

TEST(SpectrumGolden, MethodIsAWord) {
  v1::SpectrumResponse spectrum = ArnoldiSpectrum();
  EXPECT_EQ(SpectrumJson(spectrum)["method"], "arnoldi");
  spectrum.set_method(v1::DENSE);
  EXPECT_EQ(SpectrumJson(spectrum)["method"], "dense");
  EXPECT_NE(SpectrumText(spectrum, 0).find(", dense, 1.75 s"), std::string::npos);
}

TEST(ModelsGolden, Json) {
  v1::ListModelsResponse models;
  v1::ModelInfo* ready = models.add_models();
  ready->set_name("cifar-toy");
  ready->set_state(v1::MODEL_READY);
  ready->set_device("cuda:0");
  ready->set_dtype("float16");
  ready->set_dimension(3072);
  ready->set_checksum("sha256:0123456789abcdef");
  ready->mutable_config()->mutable_conditioning()->set_kind(v1::Conditioning::EMBEDDING);
  ready->mutable_config()->mutable_conditioning()->mutable_text_encoder()->set_max_length(77);
  for (int64_t dim : {3, 32, 32}) ready->mutable_config()->mutable_latent()->add_image_shape(dim);
  v1::ModelInfo* failed = models.add_models();
  failed->set_name("broken");
  failed->set_state(v1::MODEL_FAILED);
  failed->set_device("cpu");
  failed->set_last_error("model.pt: not a TorchScript archive");
  ExpectGolden("models.json", Printed(ModelsJson(models)));
  EXPECT_EQ(ModelJson(*ready), ModelsJson(models)[0]);
}

// Every word of a table parses to its value and back; words and values
// are unique.
template <typename Enum>
void ExpectRoundTrip(std::span<const EnumWord<Enum>> table) {
  std::set<std::string_view> words;
  std::set<Enum> values;
  for (const EnumWord<Enum>& entry : table) {
    EXPECT_TRUE(words.insert(entry.word).second) << entry.word << " twice";
    EXPECT_TRUE(values.insert(entry.value).second) << entry.word << ": value twice";
    absl::StatusOr<Enum> parsed = ParseWord(table, std::string(entry.word), "--flag");
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, entry.value);
    EXPECT_EQ(WordOf(table, *parsed), entry.word);
  }
  EXPECT_EQ(Words(table).size(), table.size());
}

// Every value of a proto enum but `except` has a CLI word: a value added to
// the proto must be given one (or listed here).
template <typename Enum>
void ExpectEveryValueHasAWord(std::span<const EnumWord<Enum>> table,
                              const google::protobuf::EnumDescriptor* descriptor,
                              std::set<int> except) {
  for (int i = 0; i < descriptor->value_count(); ++i) {
    const int number = descriptor->value(i)->number();
    if (except.count(number)) continue;
    EXPECT_TRUE(WordOf(table, static_cast<Enum>(number)).has_value())
        << descriptor->value(i)->name() << " has no CLI word";
  }
}

TEST(CliWords, TheWordsTheFlagsTake) {
  // The flags' documented vocabulary (docs/SERVICE.md "CLI").
  using WordList = std::vector<std::string>;
  EXPECT_EQ(Words(SamplerWords()), (WordList{"ddim", "ddpm"}));
  EXPECT_EQ(Words(ScoreKindWords()),
            (WordList{"conditional", "unconditional", "guided", "difference"}));
  EXPECT_EQ(Words(MethodWords()), (WordList{"auto", "dense", "arnoldi"}));
  EXPECT_EQ(Words(EigenTargetWords()),
            (WordList{"largest_real", "largest_magnitude", "smallest_real"}));
  EXPECT_EQ(Words(FailOnWords()), (WordList{"memorized", "partial", "never"}));
}

TEST(CliWords, RoundTrip) {
  ExpectRoundTrip(SamplerWords());
  ExpectRoundTrip(ScoreKindWords());
  ExpectRoundTrip(MethodWords());
  ExpectRoundTrip(EigenTargetWords());
  ExpectRoundTrip(FailOnWords());
}

TEST(CliWords, EveryProtoValueHasAWord) {
  ExpectEveryValueHasAWord(SamplerWords(), v1::Sampler_descriptor(), {v1::SAMPLER_UNSPECIFIED});
  ExpectEveryValueHasAWord(ScoreKindWords(), v1::ScoreKind_descriptor(),
                           {v1::SCORE_KIND_UNSPECIFIED});
  ExpectEveryValueHasAWord(MethodWords(), v1::SpectrumMethod_descriptor(), {});
  ExpectEveryValueHasAWord(EigenTargetWords(), v1::EigenTarget_descriptor(),
                           {v1::EIGEN_TARGET_UNSPECIFIED});
}

TEST(CliWords, SpecificMappings) {
  EXPECT_EQ(*ParseWord(SamplerWords(), "ddpm", "--sampler"), v1::DDPM);
  EXPECT_EQ(*ParseWord(ScoreKindWords(), "difference", "--score-kind"), v1::DIFFERENCE);
  EXPECT_EQ(*ParseWord(MethodWords(), "auto", "--method"), v1::SPECTRUM_METHOD_AUTO);
  EXPECT_EQ(*ParseWord(EigenTargetWords(), "smallest_real", "--target"), v1::SMALLEST_REAL);
  EXPECT_EQ(*ParseWord(FailOnWords(), "partial", "--fail-on"), FailOn::kPartial);
}

TEST(CliWords, UnknownWordsAreRejectedNotDefaulted) {
  absl::StatusOr<v1::Sampler> typo = ParseWord(SamplerWords(), "ddpn", "--sampler");
  ASSERT_FALSE(typo.ok());
  EXPECT_EQ(typo.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(typo.status().message(), "--sampler \"ddpn\" is not one of ddim, ddpm");
  EXPECT_FALSE(ParseWord(SamplerWords(), "DDPM", "--sampler").ok());  // case matters
  EXPECT_FALSE(ParseWord(FailOnWords(), "", "--fail-on").ok());
}

TEST(CliWords, FailOnGate) {
  EXPECT_TRUE(ReachesFailOn(v1::MEMORIZED, FailOn::kMemorized));
  EXPECT_FALSE(ReachesFailOn(v1::PARTIAL, FailOn::kMemorized));
  EXPECT_TRUE(ReachesFailOn(v1::MEMORIZED, FailOn::kPartial));
  EXPECT_TRUE(ReachesFailOn(v1::PARTIAL, FailOn::kPartial));
  EXPECT_FALSE(ReachesFailOn(v1::NOT_MEMORIZED, FailOn::kPartial));
  EXPECT_FALSE(ReachesFailOn(v1::VERDICT_UNSPECIFIED, FailOn::kPartial));
  for (v1::Verdict verdict :
       {v1::VERDICT_UNSPECIFIED, v1::NOT_MEMORIZED, v1::PARTIAL, v1::MEMORIZED}) {
    EXPECT_FALSE(ReachesFailOn(verdict, FailOn::kNever));
  }
}

TEST(PhaseWords, EveryPhaseHasALowercaseWord) {
  const google::protobuf::EnumDescriptor* phases = v1::AuditPhase_descriptor();
  std::set<std::string> words;
  for (int i = 0; i < phases->value_count(); ++i) {
    const auto phase = static_cast<v1::AuditPhase>(phases->value(i)->number());
    const std::string word = PhaseWord(phase);
    if (phase == v1::AUDIT_PHASE_UNSPECIFIED) {
      EXPECT_EQ(word, "");
      continue;
    }
    EXPECT_FALSE(word.empty()) << phases->value(i)->name();
    EXPECT_TRUE(words.insert(word).second) << word << " twice";
    for (char c : word) EXPECT_TRUE(c == ' ' || (c >= 'a' && c <= 'z')) << word;
  }
  EXPECT_EQ(PhaseWord(v1::AUDIT_PHASE_EARLY_METRICS), "early metrics");
  EXPECT_EQ(PhaseWord(v1::AUDIT_PHASE_MEASURED), "measured");
  EXPECT_EQ(PhaseWord(static_cast<v1::AuditPhase>(99)), "");  // a newer server's phase
}

TEST(MethodWords, ResolvedMethods) {
  EXPECT_EQ(MethodWord(v1::DENSE), "dense");
  EXPECT_EQ(MethodWord(v1::ARNOLDI), "arnoldi");
  EXPECT_EQ(MethodWord(static_cast<v1::SpectrumMethod>(99)), "unknown");
}

}  // namespace
}  // namespace memaudit::client
