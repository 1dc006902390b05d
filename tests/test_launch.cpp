// Starting ranks: torchrun's (or Slurm's) variables read and checked, a rank outside the world
// refused, rank 0 taking over the launcher's listening socket, and the TCP rendezvous's refusals:
// a rank of another world size, a program other than bam's rank 0 at the port, ranks that never
// come.
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "bam/train_config.h"
#include "engine/distributed.h"
#include "engine/tcp_socket.h"
#include "engine/whole_number.h"
#include "tests/rank_threads.h"
#include "tests/support.h"

namespace bam::test {
namespace {

TEST_CASE("a rank outside the world is refused, naming it") {
  TrainConfig c;
  c.arch = "vit_tiny";
  c.data_path = "synthetic:64";
  c.world_size = 2;
  c.rank = 1;
  CHECK_NOTHROW(c.validate());
  c.rank = 2;
  CHECK(error_of([&] { c.validate(); }).find("rank 2 of 2") != std::string::npos);
}

constexpr const char* kVariables[] = {
    "WORLD_SIZE",   "RANK",          "LOCAL_RANK",      "MASTER_ADDR",   "MASTER_PORT",
    "SLURM_PROCID", "SLURM_LOCALID", "BAM_MASTER_PORT", "BAM_LISTEN_FD", "TORCHELASTIC_USE_AGENT_STORE"};

TEST_CASE("parse_whole_number: all of the text, decimal, within the bounds") {
  CHECK(parse_whole_number("8", 1, 1024) == 8);
  CHECK(parse_whole_number("1024", 1, 1024) == 1024);
  CHECK(parse_whole_number("-3", -5, 5) == -3);
  for (const char* bad : {"", "0", "1025", "2x", " 2", "2 ", "+2", "two", "0x10", "1e3", "99999999999999999999"})
    CHECK_MESSAGE(!parse_whole_number(bad, 1, 1024).has_value(), bad);
}

TEST_CASE("launch_environment_from_env reads torchrun's variables (or Slurm's) and names a bad one") {
  struct Restore {
    ~Restore() {
      for (const char* name : kVariables) ::unsetenv(name);
    }
  } restore;
  for (const char* name : kVariables) ::unsetenv(name);
  CHECK_FALSE(launch_environment_from_env().distributed());
  ::setenv("WORLD_SIZE", "4", 1);
  ::setenv("RANK", "3", 1);
  ::setenv("LOCAL_RANK", "1", 1);
  ::setenv("MASTER_ADDR", "node7", 1);
  ::setenv("MASTER_PORT", "29611", 1);
  const LaunchEnvironment e = launch_environment_from_env();
  CHECK(e.distributed());
  CHECK(e.rank == 3);
  CHECK(e.local_rank == 1);
  CHECK(e.master_addr == "node7");
  CHECK(e.master_port == 29611);
  ::setenv("RANK", "4", 1);
  CHECK(error_of([] { launch_environment_from_env(); }).find("RANK=4") != std::string::npos);
  ::unsetenv("RANK");
  CHECK(error_of([] { launch_environment_from_env(); }).find("RANK is not set") != std::string::npos);
  ::setenv("SLURM_PROCID", "2", 1);  // srun's rank, when torchrun's is absent
  ::setenv("SLURM_LOCALID", "0", 1);
  ::unsetenv("LOCAL_RANK");
  CHECK(launch_environment_from_env().rank == 2);
  CHECK(launch_environment_from_env().local_rank == 0);
  ::setenv("RANK", "0", 1);  // torchrun's wins
  CHECK(launch_environment_from_env().rank == 0);
  // The launcher hands its rank 0 the listening socket; no other rank takes one.
  CHECK(launch_environment_from_env().listen_fd == -1);
  ::setenv("BAM_LISTEN_FD", "7", 1);
  CHECK(launch_environment_from_env().listen_fd == 7);
  ::setenv("RANK", "3", 1);
  CHECK(error_of([] { launch_environment_from_env(); }).find("BAM_LISTEN_FD=7: only rank 0") != std::string::npos);
  ::setenv("RANK", "0", 1);
  ::setenv("BAM_LISTEN_FD", "seven", 1);
  CHECK(error_of([] { launch_environment_from_env(); }).find("BAM_LISTEN_FD=seven") != std::string::npos);
  ::unsetenv("BAM_LISTEN_FD");
  // torchrun's agent holds MASTER_PORT for its store: the ranks meet at the next port, or at
  // BAM_MASTER_PORT.
  ::setenv("TORCHELASTIC_USE_AGENT_STORE", "True", 1);
  CHECK(launch_environment_from_env().master_port == 29612);
  CHECK(launch_environment_from_env().port_variable == "MASTER_PORT+1, beside torchrun's store");
  ::setenv("BAM_MASTER_PORT", "31000", 1);
  CHECK(launch_environment_from_env().master_port == 31000);
  ::unsetenv("BAM_MASTER_PORT");
  ::setenv("TORCHELASTIC_USE_AGENT_STORE", "False", 1);
  CHECK(launch_environment_from_env().master_port == 29611);
  ::setenv("MASTER_PORT", "http", 1);
  CHECK(error_of([] { launch_environment_from_env(); }).find("MASTER_PORT=http") != std::string::npos);
}

TEST_CASE("rank 0 refuses a rank of another world size, which stops saying why, and goes on with its own") {
  const int port = free_port();
  auto env_of = [&](int rank, int world) {
    LaunchEnvironment env;
    env.rank = rank;
    env.world_size = world;
    env.master_port = port;
    env.connect_timeout_seconds = 30;
    return env;
  };
  std::string root_error, stray_error, rank1_error;
  double sum = 0;
  std::thread root([&] {
    root_error = error_of([&] {
      std::shared_ptr<Communicator> group = connect_tcp(env_of(0, 2));
      Tensor x = full({1}, 1.0, {DType::f32, Device::cpu()});
      group->all_reduce_sum(x);
      sum = x.item();
      group->finish();
    });
  });
  // A stray process (another job's rank 1 of 3) reaches the port first: it is told why it is refused.
  stray_error = error_of([&] { connect_tcp(env_of(1, 3)); });
  std::thread rank1([&] {
    rank1_error = error_of([&] {
      std::shared_ptr<Communicator> group = connect_tcp(env_of(1, 2));
      Tensor x = full({1}, 1.0, {DType::f32, Device::cpu()});
      group->all_reduce_sum(x);
      group->finish();
    });
  });
  root.join();
  rank1.join();
  CHECK_MESSAGE(stray_error.find("rank 1 was started with WORLD_SIZE=3, rank 0 at") != std::string::npos, stray_error);
  CHECK_MESSAGE(stray_error.find("with WORLD_SIZE=2") != std::string::npos, stray_error);
  CHECK_MESSAGE(root_error == "(no error)", root_error);  // the job itself runs
  CHECK_MESSAGE(rank1_error == "(no error)", rank1_error);
  CHECK(sum == 2);
}

TEST_CASE("rank 0 takes over the listening socket it is handed (BAM_LISTEN_FD), and refuses a wrong one, naming it") {
  int port = 0;
  tcp::Socket listener = tcp::listen_on_loopback(2, &port);
  REQUIRE(listener.fd() >= 0);
  CHECK(tcp::listens_at(listener.fd(), port));
  CHECK_FALSE(tcp::listens_at(listener.fd(), port == 65535 ? 1 : port + 1));
  auto env_of = [&](int rank) {
    LaunchEnvironment env;
    env.rank = rank;
    env.world_size = 2;
    env.master_port = port;
    env.connect_timeout_seconds = 30;
    return env;
  };
  // Rank 1 comes first, as a launched rank may: the port listens already. Rank 0 binding it anew
  // would fail (the port is in use: by the socket it was handed).
  std::string rank1_error;
  std::thread rank1([&] {
    rank1_error = error_of([&] {
      std::shared_ptr<Communicator> group = connect_tcp(env_of(1));
      Tensor x = full({1}, 2.0, {DType::f32, Device::cpu()});
      group->all_reduce_sum(x);
      group->finish();
    });
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  LaunchEnvironment root = env_of(0);
  root.listen_fd = listener.release();
  double sum = 0;
  const std::string root_error = error_of([&] {
    std::shared_ptr<Communicator> group = connect_tcp(root);
    Tensor x = full({1}, 1.0, {DType::f32, Device::cpu()});
    group->all_reduce_sum(x);
    sum = x.item();
    group->finish();
  });
  rank1.join();
  CHECK_MESSAGE(root_error == "(no error)", root_error);
  CHECK_MESSAGE(rank1_error == "(no error)", rank1_error);
  CHECK(sum == 3);
  CHECK(::fcntl(root.listen_fd, F_GETFD) == -1);  // the communicator closed it with itself

  // A socket listening at another port, or no socket at all, is refused (and closed).
  int other_port = 0;
  tcp::Socket other = tcp::listen_on_loopback(1, &other_port);
  REQUIRE(other.fd() >= 0);
  int pipe_ends[2];
  REQUIRE(::pipe(pipe_ends) == 0);
  ::close(pipe_ends[1]);
  for (int fd : {other.release(), pipe_ends[0]}) {
    root.listen_fd = fd;
    const std::string error = error_of([&] { connect_tcp(root); });
    CHECK_MESSAGE(error.find(fmt::format("BAM_LISTEN_FD={}: not a socket listening at port {} (MASTER_PORT)", fd,
                                         port)) != std::string::npos,
                  error);
    CHECK(::fcntl(fd, F_GETFD) == -1);
  }
}

TEST_CASE("a rank whose rank 0 never comes stops after the connect timeout, naming where it looked") {
  LaunchEnvironment env;
  env.rank = 1;
  env.world_size = 2;
  env.master_port = free_port();  // nothing listens there
  env.connect_timeout_seconds = 1;
  const auto start = std::chrono::steady_clock::now();
  const std::string error = error_of([&] { connect_tcp(env); });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK_MESSAGE(error.find("rank 1: rank 0 did not answer at 127.0.0.1:" + std::to_string(env.master_port) +
                           " (MASTER_ADDR and MASTER_PORT) within 1 s") != std::string::npos,
                error);
  CHECK(seconds >= 0.9);  // it retried until the deadline, not only once
  CHECK(seconds < 10);
}

TEST_CASE("a rank that reaches a program other than bam's rank 0 stops, saying so, instead of waiting") {
  // What torchrun's store is to a rank that connects to MASTER_PORT: it accepts and says nothing.
  int port = 0;
  tcp::Socket silent = tcp::listen_on_loopback(4, &port);
  REQUIRE(silent.fd() >= 0);
  LaunchEnvironment env;
  env.rank = 1;
  env.world_size = 2;
  env.master_port = port;
  env.connect_timeout_seconds = 1;
  const auto start = std::chrono::steady_clock::now();
  const std::string error = error_of([&] { connect_tcp(env); });
  silent = tcp::Socket();
  CHECK_MESSAGE(
      error.find("accepted the connection but did not answer as bam's rank 0 within 2 s") != std::string::npos, error);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
  // And rank 0, when ranks are missing, names them.
  env.rank = 0;
  env.world_size = 3;
  env.master_port = free_port();
  const std::string missing = error_of([&] { connect_tcp(env); });
  CHECK_MESSAGE(missing.find("0 of the 2 other ranks connected") != std::string::npos, missing);
  CHECK_MESSAGE(missing.find("(missing: ranks 1, 2)") != std::string::npos, missing);
}

}  // namespace
}  // namespace bam::test
