#include "server/file_permissions.h"

#include <sys/stat.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace memaudit::server {

absl::Status CheckOnlyOwnerWritable(const std::string& what, const std::string& path) {
  struct stat info;
  if (stat(path.c_str(), &info) != 0) return absl::OkStatus();
  if ((info.st_mode & (S_IWGRP | S_IWOTH)) == 0) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(what, " \"", path, "\": writable by group or others (mode ",
                   absl::StrFormat("%04o", info.st_mode & 07777),
                   "): another local user could replace it; run chmod go-w on it"));
}

}  // namespace memaudit::server
