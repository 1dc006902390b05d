// The socket pieces of the TCP communicator: see tcp_socket.h.
#include "engine/tcp_socket.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

namespace bam::tcp {

void set_socket_options(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  // A peer's machine that loses power or its network sends nothing more, not even a close: the
  // kernel's probes find it after about two minutes of silence (1 minute, then 6 probes 10 s
  // apart), and the collective waiting on it fails instead of waiting forever. (A process that
  // is stopped but alive still answers them: its own machine keeps the connection.)
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
  int idle = 60, interval = 10, probes = 6;
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof(probes));
  // The probes only run on an idle connection: data sent to a machine that went away is instead
  // retransmitted for about 15 minutes (tcp_retries2). Unacknowledged for two minutes, it fails.
  unsigned int user_timeout_ms = 120000;
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
}

bool connect_within(int fd, const sockaddr_in& address, double seconds) {
  const int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return false;
  bool connected = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0;
  if (!connected && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    int ready;
    do {
      ready = ::poll(&p, 1, static_cast<int>(std::max(1.0, seconds * 1000)));
    } while (ready < 0 && errno == EINTR);  // (a signal restarts the whole wait: it is short)
    if (ready == 0) {
      errno = ETIMEDOUT;
      return false;
    }
    int error = 0;
    socklen_t length = sizeof(error);
    if (ready < 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) return false;
    if (error != 0) {
      errno = error;
      return false;
    }
    connected = true;
  }
  if (!connected) return false;
  const int saved = errno;
  ::fcntl(fd, F_SETFL, flags);  // blocking again, as the collectives expect
  errno = saved;
  return true;
}

bool connected_to_itself(int fd) {
  sockaddr_in local{}, peer{};
  socklen_t local_length = sizeof(local), peer_length = sizeof(peer);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length) != 0 ||
      ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0)
    return false;
  return local.sin_port == peer.sin_port && local.sin_addr.s_addr == peer.sin_addr.s_addr;
}

Socket listen_on_loopback(int backlog, int* port) {
  Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (s.fd() < 0) return s;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(a);
  if (::bind(s.fd(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(s.fd(), backlog) != 0 ||
      ::getsockname(s.fd(), reinterpret_cast<sockaddr*>(&a), &length) != 0) {
    const int error = errno;
    s = Socket();
    errno = error;
    return s;
  }
  *port = ntohs(a.sin_port);
  return s;
}

bool listens_at(int fd, int port) {
  int listening = 0, type = 0;
  socklen_t length = sizeof(listening), type_length = sizeof(type);
  sockaddr_in a{};
  socklen_t address_length = sizeof(a);
  return ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0 && listening != 0 &&
         ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_length) == 0 && type == SOCK_STREAM &&
         ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &address_length) == 0 && a.sin_family == AF_INET &&
         ntohs(a.sin_port) == port;
}

}  // namespace bam::tcp
