// The socket pieces of the TCP communicator (tcp_communicator.cpp): a file descriptor that closes
// itself, the options every rank's connection gets, a connect() with a time limit, the check that
// a connection did not meet itself, and a listening socket on a free loopback port (the
// --nproc_per_node launcher's, handed to its rank 0). Apart from it so that tests can reach them.
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
  // Gives the descriptor up: the caller closes it.
  int release() { return std::exchange(fd_, -1); }

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

// A socket listening on 127.0.0.1 at a port the kernel picks, written to *port, with room for
// `backlog` connections waiting to be accepted; closed on exec. fd -1, with errno, on failure.
// The --nproc_per_node launcher opens it before starting any rank and hands it to rank 0
// (BAM_LISTEN_FD): picking a free port and letting rank 0 bind it later would leave a moment in
// which another program could take the port, and a rank could connect before anything listens.
Socket listen_on_loopback(int backlog, int* port);

// Whether `fd` is a TCP socket listening at `port` (what rank 0 checks of a handed descriptor).
bool listens_at(int fd, int port);

}  // namespace bam::tcp
