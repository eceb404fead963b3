#include "client/cli/common.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/prompt_files.h"
#include "client/targets.h"

namespace memaudit::client::cli {
namespace {

std::atomic<bool> g_interrupted{false};
void OnInterrupt(int) { g_interrupted = true; }

}  // namespace

void CommonOptions::AddConnectionFlags(CLI::App& app) {
  app.add_option("--server", server,
                 "memaudit-server address HOST:PORT (or a gRPC target); `audit` fans out over "
                 "several: H1:P1,H2:P2, ipv4:A1:P1,A2:P2, ipv6:[A1]:P1,..., dns:///NAME:PORT")
      ->envname("MEMAUDIT_SERVER")
      ->capture_default_str();
  app.add_option("--timeout", timeout_seconds, "deadline for unary calls in seconds (0: none)")
      ->capture_default_str();
  app.add_option("--keepalive", keepalive_seconds,
                 "ping a server that sends nothing every this many seconds; one that does not "
                 "answer within as long (frozen, or a network partition) fails the call, and "
                 "`audit` over several servers moves its shards (0: no pings)")
      ->check(NonNegativeNumber())
      ->capture_default_str();
  app.add_flag("--tls", tls, "connect with TLS, checking the server against the system roots")
      ->envname("MEMAUDIT_TLS");
  app.add_option("--tls-ca", tls_ca,
                 "PEM roots the server's certificate must chain to (implies --tls)")
      ->envname("MEMAUDIT_TLS_CA");
  app.add_option("--tls-cert", tls_cert, "PEM client certificate for mTLS (with --tls-key)")
      ->envname("MEMAUDIT_TLS_CERT");
  app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert")
      ->envname("MEMAUDIT_TLS_KEY");
  app.add_option("--tls-server-name", tls_server_name,
                 "name the server's certificate must carry (default: the host of --server)")
      ->envname("MEMAUDIT_TLS_SERVER_NAME");
  app.add_option("--token-file", token_file,
                 "file whose first line is the bearer token sent with every call")
      ->envname("MEMAUDIT_TOKEN_FILE");
}

absl::Status CommonOptions::LoadSecurity() {
  absl::StatusOr<ChannelSecurity> loaded =
      ChannelSecurity::FromFiles(tls_ca, tls_cert, tls_key, token_file);
  if (!loaded.ok()) return loaded.status();
  security = *std::move(loaded);
  security.tls = security.tls || tls || !tls_server_name.empty();
  security.server_name = tls_server_name;
  return absl::OkStatus();
}

Client CommonOptions::Connect(const std::string& address) const {
  return Client(address.empty() ? server : address,
                std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000)), security,
                keepalive());
}

absl::StatusOr<JobOnServer> ConnectToJob(const CommonOptions& common, const std::string& text) {
  absl::StatusOr<JobRef> ref = ParseJobRef(text);
  if (!ref.ok()) return ref.status();
  return JobOnServer{common.Connect(ref->address), ref->id};
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "memaudit: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return status.code() == absl::StatusCode::kCancelled && g_interrupted ? kExitInterrupted
                                                                        : kExitError;
}

namespace {

CLI::Validator NumberAbove(double low, bool inclusive, const std::string& name) {
  return CLI::Validator(
      [low, inclusive](std::string& text) -> std::string {
        double value = 0;
        if (!absl::SimpleAtod(text, &value)) return absl::StrCat("not a number: ", text);
        if (inclusive ? value >= low : value > low) return "";
        return absl::StrCat(inclusive ? "must not be negative" : "must be positive", ", got ",
                            text);
      },
      name);
}

}  // namespace

CLI::Validator PositiveNumber() { return NumberAbove(0, /*inclusive=*/false, "POSITIVE"); }
CLI::Validator NonNegativeNumber() { return NumberAbove(0, /*inclusive=*/true, "NONNEGATIVE"); }

void PrintJson(const nlohmann::json& json) { std::cout << json.dump(2) << std::endl; }

void CatchInterrupts() { signal(SIGINT, OnInterrupt); }
bool Interrupted() { return g_interrupted.load(); }

void SamplingFlags::Add(CLI::App* command) {
  command->add_option("--model", model, "model name")->required();
  command->add_option("--steps", steps, "sampling steps (default 50)")->check(PositiveNumber());
  command->add_option("--guidance", guidance, "classifier-free guidance weight (default 1)");
  AddWordOption(command, "--sampler", sampler, SamplerWords(), "ddim | ddpm");
  command->add_option("--eta", eta, "DDIM eta")->capture_default_str();
  command
      ->add_option("--steps-offset", steps_offset,
                   "diffusers' steps_offset (1 for Stable Diffusion's schedulers)")
      ->capture_default_str();
}

absl::Status SamplingFlags::Fill(v1::SamplingOptions* options) const {
  absl::StatusOr<v1::Sampler> parsed = ParseWord(SamplerWords(), sampler, "--sampler");
  if (!parsed.ok()) return parsed.status();
  options->set_sampler(*parsed);
  options->set_num_steps(steps);
  options->set_eta(eta);
  options->set_steps_offset(steps_offset);
  if (guidance) options->set_guidance_scale(*guidance);
  return absl::OkStatus();
}

void CurvatureFlags::AddScoreKind(CLI::App* command, const std::string& description) {
  AddWordOption(command, "--score-kind", score_kind, ScoreKindWords(), description);
}

void CurvatureFlags::AddMethod(CLI::App* command) {
  AddWordOption(command, "--method", method, MethodWords(), "auto | dense | arnoldi");
  command->add_option("-k,--eigenvalues", eigenvalues, "Arnoldi: eigenvalues to find (default 24)")
      ->check(PositiveNumber());
}

void CurvatureFlags::AddTarget(CLI::App* command) {
  AddWordOption(command, "--target", target, EigenTargetWords(),
                "Arnoldi: largest_real | largest_magnitude | smallest_real");
}

absl::Status CurvatureFlags::Fill(v1::CurvatureOptions* options) const {
  absl::StatusOr<v1::ScoreKind> kind = ParseWord(ScoreKindWords(), score_kind, "--score-kind");
  if (!kind.ok()) return kind.status();
  absl::StatusOr<v1::SpectrumMethod> parsed_method = ParseWord(MethodWords(), method, "--method");
  if (!parsed_method.ok()) return parsed_method.status();
  absl::StatusOr<v1::EigenTarget> parsed_target = ParseWord(EigenTargetWords(), target, "--target");
  if (!parsed_target.ok()) return parsed_target.status();
  options->set_score_kind(*kind);
  options->set_symmetrize(symmetrize);
  options->set_method(*parsed_method);
  options->set_num_eigenvalues(eigenvalues);
  options->set_target(*parsed_target);
  return absl::OkStatus();
}

v1::Condition ClassCondition(int64_t label) {
  v1::Condition condition;
  condition.set_class_label(label);
  return condition;
}

void ConditionListFlags::Add(CLI::App* command) {
  command->add_option("--class", classes, "class labels to audit (repeatable)");
  command->add_option("--prompt", prompts, "prompts to audit (repeatable; text-to-image models)");
  command->add_option(
      "--prompts", prompts_file,
      "file of prompts: one per line, or JSON Lines {\"id\": ..., \"prompt\": ...}");
}

absl::StatusOr<std::vector<v1::Condition>> ConditionListFlags::Conditions() const {
  std::vector<v1::Condition> conditions;
  for (int64_t label : classes) conditions.push_back(ClassCondition(label));
  for (const std::string& prompt : prompts) conditions.push_back(PromptCondition(prompt));
  if (!prompts_file.empty()) {
    absl::StatusOr<std::vector<v1::Condition>> read = ReadPromptFile(prompts_file);
    if (!read.ok()) {
      return absl::Status(read.status().code(),
                          "--prompts: " + std::string(read.status().message()));
    }
    conditions.insert(conditions.end(), read->begin(), read->end());
  }
  return conditions;
}

void ConditionFlags::Add(CLI::App* command, const std::string& class_description) {
  CLI::Option* label = command->add_option("--class", class_label, class_description);
  command->add_option("--prompt", prompt, "prompt (text-to-image models)")->excludes(label);
}

void ConditionFlags::Fill(v1::Condition* condition) const {
  if (class_label) condition->set_class_label(*class_label);
  if (prompt) *condition = PromptCondition(*prompt);
}

ProgressBar::ProgressBar(bool quiet) : tty_(!quiet && isatty(STDERR_FILENO)) {}

void ProgressBar::Draw(int64_t done, int64_t total, const std::string& note) {
  if (!tty_) return;
  constexpr int kWidth = 30;
  const int64_t bounded_total = std::max<int64_t>(1, total);
  const int filled =
      static_cast<int>(kWidth * std::clamp<int64_t>(done, 0, bounded_total) / bounded_total);
  std::fprintf(stderr, "\r[%s%s] %lld/%lld samples%s", std::string(filled, '#').c_str(),
               std::string(kWidth - filled, '.').c_str(), static_cast<long long>(done),
               static_cast<long long>(total), note.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::Done() {
  if (drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

}  // namespace memaudit::client::cli
