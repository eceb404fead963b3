// An audit as one self-contained HTML page for the people who decide on a
// release: the verdict and policy, each condition worst first with its
// samples as thumbnails, every MEMORIZED or PARTIAL sample beside the
// training item it is nearest to (with d₁, d₁/d₂ and its spectrum summary),
// and a spectrum plot per condition. Images are inline (data: URIs), the
// plots inline SVG, the style inline CSS; no script and no network, so the
// file opens from a mail attachment.
//
// The report holds numbers only; the pictures come from the server:
// samples are reproducible from their seeds (the Sample RPC with the
// audit's sampling options), spectra from the Spectrum RPC, and training
// items from GetTrainingItems, which needs the reviewer role on a server
// that serves them. FetchReportEvidence gets what it may and says in notes
// what it could not.
#ifndef MEMAUDIT_CLIENT_HTML_REPORT_H_
#define MEMAUDIT_CLIENT_HTML_REPORT_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/client.h"
#include "memaudit/v1/audit_service.pb.h"
#include "memaudit/v1/model_service.pb.h"

namespace memaudit::client {

// The pictures of one sample: PNG bytes, "" when there is none (a model
// whose samples are not images, or an item the server would not give).
struct SampleEvidence {
  std::string image_png;    // the generation (decoded for a latent model)
  std::string nearest_png;  // the training item it is nearest to
};

struct ConditionEvidence {
  // Aligned with the condition's samples, possibly fewer (the thumbnails
  // shown); flagged samples beyond them have no pictures.
  std::vector<SampleEvidence> samples;
  std::string spectrum_svg;  // "" when not fetched
};

struct ReportEvidence {
  std::vector<ConditionEvidence> conditions;  // aligned with report.conditions
  std::vector<std::string> notes;             // what could not be fetched, and why
};

// The page for a finished job (its report and request). Text from the
// report (labels, prompts, model names) is HTML-escaped.
std::string AuditReportHtml(const v1::AuditJob& job, const ReportEvidence& evidence);

struct EvidenceOptions {
  int thumbnails = 8;          // samples shown per condition (flagged ones first)
  bool spectra = true;         // a Spectrum call per condition
  bool training_items = true;  // GetTrainingItems for flagged samples
  float low = -1, high = 1;    // pixel values mapped to black and white
};

// Fetches the pictures of `job` (SUCCEEDED) of `model` from `client`.
// Errors of the Sample and Spectrum calls are returned (they need only the
// audit role); a refused GetTrainingItems (PERMISSION_DENIED for the audit
// role, FAILED_PRECONDITION on a server that does not serve training
// items) becomes a note. `log` gets a line per step (may be empty).
absl::StatusOr<ReportEvidence> FetchReportEvidence(
    Client& client, const v1::AuditJob& job, const v1::ModelInfo& model,
    const EvidenceOptions& options, const std::function<void(const std::string&)>& log = {});

}  // namespace memaudit::client

#endif  // MEMAUDIT_CLIENT_HTML_REPORT_H_
