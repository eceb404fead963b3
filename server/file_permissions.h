// Permission checks on files that grant access to the server.
#ifndef MEMAUDIT_SERVER_FILE_PERMISSIONS_H_
#define MEMAUDIT_SERVER_FILE_PERMISSIONS_H_

#include <string>

#include "absl/status/status.h"

namespace memaudit::server {

// OK unless `path` (after symlinks) is writable by its group or by others:
// then FAILED_PRECONDITION "<what> "<path>": writable by group or others
// (mode 0NNN) ...; chmod go-w". A token file or private key that another
// local user can write lets that user make themselves an admin (and SIGHUP
// reloads it), so the server refuses it, as ssh refuses such keys. OK when
// `path` cannot be stat'ed: reading it reports that. Thread-safe.
absl::Status CheckOnlyOwnerWritable(const std::string& what, const std::string& path);

}  // namespace memaudit::server

#endif  // MEMAUDIT_SERVER_FILE_PERMISSIONS_H_
