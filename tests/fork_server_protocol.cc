#include "tests/fork_server_protocol.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace memaudit::testing {

socklen_t ForkServerAddress(const std::string& name, sockaddr_un* address) {
  std::memset(address, 0, sizeof(*address));
  address->sun_family = AF_UNIX;
  // sun_path[0] stays '\0': the abstract namespace, nothing on disk to clean.
  const size_t length = std::min(name.size(), sizeof(address->sun_path) - 1);
  std::memcpy(address->sun_path + 1, name.data(), length);
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + length);
}

bool WriteFully(int fd, const void* data, size_t size) {
  const char* bytes = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t written = write(fd, bytes, size);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) return false;
    bytes += written;
    size -= static_cast<size_t>(written);
  }
  return true;
}

bool ReadFully(int fd, void* data, size_t size) {
  char* bytes = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t got = read(fd, bytes, size);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    bytes += got;
    size -= static_cast<size_t>(got);
  }
  return true;
}

namespace {

// A message of `size` bytes at `data` with room for three descriptors.
struct StreamsMessage {
  StreamsMessage(void* data, size_t size) : vector{data, size} {
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof(control);
  }
  iovec vector;
  alignas(cmsghdr) char control[CMSG_SPACE(3 * sizeof(int))] = {};
  msghdr message{};
};

}  // namespace

bool SendSizeAndStreams(int connection, uint32_t size, const int streams[3]) {
  StreamsMessage send(&size, sizeof(size));
  cmsghdr* header = CMSG_FIRSTHDR(&send.message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(3 * sizeof(int));
  std::memcpy(CMSG_DATA(header), streams, 3 * sizeof(int));
  ssize_t sent;
  do {
    sent = sendmsg(connection, &send.message, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  return sent == sizeof(size);
}

bool ReceiveSizeAndStreams(int connection, uint32_t* size, int streams[3]) {
  StreamsMessage receive(size, sizeof(*size));
  ssize_t got;
  do {
    got = recvmsg(connection, &receive.message, MSG_CMSG_CLOEXEC | MSG_WAITALL);
  } while (got < 0 && errno == EINTR);
  const cmsghdr* header = CMSG_FIRSTHDR(&receive.message);
  if (got != sizeof(*size) || header == nullptr || header->cmsg_type != SCM_RIGHTS ||
      header->cmsg_len != CMSG_LEN(3 * sizeof(int))) {
    return false;
  }
  std::memcpy(streams, CMSG_DATA(header), 3 * sizeof(int));
  return true;
}

bool PeerIsSameUser(int connection) {
  ucred peer{};
  socklen_t length = sizeof(peer);
  return getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &peer, &length) == 0 &&
         peer.uid == getuid();
}

}  // namespace memaudit::testing
