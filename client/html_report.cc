#include "client/html_report.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/report_format.h"
#include "client/sample_files.h"

namespace memaudit::client {
namespace {

std::string Escape(const std::string& text) { return XmlEscape(text); }

std::string Number(double value) {
  if (std::isinf(value)) return value > 0 ? "∞" : "−∞";
  if (std::isnan(value)) return "–";
  return absl::StrFormat("%.4g", value);
}

std::string Badge(v1::Verdict verdict) {
  const std::string word = VerdictWord(verdict);
  return absl::StrCat("<span class=\"verdict ", word, "\">", word, "</span>");
}

std::string Image(const std::string& png, const std::string& alt, const std::string& css_class) {
  return absl::StrCat("<img class=\"", css_class, "\" alt=\"", Escape(alt),
                      "\" src=\"data:image/png;base64,", absl::Base64Escape(png), "\">");
}

bool Flagged(const v1::SampleReport& sample) {
  return sample.verdict() == v1::MEMORIZED || sample.verdict() == v1::PARTIAL;
}

// The samples whose pictures are fetched: flagged ones first (in report
// order), then the others, `count` in all.
std::vector<int> ShownSamples(const v1::ConditionReport& condition, int count) {
  std::vector<int> order;
  for (int i = 0; i < condition.samples_size(); ++i) {
    if (Flagged(condition.samples(i))) order.push_back(i);
  }
  for (int i = 0; i < condition.samples_size(); ++i) {
    if (!Flagged(condition.samples(i))) order.push_back(i);
  }
  if (static_cast<int>(order.size()) > count) order.resize(std::max(count, 0));
  return order;
}

constexpr char kStyle[] = R"css(
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1100px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
.verdict { font-weight: bold; padding: 2px 6px; border-radius: 4px; color: #fff; }
.MEMORIZED { background: #b00020; } .PARTIAL { background: #c77700; }
.NOT_MEMORIZED { background: #2e7d32; } .UNSPECIFIED { background: #777; }
.thumbs { display: flex; flex-wrap: wrap; gap: 8px; }
.thumb { text-align: center; font-size: 0.8em; }
img.sample, img.item { width: 96px; height: 96px; image-rendering: pixelated; border: 1px solid #999; }
tr.copy img { width: 128px; height: 128px; }
pre { background: #f6f6f6; padding: 6px; font-size: 0.85em; }
.note { color: #555; font-style: italic; }
.tokens { font-size: 1.1em; line-height: 1.8; }
.token { padding: 1px 3px; border-radius: 3px; }
)css";

// The prompt's words shaded by their attribution (the strongest darkest),
// and the strongest named: which words drive the memorization.
void AppendTokens(const v1::TokenAttribution& attribution, std::string* html) {
  if (!attribution.unavailable().empty()) {
    absl::StrAppend(html, "<p class=\"note\">Token attribution unavailable: ",
                    Escape(attribution.unavailable()), "</p>\n");
    return;
  }
  if (attribution.tokens().empty()) return;
  const v1::TokenAttribution::Token* strongest = &attribution.tokens(0);
  for (const v1::TokenAttribution::Token& token : attribution.tokens()) {
    if (token.score() > strongest->score()) strongest = &token;
  }
  std::string words;
  for (const v1::TokenAttribution::Token& token : attribution.tokens()) {
    const double shade =
        strongest->score() > 0 ? std::max(token.score(), 0.0) / strongest->score() : 0.0;
    std::string title = absl::StrCat("score ", Number(token.score()), ", ",
                                     absl::StrFormat("%.1f", 100 * token.share()), "%");
    if (attribution.gradient_unavailable().empty()) {
      absl::StrAppend(&title, "; gradient ", Number(token.gradient()));
    }
    absl::StrAppend(&words, "<span class=\"token\" data-share=\"", Number(token.share()),
                    "\" title=\"", title, "\" style=\"background: rgba(176, 0, 32, ",
                    absl::StrFormat("%.2f", shade), ")", shade > 0.55 ? "; color: #fff" : "", "\">",
                    Escape(token.text()), "</span>");
  }
  absl::StrAppend(html, "<p class=\"tokens\">Tokens by attribution: ", words, "</p>\n");
  if (strongest->score() > 0) {
    absl::StrAppend(html, "<p>Strongest token: <b class=\"strongest-token\">",
                    Escape(std::string(absl::StripAsciiWhitespace(strongest->text()))), "</b> (",
                    absl::StrFormat("%.1f", 100 * strongest->share()),
                    "% of the prompt's attribution: how much ‖ε̂_c − ε̂_∅‖ at x_T drops when the "
                    "token is deleted, t = ",
                    attribution.timestep(), ", ", attribution.samples(), " samples)</p>\n");
  } else {
    absl::StrAppend(html, "<p class=\"note\">No token's deletion lowers ‖ε̂_c − ε̂_∅‖ at x_T (t = ",
                    attribution.timestep(), ", ", attribution.samples(),
                    " samples): no single word drives it.</p>\n");
  }
  if (!attribution.gradient_unavailable().empty()) {
    absl::StrAppend(html, "<p class=\"note\">No gradient attribution: ",
                    Escape(attribution.gradient_unavailable()), "</p>\n");
  }
}

void AppendSummary(const v1::AuditJob& job, std::string* html) {
  const v1::AuditReport& report = job.report();
  const v1::PolicyUsed& policy = report.policy();
  absl::StrAppend(
      html, "<h1>memaudit: ", Escape(report.model()), " is ", Badge(report.verdict()), "</h1>\n",
      "<table class=\"summary\">\n", "<tr><th>model</th><td>", Escape(report.model()),
      "</td></tr>\n<tr><th>checksum</th><td>", Escape(report.model_checksum()),
      "</td></tr>\n<tr><th>verdict</th><td id=\"model-verdict\">", Badge(report.verdict()), " — ",
      report.memorized_samples(), " of ", report.total_samples(), " samples memorized (",
      Number(100.0 * report.memorized_fraction()), "%)</td></tr>\n", "<tr><th>policy</th><td>",
      Escape(policy.rule()), "; a condition is MEMORIZED from ",
      Number(100.0 * policy.condition_memorized_fraction()), "% memorized samples, the model from ",
      Number(100.0 * policy.model_memorized_fraction()), "%",
      policy.early_rule().empty() ? "" : "; early flags: " + Escape(policy.early_rule()),
      "</td></tr>\n<tr><th>sampling</th><td>",
      job.request().sampling().num_steps() > 0
          ? absl::StrCat(job.request().sampling().num_steps(), " steps")
          : std::string("the server's default steps"),
      ", guidance ",
      job.request().sampling().has_guidance_scale()
          ? Number(job.request().sampling().guidance_scale())
          : "1",
      ", steps_offset ", job.request().sampling().steps_offset(), ", first seed ",
      job.request().seed(), "</td></tr>\n<tr><th>job</th><td>", Escape(job.id()), " on ",
      Escape(report.device()), ", ", Number(report.timing().total_seconds()),
      " s</td></tr>\n</table>\n");
}

void AppendCopies(const v1::ConditionReport& condition, const ConditionEvidence* evidence,
                  std::string* html) {
  std::string rows;
  for (int i = 0; i < condition.samples_size(); ++i) {
    const v1::SampleReport& sample = condition.samples(i);
    if (!Flagged(sample)) continue;
    const SampleEvidence* pictures =
        evidence != nullptr && i < static_cast<int>(evidence->samples.size())
            ? &evidence->samples[i]
            : nullptr;
    const std::string seed = absl::StrCat(sample.seed());
    std::string generation = "<span class=\"note\">no picture</span>";
    std::string item = "<span class=\"note\">not fetched</span>";
    if (pictures != nullptr && !pictures->image_png.empty()) {
      generation = Image(pictures->image_png, "generation, seed " + seed, "sample");
    }
    if (pictures != nullptr && !pictures->nearest_png.empty()) {
      item = Image(pictures->nearest_png, absl::StrCat("training item ", sample.nearest().index()),
                   "item");
    }
    const v1::SpectrumSummary& summary = sample.summary();
    std::string nearest = "no reference set";
    if (sample.has_nearest()) {
      const v1::NearestNeighbor& n = sample.nearest();
      nearest =
          absl::StrCat("item ", n.index(), " (×", n.multiplicity(), ")<br>d₁ = ", Number(n.d1()),
                       "<br>d₁/d₂ = ", Number(n.ratio()), n.is_copy() ? "<br>a copy" : "");
    }
    absl::StrAppend(&rows, "<tr class=\"copy\"><td>seed ", seed, "<br>", Badge(sample.verdict()),
                    "</td><td class=\"generation\">", generation, "</td><td class=\"training\">",
                    item, "</td><td>", nearest, "</td><td>κ max ", Number(summary.max_kappa()),
                    "<br>n₊ ", summary.positive_eigenvalues(), "<br>flat ",
                    summary.flat_directions(), "<br>noise radius ",
                    summary.has_noise_radius() ? Number(summary.noise_radius()) : "–", "<br>σ_t ",
                    Number(sample.sigma()), "</td></tr>\n");
  }
  if (rows.empty()) return;
  absl::StrAppend(html,
                  "<h3>Flagged samples beside their nearest training items</h3>\n<table "
                  "class=\"copies\">\n<tr><th>sample</th><th>generation</th><th>training "
                  "item</th><th>nearest</th><th>spectrum</th></tr>\n",
                  rows, "</table>\n");
}

void AppendCondition(const v1::ConditionReport& condition, const ConditionEvidence* evidence,
                     std::string* html) {
  absl::StrAppend(html, "<section class=\"condition\" data-verdict=\"",
                  VerdictWord(condition.verdict()), "\">\n<h2>", Escape(condition.label()), " ",
                  Badge(condition.verdict()), "</h2>\n<p>", condition.memorized(), " memorized, ",
                  condition.partial(), " partial, ", condition.not_memorized(),
                  " not memorized of ", condition.samples_size(), " samples");
  if (condition.has_early_outlier_z()) {
    absl::StrAppend(html, "; early outlier z ", Number(condition.early_outlier_z()));
  }
  absl::StrAppend(html, "</p>\n");
  if (condition.has_early()) {
    absl::StrAppend(html, "<pre>", Escape(EarlyMetricsText(condition.early())), "</pre>\n");
  }
  AppendTokens(condition.token_attribution(), html);
  if (evidence != nullptr) {
    std::string thumbs;
    for (int i : ShownSamples(condition, condition.samples_size())) {
      if (i >= static_cast<int>(evidence->samples.size())) continue;
      const SampleEvidence& pictures = evidence->samples[i];
      if (pictures.image_png.empty()) continue;
      const v1::SampleReport& sample = condition.samples(i);
      absl::StrAppend(&thumbs, "<div class=\"thumb\">",
                      Image(pictures.image_png, absl::StrCat("seed ", sample.seed()), "sample"),
                      "<br>", sample.seed(), " ", Badge(sample.verdict()), "</div>\n");
    }
    if (!thumbs.empty()) absl::StrAppend(html, "<div class=\"thumbs\">\n", thumbs, "</div>\n");
  }
  AppendCopies(condition, evidence, html);
  if (evidence != nullptr && !evidence->spectrum_svg.empty()) {
    absl::StrAppend(html, "<div class=\"spectrum\">", evidence->spectrum_svg, "</div>\n");
  }
  absl::StrAppend(html, "</section>\n");
}

}  // namespace

std::string AuditReportHtml(const v1::AuditJob& job, const ReportEvidence& evidence) {
  const v1::AuditReport& report = job.report();
  std::string html = absl::StrCat(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>memaudit: ",
      Escape(report.model()), " ", VerdictWord(report.verdict()), "</title>\n<style>", kStyle,
      "</style>\n</head>\n<body>\n");
  AppendSummary(job, &html);
  absl::flat_hash_map<const v1::ConditionReport*, int> index_of;
  for (int i = 0; i < report.conditions_size(); ++i) index_of[&report.conditions(i)] = i;
  for (const v1::ConditionReport* condition : WorstFirst(report)) {
    const int index = index_of[condition];
    const ConditionEvidence* pictures = index < static_cast<int>(evidence.conditions.size())
                                            ? &evidence.conditions[index]
                                            : nullptr;
    AppendCondition(*condition, pictures, &html);
  }
  if (!evidence.notes.empty()) {
    absl::StrAppend(&html, "<h2>Notes</h2>\n<ul>\n");
    for (const std::string& note : evidence.notes) {
      absl::StrAppend(&html, "<li class=\"note\">", Escape(note), "</li>\n");
    }
    absl::StrAppend(&html, "</ul>\n");
  }
  absl::StrAppend(&html,
                  "<p class=\"note\">Samples are reproducible from their seeds with the "
                  "sampling options above. Made by memaudit.</p>\n</body>\n</html>\n");
  return html;
}

absl::StatusOr<ReportEvidence> FetchReportEvidence(
    Client& client, const v1::AuditJob& job, const v1::ModelInfo& model,
    const EvidenceOptions& options, const std::function<void(const std::string&)>& log) {
  if (job.state() != v1::JOB_SUCCEEDED) {
    return absl::FailedPreconditionError(absl::StrCat(
        "audit ", job.id(), " is ", v1::JobState_Name(job.state()), ": it has no report"));
  }
  const auto say = [&](const std::string& line) {
    if (log) log(line);
  };
  const v1::AuditReport& report = job.report();
  const v1::ModelConfig& config = model.config();
  const bool latent = config.has_latent();
  std::vector<int64_t> shape;
  if (latent) {
    shape.assign(config.latent().image_shape().begin(), config.latent().image_shape().end());
  } else {
    shape.assign(config.sample_shape().begin(), config.sample_shape().end());
  }
  const bool images = IsImageShape(shape);
  ReportEvidence evidence;
  evidence.conditions.resize(report.conditions_size());
  if (!images) {
    evidence.notes.push_back("the model's samples are not images: no pictures");
  }
  bool items_refused = false;
  for (int c = 0; c < report.conditions_size(); ++c) {
    const v1::ConditionReport& condition = report.conditions(c);
    ConditionEvidence& pictures = evidence.conditions[c];
    pictures.samples.resize(condition.samples_size());
    const std::vector<int> shown = ShownSamples(condition, options.thumbnails);
    if (images && !shown.empty()) {
      say(absl::StrCat("samples of ", condition.label()));
      v1::SampleRequest request;
      request.set_model(report.model());
      *request.mutable_condition() = condition.condition();
      *request.mutable_sampling() = job.request().sampling();
      request.set_decode(latent);
      for (int i : shown) request.add_seeds(condition.samples(i).seed());
      absl::StatusOr<v1::SampleResponse> drawn = client.Sample(request);
      if (!drawn.ok()) return drawn.status();
      const v1::Tensor& tensor = latent ? drawn->images() : drawn->samples();
      absl::StatusOr<std::vector<float>> values = TensorValues(tensor);
      if (!values.ok()) return values.status();
      const size_t per_sample = values->size() / std::max<size_t>(1, shown.size());
      for (size_t k = 0; k < shown.size(); ++k) {
        std::vector<float> one(values->begin() + k * per_sample,
                               values->begin() + (k + 1) * per_sample);
        absl::StatusOr<std::string> png =
            EncodePngGrid(one, 1, shape, options.low, options.high, 1);
        if (!png.ok()) return png.status();
        pictures.samples[shown[k]].image_png = *std::move(png);
      }
    }
    // The training items nearest to the flagged samples shown.
    std::vector<int> flagged;
    std::vector<int64_t> indices;
    for (int i : shown) {
      const v1::SampleReport& sample = condition.samples(i);
      if (Flagged(sample) && sample.has_nearest()) {
        flagged.push_back(i);
        indices.push_back(sample.nearest().index());
      }
    }
    if (images && options.training_items && !items_refused && !indices.empty()) {
      say(absl::StrCat("training items nearest to ", condition.label()));
      absl::StatusOr<v1::GetTrainingItemsResponse> items =
          client.GetTrainingItems(report.model(), indices);
      if (!items.ok()) {
        const absl::StatusCode code = items.status().code();
        if (code != absl::StatusCode::kPermissionDenied &&
            code != absl::StatusCode::kFailedPrecondition) {
          return items.status();
        }
        items_refused = true;
        evidence.notes.push_back(
            absl::StrCat("training items not shown: ", items.status().message()));
      } else {
        for (size_t k = 0; k < flagged.size() && k < static_cast<size_t>(items->items_size());
             ++k) {
          absl::StatusOr<std::vector<float>> values = TensorValues(items->items(k));
          if (!values.ok()) return values.status();
          std::vector<int64_t> item_shape(items->items(k).shape().begin(),
                                          items->items(k).shape().end());
          if (!IsImageShape(item_shape)) continue;
          absl::StatusOr<std::string> png =
              EncodePngGrid(*values, 1, item_shape, options.low, options.high, 1);
          if (!png.ok()) return png.status();
          pictures.samples[flagged[k]].nearest_png = *std::move(png);
        }
      }
    }
    if (options.spectra && condition.samples_size() > 0) {
      const v1::SampleReport& first = condition.samples(shown.empty() ? 0 : shown.front());
      say(absl::StrCat("spectrum of ", condition.label(), ", seed ", first.seed()));
      v1::SpectrumRequest request;
      request.set_model(report.model());
      request.set_seed(first.seed());
      *request.mutable_condition() = condition.condition();
      *request.mutable_sampling() = job.request().sampling();
      *request.mutable_curvature() = job.request().curvature();
      if (first.timestep() > 0) request.set_timestep(first.timestep());
      absl::StatusOr<v1::SpectrumResponse> spectrum = client.Spectrum(request);
      if (!spectrum.ok()) return spectrum.status();
      pictures.spectrum_svg =
          SpectrumSvg(*spectrum, absl::StrCat(condition.label(), ", seed ", first.seed(), " (",
                                              VerdictWord(first.verdict()), ")"));
    }
  }
  return evidence;
}

}  // namespace memaudit::client
