// The HTML audit page (client/html_report.h) from a report and pictures:
// self-contained, worst condition first, text escaped, and every flagged
// sample's generation beside the training item it is nearest to. The page
// with pictures fetched from a real server is checked end to end in
// service_test (IntegrationTest.HtmlReportShowsCopiesBesideTheirTrainingItems).
#include "client/html_report.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "client/sample_files.h"

namespace memaudit::client {
namespace {

v1::SampleReport Sample(uint64_t seed, v1::Verdict verdict, int64_t nearest) {
  v1::SampleReport sample;
  sample.set_seed(seed);
  sample.set_verdict(verdict);
  sample.set_sigma(0.08);
  sample.mutable_summary()->set_max_kappa(-0.9);
  sample.mutable_summary()->set_noise_radius(0.2);
  if (nearest >= 0) {
    sample.mutable_nearest()->set_index(nearest);
    sample.mutable_nearest()->set_d1(0.01);
    sample.mutable_nearest()->set_ratio(0.02);
    sample.mutable_nearest()->set_multiplicity(100);
    sample.mutable_nearest()->set_is_copy(true);
  }
  return sample;
}

std::string Png(float value) {
  std::vector<float> pixels(4 * 4, value);
  absl::StatusOr<std::string> png = EncodePngGrid(pixels, 1, {4, 4}, -1, 1, 1);
  EXPECT_TRUE(png.ok()) << png.status();
  return png.ok() ? *png : "";
}

// Two conditions in request order: "dog" (nothing flagged), then a prompt
// with markup whose first sample is a copy of training item 7.
v1::AuditJob Job() {
  v1::AuditJob job;
  job.set_id("audit-0000000000ab");
  job.set_state(v1::JOB_SUCCEEDED);
  job.mutable_request()->mutable_sampling()->set_num_steps(50);
  v1::AuditReport& report = *job.mutable_report();
  report.set_model("mnist<39>");
  report.set_verdict(v1::MEMORIZED);
  report.set_memorized_samples(1);
  report.set_total_samples(4);
  report.set_memorized_fraction(0.25);
  v1::ConditionReport& dog = *report.add_conditions();
  dog.set_label("dog");
  dog.set_verdict(v1::NOT_MEMORIZED);
  dog.set_not_memorized(2);
  *dog.add_samples() = Sample(0, v1::NOT_MEMORIZED, 3);
  *dog.add_samples() = Sample(1, v1::NOT_MEMORIZED, 4);
  v1::ConditionReport& cat = *report.add_conditions();
  cat.set_label("a <b>cat</b> & \"friends\"");
  cat.set_verdict(v1::MEMORIZED);
  cat.set_memorized(1);
  cat.set_not_memorized(1);
  *cat.add_samples() = Sample(0, v1::MEMORIZED, 7);
  *cat.add_samples() = Sample(1, v1::NOT_MEMORIZED, 2);
  return job;
}

ReportEvidence Evidence() {
  ReportEvidence evidence;
  evidence.conditions.resize(2);
  evidence.conditions[0].samples = {{Png(0.0f), ""}, {Png(0.1f), ""}};
  evidence.conditions[1].samples = {{Png(0.9f), Png(0.8f)}, {Png(-0.5f), ""}};
  evidence.conditions[1].spectrum_svg = "<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>";
  evidence.notes.push_back("training items not shown: <denied>");
  return evidence;
}

TEST(HtmlReportTest, SelfContainedWithTheVerdictAndWorstConditionFirst) {
  const std::string html = AuditReportHtml(Job(), Evidence());
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find("src=\"http"), std::string::npos);
  EXPECT_NE(html.find("id=\"model-verdict\"><span class=\"verdict MEMORIZED\">MEMORIZED"),
            std::string::npos);
  EXPECT_NE(html.find("1 of 4 samples memorized"), std::string::npos);
  const size_t cat = html.find("<h2>a &lt;b&gt;cat&lt;/b&gt; &amp; &quot;friends&quot;");
  const size_t dog = html.find("<h2>dog ");
  ASSERT_NE(cat, std::string::npos) << "the label is not escaped";
  ASSERT_NE(dog, std::string::npos);
  EXPECT_LT(cat, dog) << "the MEMORIZED condition comes first";
  EXPECT_EQ(html.find("<b>cat</b>"), std::string::npos);
  EXPECT_EQ(html.find("mnist<39>"), std::string::npos);
  EXPECT_NE(html.find("&lt;denied&gt;"), std::string::npos) << "the note";
  EXPECT_NE(html.find("<svg"), std::string::npos) << "the spectrum";
}

TEST(HtmlReportTest, ACopySitsBesideItsTrainingItem) {
  const ReportEvidence evidence = Evidence();
  const std::string html = AuditReportHtml(Job(), evidence);
  // Exactly one copy row: the flagged sample, its generation, then item 7.
  const size_t row = html.find("<tr class=\"copy\">");
  ASSERT_NE(row, std::string::npos);
  EXPECT_EQ(html.find("<tr class=\"copy\">", row + 1), std::string::npos);
  const size_t end = html.find("</tr>", row);
  const std::string copy = html.substr(row, end - row);
  const size_t generation = copy.find("<td class=\"generation\"><img");
  const size_t training = copy.find("<td class=\"training\"><img");
  ASSERT_NE(generation, std::string::npos) << copy;
  ASSERT_NE(training, std::string::npos) << copy;
  EXPECT_LT(generation, training);
  EXPECT_NE(copy.find("item 7"), std::string::npos);
  EXPECT_NE(copy.find("d₁/d₂ = 0.02"), std::string::npos);
  // The images are the evidence's PNGs, inline.
  for (const auto& [cell, png] :
       {std::pair{generation, evidence.conditions[1].samples[0].image_png},
        std::pair{training, evidence.conditions[1].samples[0].nearest_png}}) {
    const size_t start = copy.find("base64,", cell) + 7;
    const std::string encoded = copy.substr(start, copy.find('"', start) - start);
    std::string decoded;
    ASSERT_TRUE(absl::Base64Unescape(encoded, &decoded));
    EXPECT_EQ(decoded, png);
    EXPECT_EQ(decoded.substr(1, 3), "PNG");
  }
}

TEST(HtmlReportTest, WithoutPicturesTheNumbersStay) {
  const std::string html = AuditReportHtml(Job(), ReportEvidence{});
  EXPECT_EQ(html.find("<img"), std::string::npos);
  EXPECT_NE(html.find("<tr class=\"copy\">"), std::string::npos);
  EXPECT_NE(html.find("no picture"), std::string::npos);
}

// A prompt's tokens: shaded by their deletion scores, the strongest named
// with its share; when no deletion lowers the metric none is named, and a
// missing gradient is said.
TEST(HtmlReportTest, TokensAreShadedAndTheStrongestNamed) {
  v1::AuditJob job = Job();
  v1::TokenAttribution& attribution =
      *job.mutable_report()->mutable_conditions(1)->mutable_token_attribution();
  attribution.set_samples(2);
  attribution.set_timestep(40);
  const std::vector<std::pair<std::string, double>> tokens = {
      {"a ", 0.5}, {"fenwick ", 3.0}, {"<print> ", -0.5}};
  for (const auto& [text, score] : tokens) {
    v1::TokenAttribution::Token& token = *attribution.add_tokens();
    token.set_text(text);
    token.set_score(score);
    token.set_share(std::max(score, 0.0) / 3.5);
    token.set_gradient(1.0);
  }
  std::string html = AuditReportHtml(job, ReportEvidence{});
  EXPECT_NE(html.find("<b class=\"strongest-token\">fenwick</b> (85.7%"), std::string::npos);
  EXPECT_NE(html.find("&lt;print&gt;"), std::string::npos);
  EXPECT_NE(html.find("rgba(176, 0, 32, 1.00)"), std::string::npos) << "the strongest darkest";
  EXPECT_NE(html.find("rgba(176, 0, 32, 0.00)"), std::string::npos) << "a negative score unshaded";
  EXPECT_NE(html.find("gradient 1"), std::string::npos);
  for (auto& token : *attribution.mutable_tokens()) token.set_score(-1.0);
  attribution.set_gradient_unavailable("no <table>");
  html = AuditReportHtml(job, ReportEvidence{});
  EXPECT_EQ(html.find("strongest-token"), std::string::npos);
  EXPECT_NE(html.find("No token's deletion lowers"), std::string::npos);
  EXPECT_NE(html.find("No gradient attribution: no &lt;table&gt;"), std::string::npos);
  EXPECT_EQ(html.find("gradient 1"), std::string::npos);
}

}  // namespace
}  // namespace memaudit::client
