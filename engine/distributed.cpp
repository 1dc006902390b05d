// The differentiable collectives and the sum of the ranks' gradients (engine/distributed.h).
#include "engine/distributed.h"

#include <fmt/format.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/fnv1a.h"
#include "engine/ops.h"

namespace bam {
namespace {

std::shared_ptr<Communicator>& process_group_slot() {
  static std::shared_ptr<Communicator> group;
  return group;
}

}  // namespace

Communicator* process_group() { return process_group_slot().get(); }
void set_process_group(std::shared_ptr<Communicator> group) { process_group_slot() = std::move(group); }

Tensor all_gather_rows(const Tensor& x, Communicator& group) {
  BAM_CHECK(x.dim() >= 1, "all_gather_rows: needs a tensor with rows, got {}", x.describe());
  Tensor out = group.all_gather(x.detach().contiguous());
  if (!any_requires_grad({&x})) return out;
  const int64_t rows = x.size(0), first = rows * group.rank();
  Communicator* g = &group;
  return record("all_gather_rows", out, {x}, [g, rows, first](const Tensor& grad) {
    const bool exact = grad.dtype() == DType::f32 || grad.dtype() == DType::f64;
    Tensor summed = exact ? grad.contiguous().clone() : grad.to(DType::f32).contiguous();
    g->all_reduce_sum(summed);
    return std::vector<Tensor>{summed.narrow(0, first, rows).to(grad.dtype())};
  });
}

namespace {

// Both gathers of varying rows: what each rank holds first (a mismatch fails on every rank, by
// name, instead of as garbage), then the rows padded to the most any rank holds (the collectives
// take equal sizes), put back together in rank order where `gather` returns them.
Tensor gather_varying_rows(const Tensor& x, Communicator& group, std::vector<int64_t>* rows_per_rank, const char* what,
                           Tensor (Communicator::*gather)(const Tensor&)) {
  BAM_CHECK(x.dim() >= 1, "{}: needs a tensor with rows, got {}", what, x.describe());
  NoGradGuard no_grad;
  const int64_t rows = x.size(0);
  int64_t row_size = 1;
  for (int64_t d = 1; d < x.dim(); ++d) row_size *= x.size(d);
  const std::vector<int64_t> mine = {rows, row_size, static_cast<int64_t>(x.dtype())};
  const std::vector<int64_t> held = group.all_gather(from_vector(mine, {1, 3})).to_vector<int64_t>();
  int64_t most = 0;
  for (int r = 0; r < group.world_size(); ++r) {
    BAM_CHECK(held[3 * r + 1] == row_size && held[3 * r + 2] == mine[2],
              "{}: rank {} holds rows of {} {} values, rank {} rows of {} {} values", what, group.rank(), row_size,
              dtype_name(x.dtype()), r, held[3 * r + 1], dtype_name(static_cast<DType>(held[3 * r + 2])));
    most = std::max(most, held[3 * r]);
  }
  if (rows_per_rank) {
    rows_per_rank->clear();
    for (int r = 0; r < group.world_size(); ++r) rows_per_rank->push_back(held[3 * r]);
  }
  Shape padded_shape = x.shape();
  padded_shape[0] = most;
  if (most == 0) return empty(padded_shape, {x.dtype(), x.device()});  // no rank holds a row (all see it)
  Tensor padded = zeros(padded_shape, {x.dtype(), x.device()});
  if (rows > 0) padded.narrow(0, 0, rows).copy_(x);
  Tensor all = (group.*gather)(padded);
  if (all.size(0) == 0) return all;  // gather_to_rank0 on another rank than 0
  padded = Tensor();
  std::vector<Tensor> parts;
  for (int r = 0; r < group.world_size(); ++r)
    if (held[3 * r] > 0) parts.push_back(all.narrow(0, r * most, held[3 * r]));
  return parts.size() == 1 ? parts[0].contiguous() : cat(parts, 0);
}

}  // namespace

Tensor all_gather_varying_rows(const Tensor& x, Communicator& group, std::vector<int64_t>* rows_per_rank) {
  return gather_varying_rows(x, group, rows_per_rank, "all_gather_varying_rows", &Communicator::all_gather);
}

Tensor gather_varying_rows_to_rank0(const Tensor& x, Communicator& group, std::vector<int64_t>* rows_per_rank) {
  return gather_varying_rows(x, group, rows_per_rank, "gather_varying_rows_to_rank0", &Communicator::gather_to_rank0);
}

void fail_on_every_rank(Communicator& group, const std::string& message) {
  group.finish();
  fail("{}", message);
}

bool true_on_every_rank(Communicator& group, bool value) {
  Tensor count = from_vector(std::vector<double>{value ? 1.0 : 0.0}, {1});
  group.all_reduce_sum(count);
  return count.data<double>()[0] == group.world_size();
}

void fail_if_any_rank(Communicator& group, const std::string& problem, const std::string& elsewhere) {
  if (true_on_every_rank(group, problem.empty())) return;
  fail_on_every_rank(group, problem.empty() ? elsewhere : fmt::format("{} (rank {})", problem, group.rank()));
}

namespace {

// "rank 2 was" / "ranks 1, 2 were".
std::string ranks_were(const std::vector<int>& ranks) {
  std::string list;
  for (size_t i = 0; i < ranks.size(); ++i) list += (i ? ", " : "") + std::to_string(ranks[i]);
  return fmt::format("rank{} {} {}", ranks.size() > 1 ? "s" : "", list, ranks.size() > 1 ? "were" : "was");
}

// The ranks whose `width` values in `all` (every rank's, rank after rank) differ from rank 0's.
std::vector<int> ranks_unlike_rank0(const std::vector<int64_t>& all, size_t width, int world) {
  std::vector<int> differing;
  for (int r = 1; r < world; ++r)
    for (size_t k = 0; k < width; ++k)
      if (all[size_t(r) * width + k] != all[k]) {
        differing.push_back(r);
        break;
      }
  return differing;
}

}  // namespace

void check_ranks_agree(Communicator& group, const std::string& text, const std::string& what, const std::string& hint) {
  check_ranks_agree(group, {{std::string(), text}}, what, hint);
}

void check_ranks_agree(Communicator& group, const std::vector<std::pair<std::string, std::string>>& items,
                       const std::string& what, const std::string& hint) {
  const int world = group.world_size();
  // First the list itself, {how many items, a hash of their names}: the per-item hashes below are
  // gathered with one size, which every rank must share.
  std::string names;
  for (const auto& item : items) names += item.first + '\n';
  const std::vector<int64_t> list = {static_cast<int64_t>(items.size()), static_cast<int64_t>(fnv1a(names))};
  const std::vector<int64_t> lists = group.all_gather(from_vector(list, {1, 2})).to_vector<int64_t>();
  if (const std::vector<int> other = ranks_unlike_rank0(lists, 2, world); !other.empty())
    fail_on_every_rank(group, fmt::format("{} started with other {} than rank 0 (another build of the tool?): {}",
                                          ranks_were(other), what, hint));
  if (items.empty()) return;
  std::vector<int64_t> mine;
  for (const auto& item : items) mine.push_back(static_cast<int64_t>(fnv1a(item.second)));
  const std::vector<int64_t> all =
      group.all_gather(from_vector(mine, {1, static_cast<int64_t>(items.size())})).to_vector<int64_t>();
  const std::vector<int> other = ranks_unlike_rank0(all, items.size(), world);
  if (other.empty()) return;
  // The named items that differ on any rank, in their order.
  std::string differing;
  for (size_t k = 0; k < items.size(); ++k) {
    if (items[k].first.empty()) continue;
    for (int r : other)
      if (all[size_t(r) * items.size() + k] != all[k]) {
        differing += (differing.empty() ? "" : ", ") + items[k].first;
        break;
      }
  }
  fail_on_every_rank(group, fmt::format("{} started with other {} than rank 0{}: {}", ranks_were(other), what,
                                        differing.empty() ? "" : " (" + differing + ")", hint));
}

namespace {

// An FNV-1a hash of this machine's host name.
uint64_t host_hash() {
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  return fnv1a(host);
}

}  // namespace

GpuPlacement gpu_placement(Communicator& group, const std::string& gpu) {
  // {on a GPU, hash of the machine and the GPU}: equal pairs on a GPU are ranks sharing one.
  const std::vector<int64_t> mine = {gpu.empty() ? 0 : 1, static_cast<int64_t>(fnv1a(gpu, host_hash()))};
  const std::vector<int64_t> all = group.all_gather(from_vector(mine, {1, 2})).to_vector<int64_t>();
  GpuPlacement p;
  const int world = group.world_size();
  auto on_gpu = [&](int r) { return all[2 * static_cast<size_t>(r)] != 0; };
  auto same_gpu = [&](int r, int s) {
    return on_gpu(r) && on_gpu(s) && all[2 * size_t(r) + 1] == all[2 * size_t(s) + 1];
  };
  for (int r = 0; r < world; ++r) {
    if (!on_gpu(r)) {
      if (p.first_rank_on_the_cpu < 0) p.first_rank_on_the_cpu = r;
      continue;
    }
    ++p.ranks_on_gpus;
    std::vector<int> with_r;
    for (int s = 0; s < world; ++s)
      if (same_gpu(r, s)) with_r.push_back(s);
    if (r == group.rank()) p.sharing_mine = static_cast<int>(with_r.size());
    if (p.shared.empty() && with_r.size() > 1) p.shared = with_r;
  }
  return p;
}

int ranks_on_this_machine(Communicator& group) {
  const int64_t mine = static_cast<int64_t>(host_hash());
  const std::vector<int64_t> all =
      group.all_gather(from_vector(std::vector<int64_t>{mine}, {1, 1})).to_vector<int64_t>();
  return static_cast<int>(std::count(all.begin(), all.end(), mine));
}

int ranks_sharing_cores(Communicator& group) {
  // This rank's machine (an FNV-1a hash of the host name) and the CPUs it may run on.
  const uint64_t hash = host_hash();
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (::sched_getaffinity(0, sizeof(mask), &mask) != 0) CPU_ZERO(&mask);  // unknown: taken as its peers'
  constexpr size_t kWords = sizeof(cpu_set_t) / sizeof(int64_t);
  std::vector<int64_t> mine(1 + kWords);
  mine[0] = static_cast<int64_t>(hash);
  std::memcpy(&mine[1], &mask, sizeof(mask));
  const int64_t width = static_cast<int64_t>(mine.size());
  const std::vector<int64_t> all = group.all_gather(from_vector(mine, {1, width})).to_vector<int64_t>();
  int sharing = 0;
  for (int r = 0; r < group.world_size(); ++r) sharing += std::equal(mine.begin(), mine.end(), all.begin() + r * width);
  return sharing;
}

Tensor sum_over_ranks(const Tensor& x, Communicator& group) {
  BAM_CHECK(x.dtype() == DType::f32 || x.dtype() == DType::f64, "sum_over_ranks: sums f32 or f64, got {}",
            x.describe());
  Tensor out = x.detach().contiguous().clone();
  group.all_reduce_sum(out);
  if (!any_requires_grad({&x})) return out;
  Communicator* g = &group;
  return record("sum_over_ranks", out, {x}, [g](const Tensor& grad) {
    Tensor summed = grad.contiguous().clone();
    g->all_reduce_sum(summed);
    return std::vector<Tensor>{summed};
  });
}

// The mean and then the centred squares, summed over ranks (two passes, as the fused kernel takes
// them), from differentiable ops: the gradient reaches every rank's rows through both sums.
Tensor batch_norm_across_ranks(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& running_mean,
                               const Tensor& running_var, double momentum, double eps, Communicator& group) {
  BAM_CHECK(x.dim() == 2, "batch_norm across ranks: expects [N, C], got {}", x.describe());
  const double n = static_cast<double>(x.size(0)) * group.world_size();
  BAM_CHECK(n > 1, "batch_norm: training needs more than one value per channel, got {} on each of {} ranks",
            x.describe(), group.world_size());
  Tensor mean = div(sum_over_ranks(sum(x, {0}), group), n);
  Tensor centred = sub(x, mean);
  Tensor var = div(sum_over_ranks(sum(square(centred), {0}), group), n);
  Tensor out = mul(centred, rsqrt(add(var, eps)));
  if (weight.defined()) out = add(mul(out, weight), bias);
  if (running_mean.defined() && running_var.defined()) {
    NoGradGuard no_grad;
    Tensor(running_mean).copy_(add(mul(running_mean, 1 - momentum), mul(mean.detach(), momentum)));
    Tensor(running_var).copy_(add(mul(running_var, 1 - momentum), mul(var.detach(), momentum * n / (n - 1))));
  }
  return out;
}

void sum_gradients_over_ranks(const std::vector<Tensor>& parameters, Communicator& group) {
  if (group.world_size() == 1) return;
  NoGradGuard no_grad;
  // One flat buffer per (dtype, device), in parameter order: the same layout on every rank.
  std::vector<std::vector<Tensor>> buckets;
  for (const Tensor& p : parameters) {
    if (!p.grad().defined()) continue;
    bool placed = false;
    for (auto& bucket : buckets) {
      if (bucket.front().dtype() == p.dtype() && bucket.front().device() == p.device()) {
        bucket.push_back(p);
        placed = true;
        break;
      }
    }
    if (!placed) buckets.push_back({p});
  }
  for (const auto& bucket : buckets) {
    std::vector<Tensor> flat;
    for (const Tensor& p : bucket) flat.push_back(p.grad().reshape({-1}));
    Tensor all = cat(flat, 0);
    if (all.dtype() != DType::f32 && all.dtype() != DType::f64) all = all.to(DType::f32);
    group.all_reduce_sum(all);
    int64_t offset = 0;
    for (const Tensor& p : bucket) {
      Tensor(p.grad()).copy_(all.narrow(0, offset, p.numel()).reshape(p.shape()));
      offset += p.numel();
    }
  }
}

double weight_checksum(const std::vector<Tensor>& tensors) {
  double sum = 0;
  for (const Tensor& t : tensors) {
    const Tensor host = t.detach().to(Device::cpu()).to(DType::f64).contiguous();
    for (int64_t i = 0; i < host.numel(); ++i) sum += host.data<double>()[i];
  }
  return sum;
}

}  // namespace bam
