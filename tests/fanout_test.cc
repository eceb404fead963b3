// The fan-out's pure parts (client/targets.h, client/fanout.h), without a
// server: resolving --server into replicas, splitting an audit into shards,
// and merging shard reports into the report one server would have made.
#include <gmock/gmock.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/fanout.h"
#include "client/report_format.h"
#include "client/targets.h"
#include "core/verdict/verdict_rules.h"

namespace memaudit::client {
namespace {

using google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

// --- ResolveReplicas ----------------------------------------------------

std::vector<std::string> Addresses(const std::vector<Replica>& replicas) {
  std::vector<std::string> addresses;
  for (const Replica& replica : replicas) addresses.push_back(replica.address);
  return addresses;
}

TEST(ResolveReplicasTest, OneAddressIsKeptAsItIs) {
  for (const std::string spec : {"127.0.0.1:8500", "memaudit:8500", "unix:/run/memaudit.sock"}) {
    absl::StatusOr<std::vector<Replica>> replicas = ResolveReplicas(spec);
    ASSERT_TRUE(replicas.ok()) << replicas.status();
    EXPECT_EQ(*replicas, (std::vector<Replica>{{spec, ""}}));
  }
}

TEST(ResolveReplicasTest, ListsAndGrpcAddressSyntax) {
  absl::StatusOr<std::vector<Replica>> plain = ResolveReplicas("a.example:1, b:2,[::1]:3");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(Addresses(*plain), (std::vector<std::string>{"a.example:1", "b:2", "[::1]:3"}));
  absl::StatusOr<std::vector<Replica>> v4 = ResolveReplicas("ipv4:127.0.0.1:5001,10.0.0.2:5002");
  ASSERT_TRUE(v4.ok()) << v4.status();
  EXPECT_EQ(Addresses(*v4), (std::vector<std::string>{"127.0.0.1:5001", "10.0.0.2:5002"}));
  absl::StatusOr<std::vector<Replica>> v6 = ResolveReplicas("ipv6:[::1]:5001,[fe80::1]:5002");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(Addresses(*v6), (std::vector<std::string>{"[::1]:5001", "[fe80::1]:5002"}));
  absl::StatusOr<std::vector<Replica>> single = ResolveReplicas("ipv4:127.0.0.1:7");
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(Addresses(*single), (std::vector<std::string>{"127.0.0.1:7"}));
}

TEST(ResolveReplicasTest, DnsNamesResolveToEveryAddress) {
  for (const std::string spec : {"dns:///localhost:8500", "dns:localhost:8500"}) {
    absl::StatusOr<std::vector<Replica>> replicas = ResolveReplicas(spec);
    ASSERT_TRUE(replicas.ok()) << replicas.status();
    const std::vector<std::string> addresses = Addresses(*replicas);
    EXPECT_NE(std::find(addresses.begin(), addresses.end(), "127.0.0.1:8500"), addresses.end())
        << ::testing::PrintToString(addresses);
    for (const Replica& replica : *replicas) {
      EXPECT_TRUE(replica.address == "127.0.0.1:8500" || replica.address == "[::1]:8500")
          << replica.address;
      EXPECT_EQ(replica.name, "localhost");  // for TLS checks
    }
    EXPECT_EQ(std::count(addresses.begin(), addresses.end(), "127.0.0.1:8500"), 1);
  }
  absl::StatusOr<std::vector<Replica>> literal = ResolveReplicas("dns:///127.0.0.1:9");
  ASSERT_TRUE(literal.ok()) << literal.status();
  EXPECT_EQ(Addresses(*literal), (std::vector<std::string>{"127.0.0.1:9"}));
}

TEST(ResolveReplicasTest, ErrorsNameTheBadPart) {
  struct Case {
    std::string spec, message;
  };
  for (const Case& bad : std::vector<Case>{
           {"", "no server address"},
           {"a:1,,b:2", "entry 2 of \"a:1,,b:2\" is empty"},
           {"a:1,b", "\"b\" in \"a:1,b\": no port"},
           {"a:1,b:0", "\"b:0\" in \"a:1,b:0\": the port must be a number in 1..65535"},
           {"a:1,b:70000", "\"b:70000\" in"},
           {"a:1,b:x1", "\"b:x1\" in"},
           {"a:1,::1:5", "\"::1:5\" in \"a:1,::1:5\": an IPv6 address needs brackets"},
           {"a:1,:5", "\":5\" in \"a:1,:5\": no host"},
           {"a:1,[::1:5", "\"[::1:5\" in \"a:1,[::1:5\": no closing \"]\""},
           {"ipv4:127.0.0.1:1,localhost:2", "\"localhost:2\" in"},
           {"ipv4:127.0.0.1:1,[::1]:2", "not a numeric IPv4 address"},
           {"ipv6:[::1]:1,127.0.0.1:2", "\"127.0.0.1:2\" in"},
           {"dns://8.8.8.8/memaudit:8500", "a DNS authority is not supported"},
           {"dns:///localhost", "\"localhost\" in \"dns:///localhost\": no port"},
           // One address is checked as an entry of a list is (gRPC would
           // dial 127.0.0.1:99999 on port 34463).
           {"127.0.0.1:99999", "\"127.0.0.1:99999\": the port must be a number in 1..65535"},
           {"localhost:65537", "\"localhost:65537\": the port must be"},
           {"localhost", "\"localhost\": no port"},
           {"::1:8500", "an IPv6 address needs brackets"},
       }) {
    absl::StatusOr<std::vector<Replica>> replicas = ResolveReplicas(bad.spec);
    ASSERT_FALSE(replicas.ok()) << bad.spec;
    EXPECT_EQ(replicas.status().code(), absl::StatusCode::kInvalidArgument) << bad.spec;
    EXPECT_THAT(std::string(replicas.status().message()), HasSubstr(bad.message)) << bad.spec;
    // The check every CLI command runs on --server, without resolving.
    EXPECT_EQ(ParseServerAddress(bad.spec).status(), replicas.status()) << bad.spec;
  }
  for (const std::string good : {"127.0.0.1:8500", "memaudit:1", "[::1]:65535", "a:1,b:2",
                                 "unix:/run/memaudit.sock", "dns:///no-such-host.invalid:1"}) {
    EXPECT_TRUE(ParseServerAddress(good).ok()) << good << ": " << ParseServerAddress(good).status();
  }
  absl::StatusOr<std::vector<Replica>> unknown = ResolveReplicas("dns:///no-such-host.invalid:1");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("\"no-such-host.invalid\""));
}

TEST(ParseServerAddressTest, CountsReplicasWithoutResolving) {
  EXPECT_EQ(ParseServerAddress("a:1,b:2")->size(), 2u);
  EXPECT_EQ(ParseServerAddress("ipv4:127.0.0.1:1,127.0.0.2:1")->size(), 2u);
  EXPECT_EQ(ParseServerAddress("dns:///no-such-host.invalid:1")->size(), 1u);
  EXPECT_EQ(ParseServerAddress("127.0.0.1:8500")->size(), 1u);
}

// The ids a fanned-out report lists (ADDRESS/ID) name their server.
TEST(ParseJobRefTest, AnIdAloneOrItsAddressBeforeTheLastSlash) {
  EXPECT_EQ(*ParseJobRef("audit-1f"), (JobRef{"", "audit-1f"}));
  EXPECT_EQ(*ParseJobRef("10.0.0.5:8500/audit-1f"), (JobRef{"10.0.0.5:8500", "audit-1f"}));
  EXPECT_EQ(*ParseJobRef("[::1]:8500/audit-1f"), (JobRef{"[::1]:8500", "audit-1f"}));
  EXPECT_EQ(*ParseJobRef("dns:///memaudit:8500/audit-1f"),
            (JobRef{"dns:///memaudit:8500", "audit-1f"}));
  EXPECT_EQ(*ParseJobRef("unix:/run/memaudit.sock/audit-1f"),
            (JobRef{"unix:/run/memaudit.sock", "audit-1f"}));
  struct Case {
    std::string text, message;
  };
  for (const Case& bad : std::vector<Case>{
           {"", "no job id"},
           {"10.0.0.5:8500/", "no job id"},
           {"/audit-1f", "the address of job \"/audit-1f\": no server address"},
           {"10.0.0.5/audit-1f", "the address of job \"10.0.0.5/audit-1f\": \"10.0.0.5\": no port"},
           {"a:1/audit-1,b:2/audit-2", "names several jobs (the shards of a fanned-out audit)"},
           {"ipv4:127.0.0.1:1,127.0.0.2:1/audit-1", "names several jobs"},
       }) {
    absl::StatusOr<JobRef> ref = ParseJobRef(bad.text);
    ASSERT_FALSE(ref.ok()) << bad.text;
    EXPECT_EQ(ref.status().code(), absl::StatusCode::kInvalidArgument) << bad.text;
    EXPECT_THAT(std::string(ref.status().message()), HasSubstr(bad.message)) << bad.text;
  }
}

// --- SplitAudit ---------------------------------------------------------

v1::AuditRequest Request(int conditions, int64_t samples, uint64_t seed = 100) {
  v1::AuditRequest request;
  request.set_model("m");
  for (int c = 0; c < conditions; ++c) request.add_conditions()->set_class_label(c);
  request.set_samples_per_condition(samples);
  request.set_seed(seed);
  request.mutable_sampling()->set_num_steps(7);
  return request;
}

// (first_condition, conditions, first_sample, samples) of each shard, and
// that each request matches its shard.
std::vector<std::vector<int64_t>> Layout(const std::vector<ShardRequest>& shards,
                                         const v1::AuditRequest& whole) {
  std::vector<std::vector<int64_t>> layout;
  for (size_t i = 0; i < shards.size(); ++i) {
    const v1::AuditShard& shard = shards[i].shard;
    const v1::AuditRequest& request = shards[i].request;
    EXPECT_EQ(shard.index(), static_cast<int64_t>(i));
    EXPECT_EQ(shard.count(), static_cast<int64_t>(shards.size()));
    EXPECT_EQ(request.seed(), whole.seed() + shard.first_sample());
    EXPECT_EQ(request.samples_per_condition(), shard.samples());
    EXPECT_EQ(request.sampling().num_steps(), whole.sampling().num_steps());
    if (whole.conditions_size() > 0) {
      EXPECT_EQ(request.conditions_size(), shard.conditions());
      for (int c = 0; c < request.conditions_size(); ++c) {
        EXPECT_EQ(request.conditions(c).class_label(), shard.first_condition() + c);
      }
    } else {
      EXPECT_EQ(request.conditions_size(), 0);
    }
    layout.push_back(
        {shard.first_condition(), shard.conditions(), shard.first_sample(), shard.samples()});
  }
  return layout;
}

using Blocks = std::vector<std::vector<int64_t>>;

TEST(SplitAuditTest, BlocksOfConditionsWhenThereAreEnough) {
  const v1::AuditRequest request = Request(5, 4);
  absl::StatusOr<std::vector<ShardRequest>> shards = SplitAudit(request, 3);
  ASSERT_TRUE(shards.ok()) << shards.status();
  EXPECT_EQ(Layout(*shards, request), (Blocks{{0, 2, 0, 4}, {2, 2, 0, 4}, {4, 1, 0, 4}}));
  EXPECT_EQ((*shards)[0].shard.total_conditions(), 5);
  EXPECT_EQ((*shards)[0].shard.samples_per_condition(), 4);
}

TEST(SplitAuditTest, BlocksOfSamplesWhenConditionsAreFewer) {
  const v1::AuditRequest two = Request(2, 16);
  absl::StatusOr<std::vector<ShardRequest>> shards = SplitAudit(two, 3);
  ASSERT_TRUE(shards.ok()) << shards.status();
  EXPECT_EQ(Layout(*shards, two), (Blocks{{0, 1, 0, 8}, {0, 1, 8, 8}, {1, 1, 0, 16}}));
  EXPECT_EQ((*shards)[1].request.seed(), 108u);  // samples 8..15 use seeds 108..115

  // No conditions: one run, split by samples; the default 16 filled in:
  // two batches of 8, so two shards although three were asked for.
  const v1::AuditRequest none = Request(0, 0);
  shards = SplitAudit(none, 3);
  ASSERT_TRUE(shards.ok()) << shards.status();
  EXPECT_EQ(Layout(*shards, none), (Blocks{{0, 1, 0, 8}, {0, 1, 8, 8}}));
  EXPECT_EQ((*shards)[0].shard.total_conditions(), 1);
  EXPECT_EQ((*shards)[0].shard.samples_per_condition(), kDefaultSamplesPerCondition);

  // Blocks of whole batches (the server's kAuditSamplesPerBatch, counted
  // from the condition's first sample), the last one short: 36 samples are
  // batches of 8, 8, 8, 8, 4.
  const v1::AuditRequest odd = Request(1, 36);
  shards = SplitAudit(odd, 3);
  ASSERT_TRUE(shards.ok()) << shards.status();
  EXPECT_EQ(Layout(*shards, odd), (Blocks{{0, 1, 0, 16}, {0, 1, 16, 16}, {0, 1, 32, 4}}));

  // Never inside a batch: 2 samples stay one shard.
  const v1::AuditRequest tiny = Request(1, 2);
  shards = SplitAudit(tiny, 5);
  ASSERT_TRUE(shards.ok()) << shards.status();
  EXPECT_EQ(Layout(*shards, tiny), (Blocks{{0, 1, 0, 2}}));
}

TEST(SplitAuditTest, AuditsWithEarlyMetricsStayWhole) {
  v1::AuditRequest early = Request(12, 4);
  early.set_early_only(true);
  absl::StatusOr<std::vector<ShardRequest>> shards = SplitAudit(early, 3);
  ASSERT_TRUE(shards.ok()) << shards.status();
  EXPECT_EQ(Layout(*shards, early), (Blocks{{0, 12, 0, 4}}));
  EXPECT_TRUE(MessageDifferencer::Equals((*shards)[0].request, early));
  early.set_early_only(false);
  early.set_early_steps(2);
  EXPECT_FALSE(CanSplitAudit(early));
  EXPECT_EQ(SplitAudit(early, 4)->size(), 1u);
}

TEST(SplitAuditTest, BadCounts) {
  EXPECT_EQ(SplitAudit(Request(2, 4), 0).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::vector<ShardRequest>> negative = SplitAudit(Request(2, -1), 2);
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(negative.status().message()), HasSubstr("samples_per_condition"));
}

// --- MergeShardReports --------------------------------------------------

// What a server would report for `request`, made up but deterministic in
// (condition, seed), as the real engine is: so a shard's samples are the
// whole audit's. `verdict_of` picks each sample's verdict.
v1::AuditReport ServerReport(const v1::AuditRequest& request,
                             v1::Verdict (*verdict_of)(int64_t label, uint64_t seed)) {
  v1::AuditReport report;
  report.set_model(request.model());
  report.set_device("cpu");
  report.set_model_checksum("sha256:aaaa");
  v1::PolicyUsed& policy = *report.mutable_policy();
  policy.set_rule("noise radius");
  policy.set_condition_memorized_fraction(0.5);
  policy.set_model_memorized_fraction(0.1);
  const int64_t samples = request.samples_per_condition() > 0 ? request.samples_per_condition()
                                                              : kDefaultSamplesPerCondition;
  const int conditions = std::max(1, request.conditions_size());
  Verdict worst = Verdict::kNotMemorized;
  for (int c = 0; c < conditions; ++c) {
    v1::ConditionReport& condition = *report.add_conditions();
    const int64_t label = request.conditions_size() > 0 ? request.conditions(c).class_label() : -1;
    if (request.conditions_size() > 0) *condition.mutable_condition() = request.conditions(c);
    condition.set_label(label >= 0 ? absl::StrCat("class ", label) : "none");
    for (int64_t i = 0; i < samples; ++i) {
      v1::SampleReport& sample = *condition.add_samples();
      sample.set_seed(request.seed() + i);
      sample.set_verdict(verdict_of(label, sample.seed()));
      sample.set_timestep(20);
      sample.mutable_summary()->set_max_kappa(-0.001 * static_cast<double>(sample.seed()) - label);
      if (sample.verdict() == v1::MEMORIZED) condition.set_memorized(condition.memorized() + 1);
      if (sample.verdict() == v1::PARTIAL) condition.set_partial(condition.partial() + 1);
      if (sample.verdict() == v1::NOT_MEMORIZED) {
        condition.set_not_memorized(condition.not_memorized() + 1);
      }
    }
    const Verdict verdict =
        ConditionVerdictFromCounts(condition.memorized(), condition.partial(), samples, 0.5);
    condition.set_verdict(verdict == Verdict::kMemorized ? v1::MEMORIZED
                          : verdict == Verdict::kPartial ? v1::PARTIAL
                                                         : v1::NOT_MEMORIZED);
    worst = std::max(worst, verdict);
    report.set_memorized_samples(report.memorized_samples() + condition.memorized());
    report.set_total_samples(report.total_samples() + samples);
  }
  report.set_memorized_fraction(static_cast<double>(report.memorized_samples()) /
                                static_cast<double>(report.total_samples()));
  const Verdict model =
      ModelVerdictFromCounts(worst, report.memorized_samples(), report.total_samples(), 0.1);
  report.set_verdict(model == Verdict::kMemorized ? v1::MEMORIZED
                     : model == Verdict::kPartial ? v1::PARTIAL
                                                  : v1::NOT_MEMORIZED);
  report.mutable_timing()->set_total_seconds(0.5 * static_cast<double>(samples));
  report.mutable_timing()->set_sampling_seconds(0.1 * static_cast<double>(samples));
  return report;
}

v1::Verdict Mixed(int64_t label, uint64_t seed) {
  const uint64_t h = (seed * 7 + static_cast<uint64_t>(label + 1) * 13) % 11;
  return h == 0 ? v1::MEMORIZED : h == 1 ? v1::PARTIAL : v1::NOT_MEMORIZED;
}

// Seeds 100..107 memorized, the rest not.
v1::Verdict FirstEightMemorized(int64_t, uint64_t seed) {
  return seed < 108 ? v1::MEMORIZED : v1::NOT_MEMORIZED;
}
v1::Verdict FirstSevenMemorized(int64_t, uint64_t seed) {
  return seed < 107 ? v1::MEMORIZED : v1::NOT_MEMORIZED;
}
v1::Verdict TwoMemorized(int64_t, uint64_t seed) {
  return seed == 100 || seed == 115 ? v1::MEMORIZED : v1::NOT_MEMORIZED;
}

// The shards of `request` split `count` ways, each reported by ServerReport
// with its shard set; sources "replica-I".
std::vector<ShardReport> ShardReports(const v1::AuditRequest& request, int64_t count,
                                      v1::Verdict (*verdict_of)(int64_t, uint64_t) = Mixed) {
  std::vector<ShardReport> reports;
  absl::StatusOr<std::vector<ShardRequest>> split = SplitAudit(request, count);
  EXPECT_TRUE(split.ok()) << split.status();
  for (const ShardRequest& shard : *split) {
    v1::AuditReport report = ServerReport(shard.request, verdict_of);
    *report.mutable_shard() = shard.shard;
    reports.push_back({absl::StrCat("replica-", shard.shard.index()), report});
  }
  return reports;
}

// `merged` equals the one-server report of `request`, timing aside.
void ExpectSameAsOneServer(v1::AuditReport merged, const v1::AuditRequest& request,
                           v1::Verdict (*verdict_of)(int64_t, uint64_t) = Mixed) {
  v1::AuditReport whole = ServerReport(request, verdict_of);
  merged.clear_timing();
  whole.clear_timing();
  std::string differences;
  MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&differences);
  EXPECT_TRUE(differencer.Compare(whole, merged)) << differences;
}

TEST(MergeShardReportsTest, EverySplitGivesTheOneServerReport) {
  for (int conditions : {0, 1, 2, 3, 5}) {
    for (int64_t samples : {1, 3, 16}) {
      for (int64_t count = 1; count <= 7; ++count) {
        SCOPED_TRACE(
            absl::StrCat(conditions, " conditions x ", samples, " samples, ", count, " shards"));
        const v1::AuditRequest request = Request(conditions, samples);
        std::vector<ShardReport> shards = ShardReports(request, count);
        std::reverse(shards.begin(), shards.end());  // any order
        absl::StatusOr<v1::AuditReport> merged = MergeShardReports(shards);
        ASSERT_TRUE(merged.ok()) << merged.status();
        EXPECT_FALSE(merged->has_shard());
        ExpectSameAsOneServer(*merged, request);
      }
    }
  }
}

TEST(MergeShardReportsTest, SplitConditionsAreJudgedAgainFromTheirCounts) {
  // 16 samples of one condition in two shards of 8.
  const v1::AuditRequest request = Request(1, 16);
  struct Case {
    v1::Verdict (*verdict_of)(int64_t, uint64_t);
    v1::Verdict first_shard, second_shard, merged_condition, merged_model;
  };
  for (const Case& c : std::vector<Case>{
           // 8 of 16 ≥ half: MEMORIZED, as the first shard alone said.
           {FirstEightMemorized, v1::MEMORIZED, v1::NOT_MEMORIZED, v1::MEMORIZED, v1::MEMORIZED},
           // 7 of 8 is MEMORIZED in the first shard, 7 of 16 only PARTIAL;
           // the model is MEMORIZED by its fraction (7/16 ≥ 0.1).
           {FirstSevenMemorized, v1::MEMORIZED, v1::NOT_MEMORIZED, v1::PARTIAL, v1::MEMORIZED},
           // 1 of 8 in each shard (PARTIAL), 2 of 16 = 0.125 ≥ 0.1 of the model.
           {TwoMemorized, v1::PARTIAL, v1::PARTIAL, v1::PARTIAL, v1::MEMORIZED},
       }) {
    std::vector<ShardReport> shards = ShardReports(request, 2, c.verdict_of);
    ASSERT_EQ(shards.size(), 2u);
    EXPECT_EQ(shards[0].report.conditions(0).verdict(), c.first_shard);
    EXPECT_EQ(shards[1].report.conditions(0).verdict(), c.second_shard);
    absl::StatusOr<v1::AuditReport> merged = MergeShardReports(shards);
    ASSERT_TRUE(merged.ok()) << merged.status();
    EXPECT_EQ(merged->conditions(0).verdict(), c.merged_condition);
    EXPECT_EQ(merged->verdict(), c.merged_model);
    EXPECT_EQ(merged->conditions(0).samples_size(), 16);
    EXPECT_EQ(merged->conditions(0).samples(8).seed(), 108u);
    ExpectSameAsOneServer(*merged, request, c.verdict_of);
  }
}

TEST(MergeShardReportsTest, TimingTakesTheLongestShardAndSumsTheWork) {
  std::vector<ShardReport> shards = ShardReports(Request(3, 4), 3);
  shards[0].report.mutable_timing()->set_total_seconds(3);
  shards[1].report.mutable_timing()->set_total_seconds(5);
  shards[2].report.mutable_timing()->set_total_seconds(4);
  shards[1].report.set_device("cuda:0");
  absl::StatusOr<v1::AuditReport> merged = MergeShardReports(shards);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ(merged->timing().total_seconds(), 5);
  EXPECT_DOUBLE_EQ(merged->timing().sampling_seconds(), 3 * 0.1 * 4);
  EXPECT_EQ(merged->device(), "cpu, cuda:0");
}

// The error of merging `shards`, which must fail with `code`.
std::string MergeError(const std::vector<ShardReport>& shards, absl::StatusCode code) {
  absl::StatusOr<v1::AuditReport> merged = MergeShardReports(shards);
  EXPECT_FALSE(merged.ok());
  EXPECT_EQ(merged.status().code(), code) << merged.status();
  return std::string(merged.status().message());
}

TEST(MergeShardReportsTest, DifferentModelFilesAreNotMerged) {
  std::vector<ShardReport> shards = ShardReports(Request(3, 4), 3);
  shards[2].report.set_model_checksum("sha256:bbbb");
  const std::string message = MergeError(shards, absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(message, HasSubstr("shard 0 of 3 (replica-0)"));
  EXPECT_THAT(message, HasSubstr("shard 2 of 3 (replica-2)"));
  EXPECT_THAT(message, HasSubstr("sha256:aaaa"));
  EXPECT_THAT(message, HasSubstr("sha256:bbbb"));
  EXPECT_THAT(message, HasSubstr("different versions"));

  shards = ShardReports(Request(3, 4), 3);
  shards[1].report.mutable_policy()->set_condition_memorized_fraction(0.25);
  EXPECT_THAT(MergeError(shards, absl::StatusCode::kFailedPrecondition),
              HasSubstr("different verdict policies"));
  shards = ShardReports(Request(3, 4), 3);
  shards[1].report.set_model("other");
  EXPECT_THAT(MergeError(shards, absl::StatusCode::kFailedPrecondition), HasSubstr("\"other\""));
}

TEST(MergeShardReportsTest, CoverageMustBeExactlyOnce) {
  std::vector<ShardReport> shards = ShardReports(Request(3, 4), 3);
  shards.erase(shards.begin() + 1);
  EXPECT_THAT(MergeError(shards, absl::StatusCode::kInvalidArgument),
              HasSubstr("shard(s) 1 of 3 missing"));

  shards = ShardReports(Request(3, 4), 3);
  shards.push_back(shards[1]);
  shards.back().source = "copy";
  EXPECT_THAT(MergeError(shards, absl::StatusCode::kInvalidArgument),
              HasSubstr("replica-1 and copy are both shard 1 of 3"));

  // Hand-made shards whose sample blocks overlap, or leave a gap.
  shards = ShardReports(Request(1, 16), 2);
  v1::AuditRequest overlapping = Request(1, 10, 106);
  v1::AuditReport second = ServerReport(overlapping, Mixed);
  *second.mutable_shard() = shards[1].report.shard();
  second.mutable_shard()->set_first_sample(6);
  second.mutable_shard()->set_samples(10);
  shards[1].report = second;
  EXPECT_THAT(MergeError(shards, absl::StatusCode::kInvalidArgument),
              HasSubstr("samples [6, 8) are in both shard 0 of 2 (replica-0) and shard 1 of 2"));
  shards = ShardReports(Request(1, 16), 2);
  v1::AuditReport short_second = ServerReport(Request(1, 6, 110), Mixed);
  *short_second.mutable_shard() = shards[1].report.shard();
  short_second.mutable_shard()->set_first_sample(10);
  short_second.mutable_shard()->set_samples(6);
  shards[1].report = short_second;
  EXPECT_THAT(MergeError(shards, absl::StatusCode::kInvalidArgument),
              HasSubstr("condition 0 (class 0): samples [8, 10) are in no shard"));
}

TEST(MergeShardReportsTest, ShardsOfDifferentAuditsAreRefused) {
  // Another split of the same audit.
  std::vector<ShardReport> shards = ShardReports(Request(4, 4), 2);
  std::vector<ShardReport> other = ShardReports(Request(4, 4), 4);
  shards[1] = other[3];
  EXPECT_THAT(MergeError(shards, absl::StatusCode::kInvalidArgument),
              HasSubstr("not parts of one split"));
  // Another seed.
  shards = ShardReports(Request(4, 4), 2);
  shards[1] = ShardReports(Request(4, 4, 500), 2)[1];
  EXPECT_THAT(MergeError(shards, absl::StatusCode::kInvalidArgument),
              HasSubstr("shards of different seeds"));
  // Other conditions (seen where shards share a condition: the report
  // does not carry the request).
  v1::AuditRequest relabelled = Request(1, 16);
  relabelled.mutable_conditions(0)->set_class_label(9);
  shards = ShardReports(Request(1, 16), 2);
  shards[1] = ShardReports(relabelled, 2)[1];
  EXPECT_THAT(MergeError(shards, absl::StatusCode::kInvalidArgument),
              HasSubstr("shards of different requests"));
  // A report that does not hold what its shard says.
  shards = ShardReports(Request(4, 4), 2);
  shards[0].report.mutable_conditions(1)->mutable_samples()->RemoveLast();
  EXPECT_THAT(MergeError(shards, absl::StatusCode::kInvalidArgument),
              HasSubstr("condition class 1 has 3 sample report(s), the shard says 4"));
  // Not a shard at all.
  shards = ShardReports(Request(4, 4), 2);
  shards[1].report.clear_shard();
  EXPECT_THAT(MergeError(shards, absl::StatusCode::kInvalidArgument),
              HasSubstr("replica-1: not the report of a shard"));
  EXPECT_EQ(MergeShardReports({}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MergeShardReportsTest, EarlyMetricsMergeOnlyAsOneShard) {
  std::vector<ShardReport> shards = ShardReports(Request(3, 4), 3);
  shards[1].report.mutable_conditions(0)->set_early_outlier_z(4.0);
  EXPECT_THAT(MergeError(shards, absl::StatusCode::kFailedPrecondition),
              HasSubstr("has early metrics"));
  // One shard (as SplitAudit makes for such audits) passes through.
  std::vector<ShardReport> whole = ShardReports(Request(3, 4), 1);
  whole[0].report.mutable_conditions(0)->set_early_outlier_z(4.0);
  absl::StatusOr<v1::AuditReport> merged = MergeShardReports(whole);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ(merged->conditions(0).early_outlier_z(), 4.0);
}

// A prompt's token attribution as a server computes it over `condition`'s
// samples: each token's score and gradient the mean of a per-sample value
// (the first token's score negative: deleting it raises m).
void Attribute(v1::ConditionReport* condition) {
  v1::TokenAttribution& attribution = *condition->mutable_token_attribution();
  attribution.set_samples(condition->samples_size());
  attribution.set_timestep(40);
  double positive = 0;
  for (int k = 0; k < 3; ++k) {
    double score = 0, gradient = 0;
    for (const v1::SampleReport& sample : condition->samples()) {
      const double n = static_cast<double>(condition->samples_size());
      score += (k - 0.5) * static_cast<double>(1 + sample.seed() % 5) / n;
      gradient += (k + 2.0) * static_cast<double>(1 + sample.seed() % 3) / n;
    }
    v1::TokenAttribution::Token& token = *attribution.add_tokens();
    token.set_position(k + 1);
    token.set_text(absl::StrCat("word", k, " "));
    token.set_score(score);
    token.set_gradient(gradient);
    positive += std::max(score, 0.0);
  }
  for (auto& token : *attribution.mutable_tokens()) {
    token.set_share(std::max(token.score(), 0.0) / positive);
  }
}

// Scores are means over samples, so a condition split into shards merges
// to the one-server attribution; shards of different prompts do not merge.
TEST(MergeShardReportsTest, TokenAttributionsMergeAsMeansOverSamples) {
  const v1::AuditRequest request = Request(1, 16);
  for (int64_t count : {2, 3, 5}) {
    std::vector<ShardReport> shards = ShardReports(request, count);
    for (ShardReport& shard : shards) Attribute(shard.report.mutable_conditions(0));
    absl::StatusOr<v1::AuditReport> merged = MergeShardReports(shards);
    ASSERT_TRUE(merged.ok()) << merged.status();
    v1::AuditReport whole = ServerReport(request, Mixed);
    Attribute(whole.mutable_conditions(0));
    const v1::TokenAttribution& got = merged->conditions(0).token_attribution();
    const v1::TokenAttribution& want = whole.conditions(0).token_attribution();
    EXPECT_EQ(got.samples(), 16);
    ASSERT_EQ(got.tokens_size(), 3);
    for (int k = 0; k < 3; ++k) {
      EXPECT_NEAR(got.tokens(k).score(), want.tokens(k).score(), 1e-12) << count << " " << k;
      EXPECT_NEAR(got.tokens(k).share(), want.tokens(k).share(), 1e-12) << count << " " << k;
      EXPECT_NEAR(got.tokens(k).gradient(), want.tokens(k).gradient(), 1e-9) << count << " " << k;
    }
    EXPECT_LT(got.tokens(0).score(), 0);
    EXPECT_EQ(got.tokens(0).share(), 0);
    shards[1]
        .report.mutable_conditions(0)
        ->mutable_token_attribution()
        ->mutable_tokens(2)
        ->set_text("other ");
    EXPECT_THAT(MergeError(shards, absl::StatusCode::kInvalidArgument),
                HasSubstr("token 2 differs"));
  }
  // A shard where attribution failed: the merge says so, with no scores.
  std::vector<ShardReport> shards = ShardReports(request, 2);
  for (ShardReport& shard : shards) Attribute(shard.report.mutable_conditions(0));
  shards[1].report.mutable_conditions(0)->mutable_token_attribution()->set_unavailable("broken");
  shards[1].report.mutable_conditions(0)->mutable_token_attribution()->clear_tokens();
  absl::StatusOr<v1::AuditReport> merged = MergeShardReports(shards);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ(merged->conditions(0).token_attribution().unavailable(), "broken");
  EXPECT_EQ(merged->conditions(0).token_attribution().tokens_size(), 0);
  // A shard without gradients: the merge keeps the scores, drops the
  // gradients and says why.
  shards = ShardReports(request, 2);
  for (ShardReport& shard : shards) Attribute(shard.report.mutable_conditions(0));
  shards[1].report.mutable_conditions(0)->mutable_token_attribution()->set_gradient_unavailable(
      "no table");
  merged = MergeShardReports(shards);
  ASSERT_TRUE(merged.ok()) << merged.status();
  const v1::TokenAttribution& got = merged->conditions(0).token_attribution();
  EXPECT_EQ(got.gradient_unavailable(), "no table");
  ASSERT_EQ(got.tokens_size(), 3);
  EXPECT_GT(got.tokens(2).score(), 0);
  EXPECT_EQ(got.tokens(2).gradient(), 0);
  // The same when it is the first shard that has none.
  shards = ShardReports(request, 2);
  for (ShardReport& shard : shards) Attribute(shard.report.mutable_conditions(0));
  shards[0].report.mutable_conditions(0)->mutable_token_attribution()->set_gradient_unavailable(
      "no table");
  merged = MergeShardReports(shards);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ(merged->conditions(0).token_attribution().gradient_unavailable(), "no table");
  EXPECT_EQ(merged->conditions(0).token_attribution().tokens(2).gradient(), 0);
  // A prompt with no tokens: the samples still add up.
  shards = ShardReports(request, 2);
  for (ShardReport& shard : shards) {
    Attribute(shard.report.mutable_conditions(0));
    shard.report.mutable_conditions(0)->mutable_token_attribution()->clear_tokens();
  }
  merged = MergeShardReports(shards);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_EQ(merged->conditions(0).token_attribution().samples(), 16);
}

// --- Shard reports as JSON (`audit --shard-index --json`, `merge`) ------

TEST(ShardReportJsonTest, TheShardsJsonReadsBackWhole) {
  std::vector<ShardReport> shards = ShardReports(Request(2, 3), 2);
  v1::AuditJob job;
  job.set_id("audit-1");
  job.set_state(v1::JOB_SUCCEEDED);
  *job.mutable_report() = shards[1].report;
  job.mutable_report()->mutable_conditions(0)->mutable_samples(0)->mutable_summary()->set_width(
      0.1 + 0.2);  // not exact in decimal
  const nlohmann::json json = nlohmann::json::parse(AuditReportJson(job).dump(2));
  EXPECT_EQ(json["shard"]["index"], 1);
  EXPECT_EQ(json["shard"]["count"], 2);
  EXPECT_EQ(json["shard"]["first_condition"], 1);
  absl::StatusOr<v1::AuditReport> read = ShardReportFromJson(json);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(MessageDifferencer::Equals(*read, job.report()));

  // A report of a whole audit has neither.
  job.mutable_report()->clear_shard();
  const nlohmann::json whole = AuditReportJson(job);
  EXPECT_FALSE(whole.contains("shard"));
  EXPECT_FALSE(whole.contains("shard_report"));
  absl::StatusOr<v1::AuditReport> refused = ShardReportFromJson(whole);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("--shard-index"));
  nlohmann::json broken = json;
  broken["shard_report"]["conditions"] = "nonsense";
  EXPECT_EQ(ShardReportFromJson(broken).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace memaudit::client
