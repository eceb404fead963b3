// Tokens, roles and the RPC role table (server/access_control.h).
#include "server/access_control.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <set>

#include "memaudit/v1/audit_service.grpc.pb.h"
#include "memaudit/v1/model_service.grpc.pb.h"
#include "tests/test_util.h"

namespace memaudit::server {
namespace {

// A token file with `lines`, in a scratch directory that lives as long as
// the fixture.
class AccessControlTest : public ::testing::Test {
 protected:
  std::string WriteTokens(const std::string& lines) {
    const std::string path = dir_.Join("tokens");
    testing::WriteFile(path, lines);
    return path;
  }
  static std::string Line(const std::string& name, const std::string& role,
                          const std::string& token) {
    return name + " " + role + " sha256:" + Sha256Hex(token) + "\n";
  }
  testing::ScratchDir dir_;
};

TEST_F(AccessControlTest, Sha256MatchesKnownDigests) {
  // FIPS 180-2 test vectors.
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

// Every RPC of both services has a role; an RPC added to the .proto
// without one fails here (and is refused by the server, not opened).
TEST_F(AccessControlTest, EveryRpcHasARole) {
  std::set<std::string> admin_methods, reviewer_methods;
  for (const char* name : {"memaudit.v1.ModelService", "memaudit.v1.AuditService"}) {
    const google::protobuf::ServiceDescriptor* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(name);
    ASSERT_NE(service, nullptr) << name;
    for (int i = 0; i < service->method_count(); ++i) {
      const std::string method = service->name() + "/" + service->method(i)->name();
      auto role = RequiredRole(method);
      ASSERT_TRUE(role.ok()) << method;
      if (*role == Role::kAdmin) admin_methods.insert(method);
      if (*role == Role::kReviewer) reviewer_methods.insert(method);
    }
  }
  EXPECT_EQ(admin_methods,
            (std::set<std::string>{"ModelService/LoadModel", "ModelService/UnloadModel"}));
  // Training data leave the server only through this one RPC.
  EXPECT_EQ(reviewer_methods, (std::set<std::string>{"ModelService/GetTrainingItems"}));
  EXPECT_EQ(RequiredRole("ModelService/DeleteEverything").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(AccessControlTest, TokensAuthenticateTheirNameAndRole) {
  auto store = TokenStore::Load(WriteTokens("# comment\n\n" + Line("ci", "audit", "s3cret-ci") +
                                            "  " + Line("ops", "admin", "s3cret-ops")));
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->size(), 2);
  auto ci = (*store)->Authenticate("Bearer s3cret-ci");
  ASSERT_TRUE(ci.ok()) << ci.status();
  EXPECT_EQ(ci->name, "ci");
  EXPECT_EQ(ci->role, Role::kAudit);
  auto ops = (*store)->Authenticate("bearer   s3cret-ops ");
  ASSERT_TRUE(ops.ok()) << ops.status();
  EXPECT_EQ(ops->role, Role::kAdmin);

  for (const char* bad : {"", "Bearer", "Bearer ", "Basic s3cret-ci", "s3cret-ci",
                          "Bearer s3cret-CI", "Bearer wrong"}) {
    auto refused = (*store)->Authenticate(bad);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated) << bad;
    EXPECT_EQ(refused.status().message().find("s3cret"), std::string::npos) << bad;
  }
}

TEST_F(AccessControlTest, MalformedFilesNameTheLine) {
  const std::string good = Line("ci", "audit", "t1");
  const struct {
    std::string text;
    std::string expected;
  } cases[] = {
      {good + "ops admin\n", "line 2: 2 fields"},
      {good + "ops root sha256:" + Sha256Hex("t2") + "\n", "line 2: unknown role \"root\""},
      {"ops admin md5:abcd\n", "line 1: the hash"},
      {"ops admin sha256:" + Sha256Hex("t2").substr(1) + "\n", "line 1: the hash"},
      {"ops admin sha256:" + std::string(64, 'G') + "\n", "line 1: the hash"},
      {"op$ admin sha256:" + Sha256Hex("t2") + "\n", "line 1: the name"},
      {good + Line("ci", "admin", "t2"), "line 2: the name \"ci\" appears twice"},
      {good + Line("ops", "admin", "t1"), "line 2: the same token hash"},
  };
  for (const auto& c : cases) {
    auto store = TokenStore::Load(WriteTokens(c.text));
    ASSERT_FALSE(store.ok()) << c.text;
    EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(store.status().message().find(c.expected), std::string::npos)
        << store.status().message();
  }
  EXPECT_EQ(TokenStore::Load(dir_.Join("missing")).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(AccessControlTest, ReloadReplacesTokensAndKeepsThemOnError) {
  const std::string path = WriteTokens(Line("ci", "audit", "old"));
  auto store = TokenStore::Load(path);
  ASSERT_TRUE(store.ok());
  testing::WriteFile(path, Line("ci", "audit", "new"));
  auto reloaded = (*store)->Reload();
  ASSERT_TRUE(reloaded.ok());
  EXPECT_EQ(*reloaded, 1);
  EXPECT_FALSE((*store)->Authenticate("Bearer old").ok());
  EXPECT_TRUE((*store)->Authenticate("Bearer new").ok());

  testing::WriteFile(path, "garbage\n");
  EXPECT_EQ((*store)->Reload().status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*store)->Authenticate("Bearer new").ok());  // still in force
}

// Anyone who can write the token file can make themselves an admin.
TEST_F(AccessControlTest, FilesOthersMayWriteAreRefused) {
  const std::string path = WriteTokens(Line("ci", "audit", "t1"));
  ASSERT_TRUE(TokenStore::Load(path).ok());  // 0644 from the umask
  for (const mode_t mode : {0666, 0620, 0602}) {
    ASSERT_EQ(chmod(path.c_str(), mode), 0);
    auto store = TokenStore::Load(path);
    ASSERT_FALSE(store.ok()) << std::oct << mode;
    EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_NE(store.status().message().find("writable by group or others"), std::string::npos)
        << store.status();
    EXPECT_NE(store.status().message().find("chmod go-w"), std::string::npos) << store.status();
  }
  // A reload of a file made writable meanwhile keeps the tokens in force.
  ASSERT_EQ(chmod(path.c_str(), 0600), 0);
  auto store = TokenStore::Load(path);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_EQ(chmod(path.c_str(), 0666), 0);
  EXPECT_EQ((*store)->Reload().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE((*store)->Authenticate("Bearer t1").ok());
}

TEST_F(AccessControlTest, RolesGateMethodsAndJobs) {
  auto store = TokenStore::Load(WriteTokens(Line("ci", "audit", "a") + Line("ops", "admin", "b")));
  ASSERT_TRUE(store.ok());
  const AccessControl access(store->get());
  EXPECT_TRUE(access.Authorize("AuditService/SubmitAudit", "Bearer a").ok());
  EXPECT_EQ(access.Authorize("AuditService/SubmitAudit", "").status().code(),
            absl::StatusCode::kUnauthenticated);
  auto denied = access.Authorize("ModelService/LoadModel", "Bearer a");
  EXPECT_EQ(denied.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(denied.status().message().find("admin role"), std::string::npos);
  EXPECT_TRUE(access.Authorize("ModelService/LoadModel", "Bearer b").ok());
  EXPECT_EQ(access.Authorize("AuditService/Unknown", "Bearer b").status().code(),
            absl::StatusCode::kPermissionDenied);

  const Caller ci{"ci", Role::kAudit};
  EXPECT_TRUE(ci.MayAccessJobOf("ci"));
  EXPECT_FALSE(ci.MayAccessJobOf("other"));
  EXPECT_FALSE(ci.MayAccessJobOf(""));
  EXPECT_TRUE((Caller{"ops", Role::kAdmin}).MayAccessJobOf("ci"));

  // The reviewer role: what audit may, and training items; not admin's.
  auto with_reviewer = TokenStore::Load(WriteTokens(
      Line("ci", "audit", "a") + Line("rev", "reviewer", "r") + Line("ops", "admin", "b")));
  ASSERT_TRUE(with_reviewer.ok()) << with_reviewer.status();
  const AccessControl reviewed(with_reviewer->get());
  auto reviewer = reviewed.Authorize("ModelService/GetTrainingItems", "Bearer r");
  ASSERT_TRUE(reviewer.ok()) << reviewer.status();
  EXPECT_EQ(reviewer->role, Role::kReviewer);
  EXPECT_EQ(RoleName(reviewer->role), "reviewer");
  EXPECT_TRUE(reviewed.Authorize("AuditService/SubmitAudit", "Bearer r").ok());
  EXPECT_TRUE(reviewed.Authorize("ModelService/GetTrainingItems", "Bearer b").ok());
  auto auditor = reviewed.Authorize("ModelService/GetTrainingItems", "Bearer a");
  EXPECT_EQ(auditor.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(auditor.status().message().find("needs the reviewer role"), std::string::npos)
      << auditor.status();
  EXPECT_EQ(reviewed.Authorize("ModelService/UnloadModel", "Bearer r").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE((Caller{"rev", Role::kReviewer}).MayAccessJobOf("ci"));

  // Without a token file: everyone is an anonymous admin.
  const AccessControl open(nullptr);
  auto anonymous = open.Authorize("ModelService/UnloadModel", "");
  ASSERT_TRUE(anonymous.ok());
  EXPECT_EQ(anonymous->role, Role::kAdmin);
  EXPECT_EQ(anonymous->name, "");
}

}  // namespace
}  // namespace memaudit::server
