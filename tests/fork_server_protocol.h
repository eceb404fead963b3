// What the fork server (fork_server.h) and its launcher share: the socket's
// address, whole reads and writes, and the peer check. POSIX only; no
// LibTorch, so the launcher stays a small process.
#ifndef MEMAUDIT_TESTS_FORK_SERVER_PROTOCOL_H_
#define MEMAUDIT_TESTS_FORK_SERVER_PROTOCOL_H_

#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace memaudit::testing {

// The abstract Unix address "\0" + name (truncated to what sun_path holds);
// returns the length to pass to bind or connect.
socklen_t ForkServerAddress(const std::string& name, sockaddr_un* address);

// Writes or reads exactly `size` bytes, retrying on EINTR and short
// transfers; false on an error or end of file first.
bool WriteFully(int fd, const void* data, size_t size);
bool ReadFully(int fd, void* data, size_t size);

// A request's header: its payload size, sent with three descriptors
// (SCM_RIGHTS) in one message. The received descriptors are close-on-exec.
bool SendSizeAndStreams(int connection, uint32_t size, const int streams[3]);
bool ReceiveSizeAndStreams(int connection, uint32_t* size, int streams[3]);

// Whether the process at the other end of a connected Unix socket runs
// under this process's user id (SO_PEERCRED).
bool PeerIsSameUser(int connection);

}  // namespace memaudit::testing

#endif  // MEMAUDIT_TESTS_FORK_SERVER_PROTOCOL_H_
