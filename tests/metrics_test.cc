// server/metrics: every series the server knows of exists, at zero, before
// its first event, so that increase() and rate() see that event.
#include "server/metrics.h"

#include <gtest/gtest.h>

#include <string>

namespace memaudit::server {
namespace {

bool HasLine(const std::string& scrape, const std::string& line) {
  return scrape.find("\n" + line + "\n") != std::string::npos;
}

TEST(MetricsTest, KnownSeriesStartAtZero) {
  Metrics metrics;
  const std::string scrape = metrics.Scrape();
  for (const std::string line : {
           R"(memaudit_jobs_finished_total{state="JOB_SUCCEEDED"} 0)",
           R"(memaudit_jobs_finished_total{state="JOB_FAILED"} 0)",
           R"(memaudit_jobs_finished_total{state="JOB_CANCELLED"} 0)",
           R"(memaudit_spectrum_duration_seconds_count{method="arnoldi"} 0)",
           R"(memaudit_spectrum_duration_seconds_count{method="dense"} 0)",
           R"(memaudit_rpc_duration_seconds_count{code="OK",method="AuditService/SubmitAudit"} 0)",
           R"(memaudit_rpc_duration_seconds_count{code="OK",method="ModelService/LoadModel"} 0)",
       }) {
    EXPECT_TRUE(HasLine(scrape, line)) << line << "\n" << scrape;
  }
  // A model's series come with RegisterModel, before any audit or load.
  EXPECT_EQ(scrape.find("model=\"toy\""), std::string::npos);
  metrics.RegisterModel("toy");
  const std::string registered = metrics.Scrape();
  for (const std::string verdict : {"NOT_MEMORIZED", "PARTIAL", "MEMORIZED"}) {
    EXPECT_TRUE(
        HasLine(registered, "memaudit_audits_total{model=\"toy\",verdict=\"" + verdict + "\"} 0"))
        << verdict << "\n"
        << registered;
    EXPECT_TRUE(HasLine(
        registered, "memaudit_audit_samples_total{model=\"toy\",verdict=\"" + verdict + "\"} 0"))
        << verdict;
  }
  EXPECT_TRUE(HasLine(registered, R"(memaudit_model_loads_total{model="toy",result="ok"} 0)"));
  EXPECT_TRUE(HasLine(registered, R"(memaudit_model_loads_total{model="toy",result="error"} 0)"));
  EXPECT_TRUE(HasLine(registered, R"(memaudit_model_ready{model="toy"} 0)"));
  // The first event is then an increase from 0 to 1.
  metrics.CountAudit("toy", "MEMORIZED");
  metrics.ObserveModelLoad("toy", false, 0.5);
  const std::string after = metrics.Scrape();
  EXPECT_TRUE(HasLine(after, R"(memaudit_audits_total{model="toy",verdict="MEMORIZED"} 1)"));
  EXPECT_TRUE(HasLine(after, R"(memaudit_model_loads_total{model="toy",result="error"} 1)"));
}

}  // namespace
}  // namespace memaudit::server
