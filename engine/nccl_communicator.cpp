// The NCCL communicator: collectives of GPU tensors between the GPUs' memories on the current
// stream (no host round trip, no wait), CPU tensors through the TCP communicator it was started
// from. libnccl.so.2 is opened at run time, so a build needs only nccl.h and a machine without
// NCCL still trains, over TCP (connect_nccl says why). NCCL waits for ever on a rank that stopped:
// the caller should turn on the TCP communicator's exit_when_a_peer_stops before connect_nccl.
// Linked into the tools built for a real GPU; nccl_none.cpp stands in elsewhere (the CUDA
// emulator, builds without nccl.h).
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <nccl.h>

#include <cstring>

#include "engine/communicator.h"
#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace bam {
namespace {

// The NCCL entry points this file calls, from the library opened at run time.
struct NcclLibrary {
  void* handle = nullptr;
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) comm_init_rank = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclCommAbort) comm_abort = nullptr;
  decltype(&ncclAllGather) all_gather = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclBroadcast) broadcast = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;

  // Opens the library; on failure returns false with the reason.
  bool open(std::string* why_not) {
    handle = ::dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      *why_not = fmt::format("libnccl.so.2 could not be opened ({})", ::dlerror());
      return false;
    }
    bool all = true;
    auto find = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(::dlsym(handle, name));
      all = all && fn != nullptr;
    };
    find(get_unique_id, "ncclGetUniqueId");
    find(comm_init_rank, "ncclCommInitRank");
    find(comm_destroy, "ncclCommDestroy");
    find(comm_abort, "ncclCommAbort");
    find(all_gather, "ncclAllGather");
    find(all_reduce, "ncclAllReduce");
    find(broadcast, "ncclBroadcast");
    find(error_string, "ncclGetErrorString");
    if (!all) *why_not = "libnccl.so.2 lacks one of the functions used (ncclAllGather, ...): too old";
    return all;
  }
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(NcclLibrary nccl, std::shared_ptr<Communicator> bootstrap, int device)
      : nccl_(nccl), bootstrap_(std::move(bootstrap)), device_(device) {
    // Rank 0 makes the communicator's id; the TCP ranks carry it to the others.
    Tensor id = zeros({NCCL_UNIQUE_ID_BYTES}, {DType::u8, Device::cpu()});
    ncclUniqueId unique;
    if (rank() == 0) {
      check(nccl_.get_unique_id(&unique), "ncclGetUniqueId");
      std::memcpy(id.raw_data(), &unique, sizeof(unique));
    }
    bootstrap_->broadcast(id);
    std::memcpy(&unique, id.raw_data(), sizeof(unique));
    cuda::select_device(device_);
    check(nccl_.comm_init_rank(&comm_, world_size(), unique, rank()), "ncclCommInitRank");
  }
  // After finish() the communicator is taken down with its peers; otherwise (an error on this
  // rank) aborted, which does not wait for them.
  ~NcclCommunicator() override {
    if (comm_ == nullptr) return;
    if (finished_)
      nccl_.comm_destroy(comm_);
    else
      nccl_.comm_abort(comm_);
  }
  int rank() const override { return bootstrap_->rank(); }
  int world_size() const override { return bootstrap_->world_size(); }
  std::string describe() const override {
    return fmt::format("rank {} of {} over NCCL on cuda:{}", rank(), world_size(), device_);
  }

  Tensor all_gather(const Tensor& x) override {
    if (x.device().is_cpu()) return bootstrap_->all_gather(x);
    BAM_CHECK(x.dim() >= 1, "all_gather: needs a tensor with a first dimension, got {}", x.describe());
    Tensor in = x.detach().contiguous();
    Shape shape = x.shape();
    shape[0] *= world_size();
    Tensor out = empty(shape, {x.dtype(), x.device()});
    check(nccl_.all_gather(in.raw_data(), out.raw_data(), in.numel() * in.element_size(), ncclUint8, comm_, stream()),
          "ncclAllGather");
    return out;
  }
  Tensor gather_to_rank0(const Tensor& x) override { return bootstrap_->gather_to_rank0(x); }  // the host's way
  void all_reduce_sum(Tensor& x) override {
    if (x.device().is_cpu()) return bootstrap_->all_reduce_sum(x);
    BAM_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64, "all_reduce_sum: sums f32 or f64 tensors, got {}",
              x.describe());
    BAM_CHECK(x.is_contiguous(), "all_reduce_sum: needs a contiguous tensor, got {}", x.describe());
    check(nccl_.all_reduce(x.raw_data(), x.raw_data(), static_cast<size_t>(x.numel()),
                           x.dtype() == DType::f32 ? ncclFloat32 : ncclFloat64, ncclSum, comm_, stream()),
          "ncclAllReduce");
  }
  void broadcast(Tensor& x) override {
    if (x.device().is_cpu()) return bootstrap_->broadcast(x);
    BAM_CHECK(x.is_contiguous(), "broadcast: needs a contiguous tensor, got {}", x.describe());
    check(nccl_.broadcast(x.raw_data(), x.raw_data(), x.numel() * x.element_size(), ncclUint8, 0, comm_, stream()),
          "ncclBroadcast");
  }
  void exit_when_a_peer_stops() override { bootstrap_->exit_when_a_peer_stops(); }
  void finish() override {
    cuda::synchronize();  // this rank's collectives are done before it says so
    bootstrap_->finish();
    finished_ = true;
  }

 private:
  static cudaStream_t stream() { return static_cast<cudaStream_t>(cuda::current_stream()); }
  void check(ncclResult_t result, const char* call) const {
    BAM_CHECK(result == ncclSuccess, "rank {}: {} failed: {} ({}:{})", bootstrap_->rank(), call,
              nccl_.error_string(result), __FILE__, __LINE__);
  }

  NcclLibrary nccl_;
  std::shared_ptr<Communicator> bootstrap_;
  int device_;
  ncclComm_t comm_ = nullptr;
  bool finished_ = false;
};

}  // namespace

std::shared_ptr<Communicator> connect_nccl(std::shared_ptr<Communicator> tcp, int device, std::string* why_not) {
  NcclLibrary nccl;
  std::string reason;
  const bool mine = nccl.open(&reason);
  // Every rank must choose the same transport: the count of ranks that have NCCL decides.
  Tensor count = full({1}, mine ? 1.0 : 0.0, {DType::f64, Device::cpu()});
  tcp->all_reduce_sum(count);
  const int have = static_cast<int>(count.data<double>()[0]);
  if (have != tcp->world_size()) {
    *why_not = mine ? fmt::format("{} of the {} ranks could not open NCCL", tcp->world_size() - have, tcp->world_size())
                    : reason;
    return nullptr;
  }
  return std::make_shared<NcclCommunicator>(nccl, std::move(tcp), device);
}

}  // namespace bam
