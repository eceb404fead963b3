#include "client/fanout.h"

#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/verdict/verdict_rules.h"
#include "proto/token_shares.h"

namespace memaudit::client {
namespace {

using google::protobuf::util::MessageDifferencer;

// v1::Verdict of each Verdict, by its value (verdict_rules.h orders them).
constexpr v1::Verdict kProtoVerdicts[] = {v1::NOT_MEMORIZED, v1::PARTIAL, v1::MEMORIZED};

v1::Verdict ToProto(Verdict verdict) { return kProtoVerdicts[static_cast<int>(verdict)]; }

Verdict FromProto(v1::Verdict verdict) {
  for (Verdict v : {Verdict::kMemorized, Verdict::kPartial}) {
    if (ToProto(v) == verdict) return v;
  }
  return Verdict::kNotMemorized;
}

// "shard 2 of 3".
std::string Which(const v1::AuditShard& shard) {
  return absl::StrCat("shard ", shard.index(), " of ", shard.count());
}

// "shard 2 of 3 (SOURCE)".
std::string Name(const ShardReport& shard) {
  return absl::StrCat(Which(shard.report.shard()), " (", shard.source, ")");
}

// A shard covering conditions [first_condition, +conditions) and samples
// [first_sample, +samples) of each.
ShardRequest MakeShard(const v1::AuditRequest& request, int64_t total_conditions,
                       int64_t samples_per_condition, int64_t first_condition, int64_t conditions,
                       int64_t first_sample, int64_t samples) {
  ShardRequest made;
  v1::AuditShard& shard = made.shard;
  shard.set_first_condition(first_condition);
  shard.set_conditions(conditions);
  shard.set_total_conditions(total_conditions);
  shard.set_first_sample(first_sample);
  shard.set_samples(samples);
  shard.set_samples_per_condition(samples_per_condition);
  made.request = request;
  made.request.clear_conditions();
  for (int64_t c = first_condition;
       c < first_condition + conditions && c < request.conditions_size(); ++c) {
    *made.request.add_conditions() = request.conditions(static_cast<int>(c));
  }
  made.request.set_seed(request.seed() + static_cast<uint64_t>(first_sample));
  made.request.set_samples_per_condition(samples);
  return made;
}

// The part of `total` that block `i` of `blocks` gets (the first
// total mod blocks get one more).
int64_t BlockSize(int64_t total, int64_t blocks, int64_t i) {
  return total / blocks + (i < total % blocks ? 1 : 0);
}

// What all shards must agree on, against the first (by index).
absl::Status CheckSameAudit(const ShardReport& first, const ShardReport& other) {
  const v1::AuditReport& a = first.report;
  const v1::AuditReport& b = other.report;
  if (a.model() != b.model()) {
    return absl::FailedPreconditionError(absl::StrCat(Name(first), " audited model \"", a.model(),
                                                      "\", ", Name(other), " \"", b.model(),
                                                      "\": not parts of one audit"));
  }
  if (a.model_checksum() != b.model_checksum()) {
    return absl::FailedPreconditionError(
        absl::StrCat(Name(first), " audited ", a.model(), " with model.pt ", a.model_checksum(),
                     ", ", Name(other), " with ", b.model_checksum(),
                     ": the replicas serve different versions of the model; not merged"));
  }
  if (!MessageDifferencer::Equals(a.policy(), b.policy())) {
    return absl::FailedPreconditionError(
        absl::StrCat(Name(first), " and ", Name(other), " judged with different verdict policies (",
                     a.policy().ShortDebugString(), " vs ", b.policy().ShortDebugString(),
                     "): the replicas' model configs differ; not merged"));
  }
  const v1::AuditShard& s = a.shard();
  const v1::AuditShard& t = b.shard();
  if (s.count() != t.count() || s.total_conditions() != t.total_conditions() ||
      s.samples_per_condition() != t.samples_per_condition()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Name(first), " is of an audit of ", s.total_conditions(), " condition(s) x ",
                     s.samples_per_condition(), " samples in ", s.count(), " shards, ", Name(other),
                     " of ", t.total_conditions(), " x ", t.samples_per_condition(), " in ",
                     t.count(), ": not parts of one split"));
  }
  return absl::OkStatus();
}

// That `shard`'s report holds what its shard says, with seeds following
// seed + sample index.
absl::Status CheckHolds(const ShardReport& shard) {
  const v1::AuditShard& s = shard.report.shard();
  if (s.index() < 0 || s.index() >= s.count() || s.first_condition() < 0 || s.conditions() < 1 ||
      s.first_condition() + s.conditions() > s.total_conditions() || s.first_sample() < 0 ||
      s.samples() < 1 || s.first_sample() + s.samples() > s.samples_per_condition()) {
    return absl::InvalidArgumentError(
        absl::StrCat(shard.source, ": the shard is out of range: ", s.ShortDebugString()));
  }
  if (shard.report.conditions_size() != s.conditions()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Name(shard), ": the report has ", shard.report.conditions_size(),
                     " condition(s), the shard says ", s.conditions()));
  }
  // Early-only audits report no samples.
  const bool per_sample = shard.report.policy().early_rule().empty();
  for (const v1::ConditionReport& condition : shard.report.conditions()) {
    if (per_sample && condition.samples_size() != s.samples()) {
      return absl::InvalidArgumentError(absl::StrCat(
          Name(shard), ": condition ", condition.label(), " has ", condition.samples_size(),
          " sample report(s), the shard says ", s.samples()));
    }
  }
  return absl::OkStatus();
}

// Sources of the shards in `which`, for messages.
std::string Sources(const std::vector<const ShardReport*>& which) {
  std::vector<std::string> names;
  for (const ShardReport* shard : which) names.push_back(Name(*shard));
  return absl::StrJoin(names, ", ");
}

// One condition's parts: (the shard, its report of the condition), by
// first sample.
using Parts = std::vector<std::pair<const ShardReport*, const v1::ConditionReport*>>;

// The audit's seed: sample i of every condition has seed + i (0 when the
// reports have no samples).
uint64_t AuditSeed(const std::vector<const ShardReport*>& shards) {
  for (const ShardReport* shard : shards) {
    for (const v1::ConditionReport& condition : shard->report.conditions()) {
      if (condition.samples_size() > 0) {
        return condition.samples(0).seed() -
               static_cast<uint64_t>(shard->report.shard().first_sample());
      }
    }
  }
  return 0;
}

// That `parts` cover samples [0, samples_per_condition) of condition `c`
// exactly once, name the same condition, and draw seed + i for sample i.
absl::Status CheckCoverage(int64_t c, const Parts& parts, int64_t samples_per_condition,
                           uint64_t seed) {
  int64_t next = 0;
  const ShardReport* previous = nullptr;
  const v1::ConditionReport& named = *parts.front().second;
  for (const auto& [shard, condition] : parts) {
    const v1::AuditShard& s = shard->report.shard();
    if (s.first_sample() > next) {
      return absl::InvalidArgumentError(absl::StrCat("condition ", c, " (", named.label(),
                                                     "): samples [", next, ", ", s.first_sample(),
                                                     ") are in no shard"));
    }
    if (s.first_sample() < next) {
      return absl::InvalidArgumentError(
          absl::StrCat("condition ", c, " (", named.label(), "): samples [", s.first_sample(), ", ",
                       next, ") are in both ", Name(*previous), " and ", Name(*shard)));
    }
    if (!MessageDifferencer::Equals(condition->condition(), named.condition()) ||
        condition->label() != named.label()) {
      return absl::InvalidArgumentError(absl::StrCat(
          Name(*parts.front().first), " and ", Name(*shard), " disagree on condition ", c, " (\"",
          named.label(), "\" vs \"", condition->label(), "\"): shards of different requests"));
    }
    for (int i = 0; i < condition->samples_size(); ++i) {
      if (condition->samples(i).seed() != seed + static_cast<uint64_t>(s.first_sample() + i)) {
        return absl::InvalidArgumentError(absl::StrCat(
            Name(*shard), ": condition ", c, " (", named.label(), ") sample ", s.first_sample() + i,
            " has seed ", condition->samples(i).seed(), " where the first shard implies ",
            seed + static_cast<uint64_t>(s.first_sample() + i), ": shards of different seeds"));
      }
    }
    next = s.first_sample() + s.samples();
    previous = shard;
  }
  if (next < samples_per_condition) {
    return absl::InvalidArgumentError(absl::StrCat("condition ", c, " (", named.label(),
                                                   "): samples [", next, ", ",
                                                   samples_per_condition, ") are in no shard"));
  }
  return absl::OkStatus();
}

// Adds `part`'s token attribution to `total`'s: each token's score and
// gradient are means over both parts' samples (the shares follow). The
// same tokens in both, or the reports are of different prompts or servers;
// when either part says it is unavailable, so does the merge, and the same
// for the gradient.
absl::Status MergeTokenAttribution(const v1::TokenAttribution& part, v1::TokenAttribution* total) {
  if (!part.unavailable().empty() || !total->unavailable().empty()) {
    // Failed in a shard: the merged report says so, with no partial scores.
    if (total->unavailable().empty()) total->set_unavailable(part.unavailable());
    total->clear_tokens();
    return absl::OkStatus();
  }
  if (part.tokens_size() != total->tokens_size()) {
    return absl::InvalidArgumentError(absl::StrCat("token attributions of ", total->tokens_size(),
                                                   " and ", part.tokens_size(), " tokens"));
  }
  if (total->gradient_unavailable().empty()) {
    total->set_gradient_unavailable(part.gradient_unavailable());
  }
  if (part.tokens().empty()) {  // a prompt with no tokens: only the samples add up
    total->set_samples(total->samples() + part.samples());
    return absl::OkStatus();
  }
  const double n = static_cast<double>(total->samples()), m = static_cast<double>(part.samples());
  const auto mean = [&](double a, double b) { return (a * n + b * m) / std::max(n + m, 1.0); };
  const bool gradient = total->gradient_unavailable().empty();
  for (int i = 0; i < part.tokens_size(); ++i) {
    v1::TokenAttribution::Token& token = *total->mutable_tokens(i);
    if (token.position() != part.tokens(i).position() || token.text() != part.tokens(i).text()) {
      return absl::InvalidArgumentError(absl::StrCat("token ", i, " differs (\"", token.text(),
                                                     "\" vs \"", part.tokens(i).text(), "\")"));
    }
    token.set_score(mean(token.score(), part.tokens(i).score()));
    token.set_gradient(gradient ? mean(token.gradient(), part.tokens(i).gradient()) : 0.0);
  }
  SetTokenShares(*total);
  total->set_samples(total->samples() + part.samples());
  return absl::OkStatus();
}

bool HasEarlyMetrics(const v1::AuditReport& report) {
  if (!report.policy().early_rule().empty()) return true;
  return std::any_of(report.conditions().begin(), report.conditions().end(),
                     [](const v1::ConditionReport& condition) {
                       return condition.has_early() || condition.has_early_outlier_z();
                     });
}

}  // namespace

bool CanSplitAudit(const v1::AuditRequest& request) {
  return !request.early_only() && request.early_steps() == 0;
}

absl::StatusOr<std::vector<ShardRequest>> SplitAudit(const v1::AuditRequest& request,
                                                     int64_t count) {
  if (count < 1) {
    return absl::InvalidArgumentError(absl::StrCat("shard count ", count, ": must be at least 1"));
  }
  if (request.samples_per_condition() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("samples_per_condition: must be positive, got ",
                                                   request.samples_per_condition()));
  }
  const int64_t samples = request.samples_per_condition() > 0 ? request.samples_per_condition()
                                                              : kDefaultSamplesPerCondition;
  const int64_t conditions = std::max(1, request.conditions_size());
  std::vector<ShardRequest> shards;
  if (!CanSplitAudit(request)) count = 1;
  if (conditions >= count) {
    for (int64_t i = 0, first = 0; i < count; ++i) {
      const int64_t size = BlockSize(conditions, count, i);
      shards.push_back(MakeShard(request, conditions, samples, first, size, 0, samples));
      first += size;
    }
  } else {
    // Whole batches per block: a shard then batches its samples as one
    // server batches the same samples, and its results are the same bits.
    const int64_t batches = (samples + kAuditSamplesPerBatch - 1) / kAuditSamplesPerBatch;
    for (int64_t c = 0; c < conditions; ++c) {
      const int64_t blocks = std::min(batches, BlockSize(count, conditions, c));
      for (int64_t b = 0, first = 0; b < blocks; ++b) {
        const int64_t size =
            std::min(samples - first, BlockSize(batches, blocks, b) * kAuditSamplesPerBatch);
        shards.push_back(MakeShard(request, conditions, samples, c, 1, first, size));
        first += size;
      }
    }
  }
  for (size_t i = 0; i < shards.size(); ++i) {
    shards[i].shard.set_index(static_cast<int64_t>(i));
    shards[i].shard.set_count(static_cast<int64_t>(shards.size()));
  }
  return shards;
}

absl::StatusOr<v1::AuditReport> MergeShardReports(const std::vector<ShardReport>& shards) {
  if (shards.empty()) return absl::InvalidArgumentError("no shard reports to merge");
  for (const ShardReport& shard : shards) {
    if (!shard.report.has_shard()) {
      return absl::InvalidArgumentError(
          absl::StrCat(shard.source, ": not the report of a shard (it has no \"shard\")"));
    }
  }
  // By index; a repeated index is an error.
  std::vector<const ShardReport*> ordered;
  for (const ShardReport& shard : shards) ordered.push_back(&shard);
  std::stable_sort(ordered.begin(), ordered.end(), [](const ShardReport* a, const ShardReport* b) {
    return a->report.shard().index() < b->report.shard().index();
  });
  for (const ShardReport* shard : ordered) {
    if (absl::Status s = CheckSameAudit(*ordered.front(), *shard); !s.ok()) return s;
    if (absl::Status s = CheckHolds(*shard); !s.ok()) return s;
  }
  for (size_t i = 1; i < ordered.size(); ++i) {
    if (ordered[i]->report.shard().index() == ordered[i - 1]->report.shard().index()) {
      return absl::InvalidArgumentError(absl::StrCat(ordered[i - 1]->source, " and ",
                                                     ordered[i]->source, " are both ",
                                                     Which(ordered[i]->report.shard())));
    }
  }
  const v1::AuditShard& split = ordered.front()->report.shard();
  std::vector<std::string> missing;
  for (int64_t index = 0, k = 0; index < split.count(); ++index) {
    if (k < static_cast<int64_t>(ordered.size()) && ordered[k]->report.shard().index() == index) {
      ++k;
    } else {
      missing.push_back(absl::StrCat(index));
    }
  }
  if (!missing.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("shard(s) ", absl::StrJoin(missing, ", "),
                                                   " of ", split.count(),
                                                   " missing; have: ", Sources(ordered)));
  }
  if (ordered.size() > 1) {
    for (const ShardReport* shard : ordered) {
      if (HasEarlyMetrics(shard->report)) {
        return absl::FailedPreconditionError(absl::StrCat(
            Name(*shard),
            " has early metrics: such audits compare each condition with all the others and "
            "run as one shard; several cannot be merged"));
      }
    }
  }

  std::map<int64_t, Parts> by_condition;
  for (const ShardReport* shard : ordered) {
    for (int i = 0; i < shard->report.conditions_size(); ++i) {
      by_condition[shard->report.shard().first_condition() + i].emplace_back(
          shard, &shard->report.conditions(i));
    }
  }
  const v1::AuditReport& first = ordered.front()->report;
  v1::AuditReport merged;
  merged.set_model(first.model());
  merged.set_model_checksum(first.model_checksum());
  *merged.mutable_policy() = first.policy();
  std::vector<std::string> devices;
  v1::AuditTiming& timing = *merged.mutable_timing();
  for (const ShardReport* shard : ordered) {
    const v1::AuditTiming& part = shard->report.timing();
    timing.set_total_seconds(std::max(timing.total_seconds(), part.total_seconds()));
    timing.set_queued_seconds(std::max(timing.queued_seconds(), part.queued_seconds()));
    timing.set_sampling_seconds(timing.sampling_seconds() + part.sampling_seconds());
    timing.set_curvature_seconds(timing.curvature_seconds() + part.curvature_seconds());
    if (std::find(devices.begin(), devices.end(), shard->report.device()) == devices.end()) {
      devices.push_back(shard->report.device());
    }
  }
  merged.set_device(absl::StrJoin(devices, ", "));

  const uint64_t seed = AuditSeed(ordered);
  Verdict worst = Verdict::kNotMemorized;
  int64_t memorized_samples = 0, total_samples = 0;
  for (int64_t c = 0; c < split.total_conditions(); ++c) {
    Parts& parts = by_condition[c];
    if (parts.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("condition ", c, " of ", split.total_conditions(), " is in no shard"));
    }
    std::stable_sort(parts.begin(), parts.end(), [](const auto& a, const auto& b) {
      return a.first->report.shard().first_sample() < b.first->report.shard().first_sample();
    });
    if (absl::Status s = CheckCoverage(c, parts, split.samples_per_condition(), seed); !s.ok()) {
      return s;
    }
    v1::ConditionReport& condition = *merged.add_conditions();
    condition = *parts.front().second;
    for (size_t k = 1; k < parts.size(); ++k) {
      const v1::ConditionReport& part = *parts[k].second;
      for (const v1::SampleReport& sample : part.samples()) *condition.add_samples() = sample;
      condition.set_memorized(condition.memorized() + part.memorized());
      condition.set_partial(condition.partial() + part.partial());
      condition.set_not_memorized(condition.not_memorized() + part.not_memorized());
      if (!part.has_token_attribution() && !condition.has_token_attribution()) continue;
      if (absl::Status s = MergeTokenAttribution(part.token_attribution(),
                                                 condition.mutable_token_attribution());
          !s.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            Name(*parts[k].first), ": condition ", c, " (", condition.label(), "): ", s.message()));
      }
    }
    if (parts.size() > 1) {
      condition.set_verdict(ToProto(ConditionVerdictFromCounts(
          condition.memorized(), condition.partial(), condition.samples_size(),
          merged.policy().condition_memorized_fraction())));
    }
    worst = std::max(worst, FromProto(condition.verdict()));
    memorized_samples += condition.memorized();
    total_samples += condition.samples_size();
  }
  merged.set_memorized_samples(memorized_samples);
  merged.set_total_samples(total_samples);
  merged.set_memorized_fraction(
      total_samples > 0 ? static_cast<double>(memorized_samples) / total_samples : 0.0);
  merged.set_verdict(ordered.size() == 1 ? first.verdict()
                                         : ToProto(ModelVerdictFromCounts(
                                               worst, memorized_samples, total_samples,
                                               merged.policy().model_memorized_fraction())));
  return merged;
}

}  // namespace memaudit::client
