// Data parallelism's GPU transport: the NCCL communicator with one rank, on the GPU's own tensors
// (one GPU cannot hold two NCCL ranks; tests/cli_data_parallel.sh runs two ranks over TCP). It
// checks the library loads and each collective runs and leaves the values whole. all_gather writes a
// new tensor, so its byte count is checked too; all_reduce_sum and broadcast work in place, and
// with one rank a wrong count or type would leave the tensor as it was: those need two or more
// GPUs, which no check here has had yet. On the CUDA emulator, or where
// libnccl.so.2 is missing, it says so and checks nothing.
#include "engine/communicator.h"
#include "engine/cuda.h"
#include "engine/random.h"
#include "tests/support.h"

namespace bam::test {

TEST_CASE("NCCL with one rank: all_gather, all_reduce_sum and broadcast on device tensors") {
  LaunchEnvironment env;  // one process: rank 0 of 1
  std::shared_ptr<Communicator> tcp = connect_tcp(env);
  std::string why_not;
  std::shared_ptr<Communicator> nccl = connect_nccl(tcp, cuda::selected_device(), &why_not);
  if (!nccl) {
    MESSAGE("NCCL not exercised: " << why_not);
    return;
  }
  CHECK(nccl->describe().find("over NCCL") != std::string::npos);
  Generator g(test_seed("nccl one rank"));
  for (DType dtype : {DType::f32, DType::f64}) {
    INFO(dtype_name(dtype));
    const Tensor x = randn({5, 3}, {dtype}, &g);
    const Tensor on_gpu = x.to(Device::cuda(cuda::selected_device()));
    Tensor gathered = nccl->all_gather(on_gpu);
    CHECK(gathered.device().is_cuda());
    CHECK(gathered.shape() == x.shape());
    Tensor summed = on_gpu.clone();
    nccl->all_reduce_sum(summed);
    Tensor broadcast = on_gpu.clone();
    nccl->broadcast(broadcast);
    for (const Tensor& t : {gathered, summed, broadcast}) CHECK(max(abs(sub(t.to(Device::cpu()), x))).item() == 0);
  }
  // CPU tensors take the TCP path.
  const Tensor host = randn({4}, {}, &g);
  CHECK(max(abs(sub(nccl->all_gather(host), host))).item() == 0);
}

}  // namespace bam::test
