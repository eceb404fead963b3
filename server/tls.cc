#include "server/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "server/file_permissions.h"

namespace memaudit::server {
namespace {

constexpr size_t kMaxPemBytes = size_t{1} << 20;

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* x509) const { X509_free(x509); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Certificate = std::unique_ptr<X509, X509Free>;
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;

absl::Status Problem(const std::string& flag, const std::string& path, const std::string& what) {
  return absl::FailedPreconditionError(absl::StrCat(flag, ": \"", path, "\": ", what));
}

absl::StatusOr<std::string> ReadPem(const std::string& flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Problem(flag, path, "cannot read");
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().size() > kMaxPemBytes) return Problem(flag, path, "larger than 1 MiB");
  return text.str();
}

Bio MemoryBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// The certificates of a PEM bundle (at least one).
absl::StatusOr<std::vector<Certificate>> ParseCertificates(const std::string& flag,
                                                           const std::string& path,
                                                           const std::string& pem) {
  Bio bio = MemoryBio(pem);
  std::vector<Certificate> certificates;
  while (X509* certificate = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    certificates.emplace_back(certificate);
  }
  ERR_clear_error();  // the end of the bundle reads as an error
  if (certificates.empty()) return Problem(flag, path, "holds no PEM certificate");
  return certificates;
}

absl::Status CheckValidNow(const std::string& flag, const std::string& path,
                           const X509* certificate) {
  if (X509_cmp_current_time(X509_get0_notAfter(certificate)) <= 0) {
    return Problem(flag, path, "the certificate has expired");
  }
  if (X509_cmp_current_time(X509_get0_notBefore(certificate)) > 0) {
    return Problem(flag, path, "the certificate is not valid yet");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<TlsMaterial> LoadTlsMaterial(const std::string& cert_path,
                                            const std::string& key_path,
                                            const std::string& client_ca_path) {
  TlsMaterial material;
  auto chain = ReadPem("--tls_cert", cert_path);
  if (!chain.ok()) return chain.status();
  material.certificate_chain = *std::move(chain);
  auto certificates = ParseCertificates("--tls_cert", cert_path, material.certificate_chain);
  if (!certificates.ok()) return certificates.status();
  if (absl::Status s = CheckValidNow("--tls_cert", cert_path, certificates->front().get());
      !s.ok()) {
    return s;
  }

  if (absl::Status status = CheckOnlyOwnerWritable("--tls_key", key_path); !status.ok()) {
    return status;
  }
  auto key_pem = ReadPem("--tls_key", key_path);
  if (!key_pem.ok()) return key_pem.status();
  material.private_key = *std::move(key_pem);
  Bio key_bio = MemoryBio(material.private_key);
  Key key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (key == nullptr) {
    return Problem("--tls_key", key_path, "holds no PEM private key (or it is encrypted)");
  }
  if (X509_check_private_key(certificates->front().get(), key.get()) != 1) {
    ERR_clear_error();
    return Problem("--tls_key", key_path,
                   absl::StrCat("the key does not match the certificate in ", cert_path));
  }

  if (!client_ca_path.empty()) {
    auto ca = ReadPem("--tls_client_ca", client_ca_path);
    if (!ca.ok()) return ca.status();
    material.client_ca = *std::move(ca);
    auto authorities = ParseCertificates("--tls_client_ca", client_ca_path, material.client_ca);
    if (!authorities.ok()) return authorities.status();
  }
  return material;
}

}  // namespace memaudit::server
