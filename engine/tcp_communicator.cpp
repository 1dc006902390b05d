// The TCP communicator: rank 0 accepts one connection from every other rank, and each collective
// is a gather to rank 0 followed by its answer to everyone. Every message starts with a header
// naming the collective and its size, so ranks that call different collectives (a bug, or a rank
// that took another branch) fail with both calls named instead of hanging or mixing bytes.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "engine/communicator.h"
#include "engine/error.h"
#include "engine/fnv1a.h"
#include "engine/ops.h"
#include "engine/tcp_socket.h"
#include "engine/whole_number.h"

namespace bam {
namespace {

using tcp::connect_within;
using tcp::connected_to_itself;
using tcp::set_socket_options;
using tcp::Socket;

// A whole-number environment variable in [lo, hi], or `fallback` when unset.
int env_int(const char* name, int fallback, int lo, int hi) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  const std::optional<int64_t> value = parse_whole_number(text, lo, hi);
  BAM_CHECK(value.has_value(), "environment variable {}={}: expected a whole number in [{}, {}]", name, text, lo, hi);
  return static_cast<int>(*value);
}

enum class Op : uint32_t {
  hello = 1,
  all_gather = 2,
  all_reduce_f32 = 3,
  all_reduce_f64 = 4,
  broadcast = 5,
  gather_to_rank0 = 6
};

const char* op_name(uint32_t op) {
  switch (static_cast<Op>(op)) {
    case Op::hello: return "connect";
    case Op::all_gather: return "all_gather";
    case Op::all_reduce_f32: return "all_reduce_sum (f32)";
    case Op::all_reduce_f64: return "all_reduce_sum (f64)";
    case Op::broadcast: return "broadcast";
    case Op::gather_to_rank0: return "gather_to_rank0";
  }
  return "an unknown message";
}

constexpr uint32_t kMagic = 0x4241'4d31;  // "BAM1"

struct Header {
  uint32_t magic = kMagic;
  uint32_t op = 0;
  uint64_t bytes = 0;   // payload per rank; with hello, the job key (a rank's) or the Refusal (rank 0's)
  uint64_t sender = 0;  // rank; with hello, also the world size in the high 32 bits
};

// Rank 0's answer to a rank it does not take: that rank stops, saying why, and rank 0 waits on.
// (A stray process, another job's rank on the same port, must not end a healthy job.)
enum class Refusal : uint64_t { none = 0, world_size = 1, rank_taken = 2, other_job = 3 };

// The job a rank belongs to, for rank 0 to tell its own ranks from another job's that reached the
// same port: torchrun's run id, or BAM_RUN_ID (0 with neither).
uint64_t job_key() {
  std::string id;
  for (const char* name : {"TORCHELASTIC_RUN_ID", "BAM_RUN_ID"})
    if (const char* v = std::getenv(name)) id += std::string(name) + "=" + v + ";";
  return id.empty() ? 0 : fnv1a(id);
}

class TcpCommunicator : public Communicator {
 public:
  TcpCommunicator(const LaunchEnvironment& env, double timeout_seconds);
  int rank() const override { return env_.rank; }
  int world_size() const override { return env_.world_size; }
  std::string describe() const override {
    return fmt::format("rank {} of {} over TCP ({}:{})", env_.rank, env_.world_size, env_.master_addr,
                       env_.master_port);
  }
  ~TcpCommunicator() override { stop_watching(); }
  Tensor all_gather(const Tensor& x) override;
  Tensor gather_to_rank0(const Tensor& x) override;
  void all_reduce_sum(Tensor& x) override;
  void broadcast(Tensor& x) override;
  void exit_when_a_peer_stops() override;
  void finish() override;

 private:
  void stop_watching();
  // Rank 0: every rank's `bytes` of `op` into gathered (rank order; its own from `mine`).
  // Others: send theirs. Then rank 0 sends `answer_bytes` of `answer` to all (null: nothing).
  void gather_to_root(Op op, const void* mine, uint64_t bytes, void* gathered);
  void answer_from_root(Op op, void* answer, uint64_t bytes);
  void send_all(int fd, const void* data, size_t bytes, int peer);
  void recv_all(int fd, void* data, size_t bytes, int peer);
  void expect(const Header& got, Op op, uint64_t bytes, int peer);

  LaunchEnvironment env_;
  std::vector<Socket> peers_;  // rank 0: peers_[r] is rank r's connection (peers_[0] unused)
  Socket root_;                // other ranks: the connection to rank 0
  std::thread watcher_;        // exit_when_a_peer_stops
  std::atomic<bool> watching_{false};
};

// Waits up to `seconds` for the bytes of a joining rank's hello: false when they do not come.
bool receive_hello(int fd, Header* hello, double seconds) {
  timeval limit{static_cast<time_t>(seconds), static_cast<suseconds_t>(1e6 * (seconds - static_cast<long>(seconds)))};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof(limit));
  char* p = reinterpret_cast<char*>(hello);
  size_t left = sizeof(*hello);
  while (left > 0) {
    const ssize_t n = ::recv(fd, p, left, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    left -= static_cast<size_t>(n);
  }
  timeval none{0, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
  return true;
}

TcpCommunicator::TcpCommunicator(const LaunchEnvironment& env, double timeout_seconds) : env_(env) {
  // A handed listening socket is this communicator's from here, whatever fails below.
  Socket handed(env.rank == 0 ? env.listen_fd : -1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
  const std::string where = fmt::format("{}:{}", env.master_addr, env.master_port);
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(env.master_port);
  const int rc = ::getaddrinfo(env.master_addr.c_str(), port.c_str(), &hints, &found);
  BAM_CHECK(rc == 0 && found != nullptr, "MASTER_ADDR={}: cannot resolve it ({})", env.master_addr, ::gai_strerror(rc));
  sockaddr_in address;
  std::memcpy(&address, found->ai_addr, sizeof(address));
  ::freeaddrinfo(found);

  if (env.rank == 0 && env.world_size == 1) return;  // alone: nothing to listen for
  if (env.rank == 0) {
    Socket listener;
    if (handed.fd() >= 0) {
      // The launcher's socket, listening since before any rank started (tcp::listen_on_loopback).
      BAM_CHECK(tcp::listens_at(handed.fd(), env.master_port),
                "BAM_LISTEN_FD={}: not a socket listening at port {} ({}); the --nproc_per_node launcher sets it for "
                "its rank 0, with MASTER_PORT",
                handed.fd(), env.master_port, env.port_variable);
      ::fcntl(handed.fd(), F_SETFD, FD_CLOEXEC);  // inherited through exec: not passed on again
      listener = std::move(handed);
    } else {
      listener = Socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      BAM_CHECK(listener.fd() >= 0, "rank 0: cannot open a socket: {}", std::strerror(errno));
      int one = 1;
      ::setsockopt(listener.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      // Every interface, for ranks on other machines; only the loopback one when MASTER_ADDR names
      // it (127.0.0.1), where no other machine belongs. Not for any name that resolves there: Debian
      // maps the machine's own host name to 127.0.1.1, and a multi-node job's MASTER_ADDR=$(hostname)
      // must still be reached from the other machines.
      sockaddr_in any = address;
      const bool loopback = env.master_addr == "127.0.0.1" || env.master_addr == "localhost";
      if (!loopback) any.sin_addr.s_addr = htonl(INADDR_ANY);
      BAM_CHECK(::bind(listener.fd(), reinterpret_cast<sockaddr*>(&any), sizeof(any)) == 0,
                "rank 0: cannot listen on port {} ({}): {}; pick a free port (BAM_MASTER_PORT sets it)",
                env.master_port, env.port_variable, std::strerror(errno));
      BAM_CHECK(::listen(listener.fd(), env.world_size) == 0, "rank 0: listen on port {}: {}", env.master_port,
                std::strerror(errno));
    }
    peers_.resize(static_cast<size_t>(env.world_size));
    for (int joined = 1; joined < env.world_size;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      pollfd p{listener.fd(), POLLIN, 0};
      const int ready = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
      if (ready < 0 && errno == EINTR) continue;
      if (ready <= 0) {
        std::string missing;
        for (int r = 1; r < env.world_size; ++r)
          if (peers_[static_cast<size_t>(r)].fd() < 0) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
        fail(
            "rank 0: {} of the {} other ranks connected to {} within {:.0f} s (missing: rank{} {}); start every "
            "rank with the same MASTER_ADDR, {} and WORLD_SIZE",
            joined - 1, env.world_size - 1, where, timeout_seconds, env.world_size - joined > 1 ? "s" : "", missing,
            env.port_variable);
      }
      Socket peer(::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC));
      if (peer.fd() < 0) {  // a connection that went away before it was taken: wait for the next
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      set_socket_options(peer.fd());
      Header hello;
      // Something that connects and says nothing, or not a bam rank's hello, is dropped.
      if (!receive_hello(peer.fd(), &hello, 10.0) || hello.magic != kMagic ||
          hello.op != static_cast<uint32_t>(Op::hello)) {
        std::fprintf(stderr, "rank 0: dropped a connection to port %d that is not a bam rank\n", env.master_port);
        continue;
      }
      const int rank = static_cast<int>(hello.sender & 0xffffffffu), world = static_cast<int>(hello.sender >> 32);
      const auto refuse = [&](Refusal why, const std::string& what) {
        Header no;
        no.op = static_cast<uint32_t>(Op::hello);
        no.bytes = static_cast<uint64_t>(why);
        no.sender = static_cast<uint64_t>(env.world_size) << 32;
        [[maybe_unused]] const ssize_t n = ::send(peer.fd(), &no, sizeof(no), MSG_NOSIGNAL);  // it may be gone
        std::fprintf(stderr, "rank 0: refused a connection from %s; waiting for this job's ranks\n", what.c_str());
      };
      if (hello.bytes != job_key()) {
        refuse(Refusal::other_job,
               fmt::format("rank {} of another job (its TORCHELASTIC_RUN_ID or BAM_RUN_ID differs)", rank));
      } else if (world != env.world_size) {
        refuse(Refusal::world_size,
               fmt::format("a rank {} started with WORLD_SIZE={} (this job's is {})", rank, world, env.world_size));
      } else if (rank < 1 || rank >= env.world_size || peers_[static_cast<size_t>(rank)].fd() >= 0) {
        refuse(Refusal::rank_taken, fmt::format("a second process started with RANK={}", rank));
      } else {
        peers_[static_cast<size_t>(rank)] = std::move(peer);
        ++joined;
      }
      continue;
    }
    // Everyone is here: tell them, so a rank's first collective never races a late joiner.
    for (int r = 1; r < env.world_size; ++r) {
      Header go;
      go.op = static_cast<uint32_t>(Op::hello);
      send_all(peers_[static_cast<size_t>(r)].fd(), &go, sizeof(go), r);
    }
    return;
  }
  // Other ranks: connect, retrying while rank 0 starts.
  while (true) {
    Socket s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    BAM_CHECK(s.fd() >= 0, "rank {}: cannot open a socket: {}", env.rank, std::strerror(errno));
    const double left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    if (connect_within(s.fd(), address, std::clamp(left, 0.05, 10.0))) {
      if (!connected_to_itself(s.fd())) {
        root_ = std::move(s);
        break;
      }
      errno = ECONNREFUSED;  // nothing listens there yet: dropped, and tried again
    }
    BAM_CHECK(std::chrono::steady_clock::now() < deadline,
              "rank {}: rank 0 did not answer at {} (MASTER_ADDR and {}) within {:.0f} s: {}", env.rank, where,
              env.port_variable, timeout_seconds, std::strerror(errno));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  set_socket_options(root_.fd());
  Header hello;
  hello.op = static_cast<uint32_t>(Op::hello);
  hello.sender = static_cast<uint64_t>(env.rank) | (static_cast<uint64_t>(env.world_size) << 32);
  hello.bytes = job_key();
  send_all(root_.fd(), &hello, sizeof(hello), 0);
  // Rank 0 answers once every rank has joined, which it waits for at most timeout_seconds from
  // before this connection: a longer silence is something else listening at that port.
  const double answer_seconds = timeout_seconds + std::min(10.0, timeout_seconds);
  Header go;
  BAM_CHECK(
      receive_hello(root_.fd(), &go, answer_seconds) && go.magic == kMagic && go.op == static_cast<uint32_t>(Op::hello),
      "rank {}: the program at {} ({}) accepted the connection but did not answer as bam's rank 0 within {:.0f} "
      "s: another program listens there, rank 0 stopped, or it is still starting (BAM_CONNECT_TIMEOUT_S gives it "
      "longer)",
      env.rank, where, env.port_variable, answer_seconds);
  switch (static_cast<Refusal>(go.bytes)) {
    case Refusal::none: break;
    case Refusal::world_size:
      fail("rank {} was started with WORLD_SIZE={}, rank 0 at {} with WORLD_SIZE={}", env.rank, env.world_size, where,
           go.sender >> 32);
    case Refusal::rank_taken:
      fail("rank {}: rank 0 at {} already has a rank {}: every rank in 1..{} must be started once", env.rank, where,
           env.rank, env.world_size - 1);
    case Refusal::other_job:
      fail(
          "rank {}: the rank 0 at {} belongs to another job (TORCHELASTIC_RUN_ID or BAM_RUN_ID differs): give each "
          "job its own MASTER_PORT",
          env.rank, where);
    default: fail("rank {}: rank 0 at {} refused this rank (reason {})", env.rank, where, go.bytes);
  }
  expect(go, Op::hello, 0, 0);
}

// A peer that is alive but neither reads nor sends (stopped with Ctrl-Z, or busy with something
// long) would leave this rank waiting without a word. StallNotice waits for the socket to be ready
// in steps of a second, and once stall_notice_seconds have passed since the last byte moved (and at
// each doubling) says for whom it waits. The wait goes on; a peer that stops closes its connection.
namespace {

class StallNotice {
 public:
  // `doing`: what this rank does with the peer ("sending to it", "receiving from it").
  StallNotice(int rank, int peer, double seconds, const char* doing)
      : rank_(rank), peer_(peer), doing_(doing), notice_at_(seconds), first_(seconds) {}
  void progressed() {
    last_ = std::chrono::steady_clock::now();
    notice_at_ = first_;
  }
  // Waits up to a second for `fd` to be ready for `events` (POLLIN or POLLOUT).
  void wait(int fd, short events) {
    pollfd ready{fd, events, 0};
    if (::poll(&ready, 1, 1000) != 0) return;  // ready, or an error the next call reports
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - last_).count();
    if (peer_ < 0 || waited < notice_at_) return;
    std::fprintf(stderr,
                 "rank %d: waiting for rank %d for %.0f s in a collective (%s); it is still connected, so it is "
                 "stopped or busy with something long%s. This rank goes on waiting\n",
                 rank_, peer_, waited, doing_, peer_ == 0 ? " (or waits itself for another rank)" : "");
    notice_at_ *= 2;
  }

 private:
  int rank_, peer_;
  const char* doing_;
  double notice_at_, first_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

}  // namespace

void TcpCommunicator::send_all(int fd, const void* data, size_t bytes, int peer) {
  const char* p = static_cast<const char*>(data);
  StallNotice stall(env_.rank, peer, env_.stall_notice_seconds, "sending to it");
  while (bytes > 0) {
    const ssize_t n = ::send(fd, p, bytes, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      stall.wait(fd, POLLOUT);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    BAM_CHECK(n > 0 || (errno != EPIPE && errno != ECONNRESET),
              "rank {}: rank {} closed its connection: that process stopped (its own error says why)", env_.rank, peer);
    BAM_CHECK(n > 0, "rank {}: sending to rank {} failed: {}", env_.rank, peer, std::strerror(errno));
    p += n;
    bytes -= static_cast<size_t>(n);
    stall.progressed();
  }
}

void TcpCommunicator::recv_all(int fd, void* data, size_t bytes, int peer) {
  char* p = static_cast<char*>(data);
  StallNotice stall(env_.rank, peer, env_.stall_notice_seconds, "receiving from it");
  while (bytes > 0) {
    const ssize_t n = ::recv(fd, p, bytes, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      stall.wait(fd, POLLIN);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // A peer that stopped with our bytes unread resets the connection instead of closing it.
    BAM_CHECK(n != 0 && !(n < 0 && errno == ECONNRESET),
              "rank {}: rank {} closed its connection: that process stopped (its own error says why)", env_.rank,
              peer < 0 ? std::string("(joining)") : std::to_string(peer));
    BAM_CHECK(n > 0, "rank {}: receiving from rank {} failed: {}", env_.rank, peer, std::strerror(errno));
    p += n;
    bytes -= static_cast<size_t>(n);
    stall.progressed();
  }
}

void TcpCommunicator::expect(const Header& got, Op op, uint64_t bytes, int peer) {
  BAM_CHECK(got.magic == kMagic, "rank {}: a garbled message from rank {}", env_.rank, peer);
  BAM_CHECK(got.op == static_cast<uint32_t>(op) && got.bytes == bytes,
            "rank {} called {} of {} bytes while rank {} called {} of {} bytes: the ranks took different paths",
            env_.rank, op_name(static_cast<uint32_t>(op)), bytes, peer, op_name(got.op), got.bytes);
}

void TcpCommunicator::gather_to_root(Op op, const void* mine, uint64_t bytes, void* gathered) {
  Header h;
  h.op = static_cast<uint32_t>(op);
  h.bytes = bytes;
  h.sender = static_cast<uint64_t>(env_.rank);
  if (env_.rank != 0) {
    send_all(root_.fd(), &h, sizeof(h), 0);
    send_all(root_.fd(), mine, bytes, 0);
    return;
  }
  char* out = static_cast<char*>(gathered);
  std::memcpy(out, mine, bytes);
  for (int r = 1; r < env_.world_size; ++r) {
    Header got;
    recv_all(peers_[static_cast<size_t>(r)].fd(), &got, sizeof(got), r);
    expect(got, op, bytes, r);
    recv_all(peers_[static_cast<size_t>(r)].fd(), out + static_cast<size_t>(r) * bytes, bytes, r);
  }
}

void TcpCommunicator::answer_from_root(Op op, void* answer, uint64_t bytes) {
  Header h;
  h.op = static_cast<uint32_t>(op);
  h.bytes = bytes;
  if (env_.rank == 0) {
    for (int r = 1; r < env_.world_size; ++r) {
      send_all(peers_[static_cast<size_t>(r)].fd(), &h, sizeof(h), r);
      send_all(peers_[static_cast<size_t>(r)].fd(), answer, bytes, r);
    }
    return;
  }
  Header got;
  recv_all(root_.fd(), &got, sizeof(got), 0);
  expect(got, op, bytes, 0);
  recv_all(root_.fd(), answer, bytes, 0);
}

Tensor TcpCommunicator::all_gather(const Tensor& x) {
  BAM_CHECK(x.dim() >= 1, "all_gather: needs a tensor with a first dimension, got {}", x.describe());
  Tensor host = x.detach().to(Device::cpu()).contiguous();
  Shape shape = x.shape();
  shape[0] *= env_.world_size;
  Tensor out = empty(shape, {x.dtype(), Device::cpu()});
  const uint64_t bytes = static_cast<uint64_t>(host.numel()) * dtype_size(x.dtype());
  gather_to_root(Op::all_gather, host.raw_data(), bytes, out.raw_data());
  answer_from_root(Op::all_gather, out.raw_data(), bytes * static_cast<uint64_t>(env_.world_size));
  return out.to(x.device());
}

Tensor TcpCommunicator::gather_to_rank0(const Tensor& x) {
  BAM_CHECK(x.dim() >= 1, "gather_to_rank0: needs a tensor with a first dimension, got {}", x.describe());
  Tensor host = x.detach().to(Device::cpu()).contiguous();
  Shape shape = x.shape();
  shape[0] = env_.rank == 0 ? shape[0] * env_.world_size : 0;
  Tensor out = empty(shape, {x.dtype(), Device::cpu()});
  const uint64_t bytes = static_cast<uint64_t>(host.numel()) * dtype_size(x.dtype());
  gather_to_root(Op::gather_to_rank0, host.raw_data(), bytes, out.raw_data());
  return out.to(x.device());
}

void TcpCommunicator::all_reduce_sum(Tensor& x) {
  BAM_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64, "all_reduce_sum: sums f32 or f64 tensors, got {}",
            x.describe());
  BAM_CHECK(x.is_contiguous(), "all_reduce_sum: needs a contiguous tensor, got {}", x.describe());
  const Op op = x.dtype() == DType::f32 ? Op::all_reduce_f32 : Op::all_reduce_f64;
  Tensor host = x.device().is_cpu() ? x : x.to(Device::cpu());
  const int64_t n = host.numel();
  const uint64_t bytes = static_cast<uint64_t>(n) * dtype_size(x.dtype());
  Tensor gathered = env_.rank == 0 ? empty({env_.world_size * n}, {x.dtype(), Device::cpu()}) : Tensor();
  gather_to_root(op, host.raw_data(), bytes, env_.rank == 0 ? gathered.raw_data() : nullptr);
  if (env_.rank == 0) {
    auto sum_in_rank_order = [&](auto* g, auto* out) {
      for (int64_t i = 0; i < n; ++i) {
        auto s = g[i];
        for (int r = 1; r < env_.world_size; ++r) s += g[static_cast<int64_t>(r) * n + i];
        out[i] = s;
      }
    };
    if (x.dtype() == DType::f32)
      sum_in_rank_order(gathered.data<float>(), host.data<float>());
    else
      sum_in_rank_order(gathered.data<double>(), host.data<double>());
  }
  answer_from_root(op, host.raw_data(), bytes);
  if (!x.device().is_cpu()) x.copy_(host);
}

void TcpCommunicator::broadcast(Tensor& x) {
  BAM_CHECK(x.is_contiguous(), "broadcast: needs a contiguous tensor, got {}", x.describe());
  Tensor host = x.device().is_cpu() ? x : x.to(Device::cpu());
  const uint64_t bytes = static_cast<uint64_t>(host.numel()) * dtype_size(x.dtype());
  // Every rank says it is here first (a header with no payload of its own), so a rank in another
  // collective is named rather than left waiting.
  if (env_.rank == 0) {
    for (int r = 1; r < env_.world_size; ++r) {
      Header got;
      recv_all(peers_[static_cast<size_t>(r)].fd(), &got, sizeof(got), r);
      expect(got, Op::broadcast, bytes, r);
    }
  } else {
    Header h;
    h.op = static_cast<uint32_t>(Op::broadcast);
    h.bytes = bytes;
    h.sender = static_cast<uint64_t>(env_.rank);
    send_all(root_.fd(), &h, sizeof(h), 0);
  }
  answer_from_root(Op::broadcast, host.raw_data(), bytes);
  if (!x.device().is_cpu()) x.copy_(host);
}

void TcpCommunicator::exit_when_a_peer_stops() {
  if (env_.world_size == 1 || watching_) return;
  watching_ = true;
  watcher_ = std::thread([this] {
    std::vector<pollfd> fds;
    std::vector<int> ranks;
    if (env_.rank == 0) {
      for (int r = 1; r < env_.world_size; ++r) {
        fds.push_back({peers_[static_cast<size_t>(r)].fd(), POLLRDHUP, 0});
        ranks.push_back(r);
      }
    } else {
      fds.push_back({root_.fd(), POLLRDHUP, 0});
      ranks.push_back(0);
    }
    while (watching_) {
      if (::poll(fds.data(), fds.size(), 200) <= 0) continue;
      for (size_t i = 0; i < fds.size(); ++i) {
        if ((fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) == 0 || !watching_) continue;
        std::fflush(stdout);
        std::fprintf(stderr,
                     "rank %d: rank %d closed its connection: that process stopped (its own error says why); "
                     "stopping this one too\n",
                     env_.rank, ranks[i]);
        std::fflush(stderr);
        std::_Exit(1);
      }
    }
  });
}

void TcpCommunicator::stop_watching() {
  watching_ = false;
  if (watcher_.joinable()) watcher_.join();
}

void TcpCommunicator::finish() {
  // Two barriers: after the first, every rank has ended its work; each stops watching before the
  // second, so no rank exits while another still watches.
  Tensor token = zeros({1}, {DType::f32, Device::cpu()});
  all_reduce_sum(token);
  stop_watching();
  all_reduce_sum(token);
}

}  // namespace

LaunchEnvironment launch_environment_from_env() {
  LaunchEnvironment e;
  e.world_size = env_int("WORLD_SIZE", 1, 1, 1 << 16);
  // Under Slurm without torchrun (the official scripts' srun), the rank comes from Slurm.
  auto first_set = [](const char* a, const char* b) -> const char* {
    return std::getenv(a) ? a : std::getenv(b) ? b : nullptr;
  };
  const char* rank_variable = first_set("RANK", "SLURM_PROCID");
  const char* local_variable = first_set("LOCAL_RANK", "SLURM_LOCALID");
  e.rank = rank_variable ? env_int(rank_variable, 0, 0, e.world_size - 1) : 0;
  e.local_rank = local_variable ? env_int(local_variable, 0, 0, e.world_size - 1) : e.rank;
  if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr != '\0') e.master_addr = addr;
  e.master_port = env_int("MASTER_PORT", 29500, 1, 65535);
  // torchrun's agent keeps its own store listening on MASTER_PORT of rank 0's machine and says so
  // (TORCHELASTIC_USE_AGENT_STORE=True): the ranks meet at the port after it then, or at
  // BAM_MASTER_PORT, which every rank must be given alike.
  const char* agent_store = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  if (std::getenv("BAM_MASTER_PORT")) {
    e.master_port = env_int("BAM_MASTER_PORT", 29501, 1, 65535);
    e.port_variable = "BAM_MASTER_PORT";
  } else if (agent_store && std::string(agent_store) == "True") {
    BAM_CHECK(e.master_port < 65535,
              "MASTER_PORT=65535 is torchrun's store, and the ranks meet at the port after it: none is left (set "
              "BAM_MASTER_PORT)");
    e.master_port += 1;
    e.port_variable = "MASTER_PORT+1, beside torchrun's store";
  }
  if (std::getenv("BAM_LISTEN_FD") != nullptr) {
    e.listen_fd = env_int("BAM_LISTEN_FD", -1, 0, 1 << 20);
    BAM_CHECK(e.rank == 0 && e.world_size > 1,
              "BAM_LISTEN_FD={}: only rank 0 of a data-parallel launch takes a listening socket (the --nproc_per_node "
              "launcher sets it), not RANK={} of WORLD_SIZE={}",
              e.listen_fd, e.rank, e.world_size);
  }
  e.connect_timeout_seconds = env_int("BAM_CONNECT_TIMEOUT_S", 300, 1, 86400);
  e.stall_notice_seconds = env_int("BAM_STALL_NOTICE_S", 300, 1, 86400);
  BAM_CHECK(e.world_size == 1 || rank_variable != nullptr,
            "WORLD_SIZE={} but RANK is not set: start each process with its RANK (torchrun sets both; under srun, "
            "SLURM_PROCID stands in)",
            e.world_size);
  return e;
}

std::shared_ptr<Communicator> connect_tcp(const LaunchEnvironment& env) {
  const bool valid = env.world_size >= 1 && env.rank >= 0 && env.rank < env.world_size;
  if (!valid && env.listen_fd >= 0) ::close(env.listen_fd);  // handed over all the same
  BAM_CHECK(valid, "rank {} of {}: not a valid rank", env.rank, env.world_size);
  return std::make_shared<TcpCommunicator>(env, env.connect_timeout_seconds);
}

}  // namespace bam
