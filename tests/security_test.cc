// TLS, mTLS and bearer tokens end to end: a real memaudit-server with
// certificates made at test time by openssl (tests/make_test_certs.sh), the
// real client library, the real CLI, and the metrics endpoint over HTTPS.
#include <signal.h>
#include <sys/stat.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "client/client.h"
#include "server/access_control.h"
#include "tests/server_process.h"
#include "tests/test_util.h"

namespace memaudit {
namespace {

using client::ChannelSecurity;
using client::Client;
using testing::ServerProcess;

constexpr char kAuditToken[] = "ci-token-1f3a";
constexpr char kOtherAuditToken[] = "ci2-token-77b0";
constexpr char kAdminToken[] = "ops-token-c9d2";

std::string TokenLine(const std::string& name, const std::string& role, const std::string& token) {
  return name + " " + role + " sha256:" + server::Sha256Hex(token) + "\n";
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new testing::ScratchDir();
    testing::RunCommand(std::string(MEMAUDIT_SOURCE_DIR) + "/tests/make_test_certs.sh " +
                        Certs(""));
    ASSERT_TRUE(std::filesystem::exists(Certs("server.pem")));
    ASSERT_TRUE(testing::WriteMixtureDirectory(scratch_->Join("models"), "mix",
                                               testing::PointMassAndBroadClasses(4, 3),
                                               v1::NoiseSchedule::LINEAR, v1::EPSILON, 3)
                    .ok());
    testing::WriteFile(scratch_->Join("tokens"), "# test tokens\n" +
                                                     TokenLine("ci", "audit", kAuditToken) +
                                                     TokenLine("ci2", "audit", kOtherAuditToken) +
                                                     TokenLine("ops", "admin", kAdminToken));
    std::filesystem::create_directories(scratch_->Join("server"));
    server_ = new ServerProcess(
        MEMAUDIT_SERVER_BINARY, scratch_->Join("models"), scratch_->Join("server"),
        {"--tls_cert=" + Certs("server.pem"), "--tls_key=" + Certs("server.key"),
         "--tls_client_ca=" + Certs("ca.pem"), "--token_file=" + scratch_->Join("tokens"),
         "--metrics_tls", "--metrics_require_token"});
    ASSERT_GT(server_->grpc_port(), 0) << server_->Log();
    ASSERT_TRUE(Connect(kAdminToken).WaitUntilServing(std::chrono::seconds(60)).ok())
        << server_->Log();
  }
  static void TearDownTestSuite() {
    delete server_;
    delete scratch_;
  }
  static std::string Certs(const std::string& name) { return scratch_->Join("certs/" + name); }

  // A client of the suite's server with the test CA, client certificate
  // `client` ("" for none) and `token` ("" for none).
  static Client Connect(const std::string& token, const std::string& client = "client",
                        const std::string& ca = "ca.pem") {
    ChannelSecurity security;
    security.tls = true;
    security.ca_pem = ReadText(Certs(ca));
    if (!client.empty()) {
      security.cert_pem = ReadText(Certs(client + ".pem"));
      security.key_pem = ReadText(Certs(client + ".key"));
    }
    security.token = token;
    return Client(server_->target(), std::chrono::seconds(20), security);
  }
  static std::string Cli(const std::string& flags, const std::string& command) {
    return std::string(MEMAUDIT_CLI_BINARY) + " --server " + server_->target() + " " + flags + " " +
           command + " 2>&1";
  }
  static v1::AuditRequest SmallAudit() {
    v1::AuditRequest request;
    request.set_model("mix");
    request.add_conditions()->set_class_label(1);
    request.set_samples_per_condition(1);
    request.mutable_sampling()->set_num_steps(5);
    return request;
  }

  static testing::ScratchDir* scratch_;
  static ServerProcess* server_;
};

testing::ScratchDir* SecurityTest::scratch_ = nullptr;
ServerProcess* SecurityTest::server_ = nullptr;

TEST_F(SecurityTest, MutualTlsWithATokenIsServed) {
  auto models = Connect(kAuditToken).ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->models_size(), 1);
  EXPECT_EQ(models->models(0).name(), "mix");
  // Health needs no token (probes and load balancers).
  auto health = Connect("").Health();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, "SERVING");
}

TEST_F(SecurityTest, HandshakesThatMustFail) {
  const struct {
    const char* what;
    std::function<Client()> connect;
  } cases[] = {
      {"server checked against the wrong CA",
       [] { return Connect(kAdminToken, "client", "other-ca.pem"); }},
      {"no client certificate", [] { return Connect(kAdminToken, ""); }},
      {"client certificate of another CA", [] { return Connect(kAdminToken, "other-client"); }},
      {"expired client certificate", [] { return Connect(kAdminToken, "expired-client"); }},
      {"plaintext", [] { return Client(server_->target(), std::chrono::seconds(20)); }},
  };
  for (const auto& c : cases) {
    auto models = c.connect().ListModels();
    EXPECT_EQ(models.status().code(), absl::StatusCode::kUnavailable)
        << c.what << ": " << models.status();
  }
}

TEST_F(SecurityTest, TokensAreRequiredAndChecked) {
  auto missing = Connect("").ListModels();
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kUnauthenticated) << missing.status();
  EXPECT_NE(missing.status().message().find("token"), std::string::npos);
  auto wrong = Connect("not-a-token").SubmitAudit(SmallAudit());
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kUnauthenticated) << wrong.status();
  EXPECT_EQ(wrong.status().message().find("not-a-token"), std::string::npos);
}

TEST_F(SecurityTest, OnlyAdminsLoadAndUnload) {
  auto load = Connect(kAuditToken).LoadModel("mix");
  EXPECT_EQ(load.status().code(), absl::StatusCode::kPermissionDenied) << load.status();
  EXPECT_NE(load.status().message().find("admin"), std::string::npos);
  auto unload = Connect(kAuditToken).UnloadModel("mix");
  EXPECT_EQ(unload.status().code(), absl::StatusCode::kPermissionDenied) << unload.status();
  auto reload = Connect(kAdminToken).LoadModel("mix");
  ASSERT_TRUE(reload.ok()) << reload.status();
  EXPECT_EQ(reload->state(), v1::MODEL_READY);
}

TEST_F(SecurityTest, AuditCallersSeeOnlyTheirOwnJobs) {
  Client owner = Connect(kAuditToken);
  Client other = Connect(kOtherAuditToken);
  Client admin = Connect(kAdminToken);
  auto job = owner.SubmitAudit(SmallAudit());
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->owner(), "ci");

  auto done = owner.WatchAudit(job->id(), nullptr);
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::JOB_SUCCEEDED) << done->error();

  EXPECT_EQ(other.GetAudit(job->id()).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(other.CancelAudit(job->id()).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(other.WatchAudit(job->id(), nullptr).status().code(),
            absl::StatusCode::kPermissionDenied);
  auto theirs = other.ListAudits();
  ASSERT_TRUE(theirs.ok());
  for (const v1::AuditJob& listed : theirs->jobs()) EXPECT_NE(listed.id(), job->id());

  auto mine = owner.ListAudits();
  ASSERT_TRUE(mine.ok());
  bool listed = false;
  for (const v1::AuditJob& j : mine->jobs()) {
    EXPECT_EQ(j.owner(), "ci");
    listed = listed || j.id() == job->id();
  }
  EXPECT_TRUE(listed);
  auto seen_by_admin = admin.GetAudit(job->id());
  ASSERT_TRUE(seen_by_admin.ok()) << seen_by_admin.status();
  EXPECT_EQ(seen_by_admin->owner(), "ci");
}

TEST_F(SecurityTest, MetricsOverHttpsNeedAToken) {
  httplib::SSLClient https("127.0.0.1", server_->metrics_port());
  https.set_ca_cert_path(Certs("ca.pem").c_str());
  https.enable_server_certificate_verification(true);
  auto refused = https.Get("/metrics");
  ASSERT_TRUE(refused) << httplib::to_string(refused.error());
  EXPECT_EQ(refused->status, 401);
  EXPECT_EQ(refused->body.find("memaudit_"), std::string::npos);

  // Probes need no token: Kubernetes' gRPC probe cannot speak TLS.
  for (const char* probe : {"/healthz", "/readyz"}) {
    auto answered = https.Get(probe);
    ASSERT_TRUE(answered) << probe;
    EXPECT_EQ(answered->status, 200) << probe;
  }

  https.set_bearer_token_auth(kAuditToken);
  auto served = https.Get("/metrics");
  ASSERT_TRUE(served) << httplib::to_string(served.error());
  EXPECT_EQ(served->status, 200);
  EXPECT_NE(served->body.find("memaudit_finished_jobs"), std::string::npos);

  httplib::Client plaintext("127.0.0.1", server_->metrics_port());
  plaintext.set_bearer_token_auth(kAuditToken);
  plaintext.set_connection_timeout(5);
  plaintext.set_read_timeout(5);
  auto over_http = plaintext.Get("/metrics");
  EXPECT_TRUE(!over_http || over_http->status != 200);
}

TEST_F(SecurityTest, CliFlagsCarryCertificatesAndTokens) {
  testing::WriteFile(scratch_->Join("cli-token"), std::string(kAuditToken) + "\n");
  const std::string tls = "--tls-ca " + Certs("ca.pem") + " --tls-cert " + Certs("client.pem") +
                          " --tls-key " + Certs("client.key");
  const auto ok =
      testing::RunShell(Cli(tls + " --token-file " + scratch_->Join("cli-token"), "models --json"));
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("\"mix\""), std::string::npos) << ok.output;

  const auto no_token = testing::RunShell(Cli(tls, "models"));
  EXPECT_EQ(no_token.exit_code, 1) << no_token.output;
  EXPECT_NE(no_token.output.find("UNAUTHENTICATED"), std::string::npos) << no_token.output;

  const auto denied =
      testing::RunShell(Cli(tls + " --token-file " + scratch_->Join("cli-token"), "unload mix"));
  EXPECT_EQ(denied.exit_code, 1) << denied.output;
  EXPECT_NE(denied.output.find("PERMISSION_DENIED"), std::string::npos) << denied.output;

  const auto missing_file = testing::RunShell(Cli(tls + " --token-file /nonexistent", "models"));
  EXPECT_EQ(missing_file.exit_code, 1) << missing_file.output;
  EXPECT_NE(missing_file.output.find("--token-file"), std::string::npos) << missing_file.output;

  // Environment variables stand in for the flags.
  const auto from_env = testing::RunShell(
      "MEMAUDIT_TLS_CA=" + Certs("ca.pem") + " MEMAUDIT_TLS_CERT=" + Certs("client.pem") +
      " MEMAUDIT_TLS_KEY=" + Certs("client.key") +
      " MEMAUDIT_TOKEN_FILE=" + scratch_->Join("cli-token") + " " + Cli("", "health"));
  EXPECT_EQ(from_env.exit_code, 0) << from_env.output;
}

// SIGHUP re-reads the token file: a new token works at once, a removed one
// stops working, and a broken file leaves the tokens in force. Plaintext:
// tokens do not need TLS (inside a cluster behind a NetworkPolicy).
TEST_F(SecurityTest, SighupReloadsTokens) {
  testing::ScratchDir own;
  const std::string tokens = own.Join("tokens");
  testing::WriteFile(tokens, TokenLine("old", "audit", "old-token"));
  ServerProcess server(MEMAUDIT_SERVER_BINARY, scratch_->Join("models"), own.path(),
                       {"--token_file=" + tokens});
  ASSERT_GT(server.grpc_port(), 0) << server.Log();
  auto client = [&](const std::string& token) {
    ChannelSecurity security;
    security.token = token;
    return Client(server.target(), std::chrono::seconds(20), security);
  };
  ASSERT_TRUE(client("old-token").ListModels().ok()) << server.Log();

  testing::WriteFile(tokens, TokenLine("new", "admin", "new-token"));
  server.Signal(SIGHUP);
  bool reloaded = false;
  for (int i = 0; i < 100 && !reloaded; ++i) {
    reloaded = client("new-token").ListModels().ok();
    if (!reloaded) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(reloaded) << server.Log();
  EXPECT_EQ(client("old-token").ListModels().status().code(), absl::StatusCode::kUnauthenticated);

  testing::WriteFile(tokens, "new admin sha256:not-hex\n");
  server.Signal(SIGHUP);
  for (int i = 0; i < 100 && server.Log().find("not reloaded") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(server.Log().find("line 1"), std::string::npos) << server.Log();
  EXPECT_TRUE(client("new-token").ListModels().ok());
  EXPECT_EQ(server.Terminate(20), 0) << server.Log();
}

// Security settings that cannot work end the start with the reason.
TEST_F(SecurityTest, BadSecuritySettingsStopTheStart) {
  testing::WriteFile(scratch_->Join("bad-tokens"), "ops superuser sha256:abc\n");
  // A private key others may write (as with a token file: they could swap it).
  const std::string shared_key = scratch_->Join("shared.key");
  std::filesystem::copy_file(Certs("server.key"), shared_key,
                             std::filesystem::copy_options::overwrite_existing);
  ASSERT_EQ(chmod(shared_key.c_str(), 0660), 0);
  const struct {
    std::vector<std::string> flags;
    std::string expected;
  } cases[] = {
      {{"--tls_cert=" + Certs("expired-server.pem"), "--tls_key=" + Certs("expired-server.key")},
       "expired"},
      {{"--tls_cert=" + Certs("server.pem"), "--tls_key=" + Certs("client.key")}, "does not match"},
      {{"--tls_cert=" + Certs("server.pem")}, "--tls_cert and --tls_key go together"},
      {{"--tls_cert=" + Certs("missing.pem"), "--tls_key=" + Certs("server.key")}, "cannot read"},
      {{"--tls_cert=" + Certs("server.key"), "--tls_key=" + Certs("server.key")},
       "no PEM certificate"},
      {{"--token_file=" + scratch_->Join("bad-tokens")}, "line 1"},
      {{"--metrics_require_token"}, "needs --token_file"},
      {{"--tls_cert=" + Certs("server.pem"), "--tls_key=" + shared_key},
       "writable by group or others (mode 0660)"},
  };
  int index = 0;
  for (const auto& c : cases) {
    testing::ScratchDir own;
    ServerProcess server(MEMAUDIT_SERVER_BINARY, scratch_->Join("models"), own.path(), c.flags);
    EXPECT_EQ(server.grpc_port(), 0) << index;
    EXPECT_EQ(server.AwaitExit(30), 1) << index;
    EXPECT_NE(server.Log().find(c.expected), std::string::npos) << index << ": " << server.Log();
    ++index;
  }
}

}  // namespace
}  // namespace memaudit
