// The socket pieces of the TCP communicator (tcp_communicator.cpp): a file descriptor that closes
// itself, the options every rank's connection gets, a connect() with a time limit, and the check
// that a connection did not meet itself. Apart from it so that tests can reach them.
#pragma once

#include <netinet/in.h>
#include <unistd.h>

#include <utility>

namespace bam::tcp {

// A socket's file descriptor, closed with it (-1: none).
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

// TCP_NODELAY, and keepalive probes and a send timeout that find a peer's machine gone (below).
void set_socket_options(int fd);

// connect() that gives up after `seconds`: a blocking one to an address whose packets are dropped
// waits out the kernel's SYN retries (about two minutes) whatever BAM_CONNECT_TIMEOUT_S says.
// True when connected (the socket blocking again); otherwise errno says why (ETIMEDOUT when the
// time ran out).
bool connect_within(int fd, const sockaddr_in& address, double seconds);

// Whether a connection's two ends are the same address and port. Before rank 0 listens, a
// connection to a port in the ephemeral range can meet itself (TCP's simultaneous open, when the
// port the kernel picks for the connecting end is that port): the rank would then read its own
// hello back as rank 0's go.
bool connected_to_itself(int fd);

}  // namespace bam::tcp
