// CUPTI activity records -> per-kernel totals. Built with CUPTI's headers when CMake found them
// (BAM_HAVE_CUPTI); the library itself is opened with dlopen when a profile starts.
#include "tools/common/kernel_profile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>

#ifdef BAM_HAVE_CUPTI
#include <cupti.h>
#include <cxxabi.h>
#include <dlfcn.h>
#endif

#include "engine/cuda.h"

namespace bam::tool {

#ifdef BAM_HAVE_CUPTI
namespace {

// Strips what makes kernel names long without telling them apart: our namespaces, the
// anonymous namespace and the parameter list ("bam::cuda_kernels::(anonymous namespace)::
// layer_norm_forward_kernel<float, float>(float const*, ...)" -> "layer_norm_forward_kernel<float, float>").
std::string short_kernel_name(std::string name) {
  for (const char* prefix : {"bam::cuda_kernels::", "(anonymous namespace)::"}) {
    for (size_t at; (at = name.find(prefix)) != std::string::npos;) name.erase(at, std::string(prefix).size());
  }
  if (name.rfind("void ", 0) == 0) name.erase(0, 5);  // a leading return type
  // The parameter list starts at the first '(' outside template brackets.
  int depth = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '<') ++depth;
    if (name[i] == '>') --depth;
    if (name[i] == '(' && depth == 0 && i > 0) {
      name.resize(i);
      break;
    }
  }
  if (name.size() > 90) name = name.substr(0, 87) + "...";
  return name;
}

struct Cupti {
  decltype(&cuptiActivityRegisterCallbacks) register_callbacks = nullptr;
  decltype(&cuptiActivityEnable) enable = nullptr;
  decltype(&cuptiActivityDisable) disable = nullptr;
  decltype(&cuptiActivityFlushAll) flush_all = nullptr;
  decltype(&cuptiActivityGetNextRecord) next_record = nullptr;
  bool loaded = false;
};

// The totals the buffer callback adds to (CUPTI calls it from its own thread during flushes).
std::map<std::string, KernelTime>* g_totals = nullptr;

const Cupti& cupti(std::string* why) {
  static Cupti c;
  static std::string reason;
  static bool tried = false;
  if (!tried) {
    tried = true;
    void* lib = nullptr;
    for (const char* path :
         {"libcupti.so", "libcupti.so.13", "libcupti.so.12", "/usr/local/cuda/extras/CUPTI/lib64/libcupti.so",
          "/usr/local/cuda/lib64/libcupti.so", "/usr/local/cuda/targets/x86_64-linux/lib/libcupti.so"})
      if ((lib = dlopen(path, RTLD_NOW | RTLD_LOCAL))) break;
    if (!lib) {
      reason = "libcupti.so was not found (add its folder to LD_LIBRARY_PATH)";
    } else {
      c.register_callbacks =
          reinterpret_cast<decltype(c.register_callbacks)>(dlsym(lib, "cuptiActivityRegisterCallbacks"));
      c.enable = reinterpret_cast<decltype(c.enable)>(dlsym(lib, "cuptiActivityEnable"));
      c.disable = reinterpret_cast<decltype(c.disable)>(dlsym(lib, "cuptiActivityDisable"));
      c.flush_all = reinterpret_cast<decltype(c.flush_all)>(dlsym(lib, "cuptiActivityFlushAll"));
      c.next_record = reinterpret_cast<decltype(c.next_record)>(dlsym(lib, "cuptiActivityGetNextRecord"));
      c.loaded = c.register_callbacks && c.enable && c.disable && c.flush_all && c.next_record;
      if (!c.loaded) reason = "libcupti.so lacks the activity API";
    }
  }
  if (why) *why = reason;
  return c;
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = 8 << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, *size));
  *max_records = 0;
}

void add(const std::string& name, uint64_t start, uint64_t end) {
  KernelTime& k = (*g_totals)[name];
  k.name = name;
  k.calls += 1;
  k.total_ms += (end - start) * 1e-6;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* record = nullptr;
  while (g_totals && cupti(nullptr).next_record(buffer, valid, &record) == CUPTI_SUCCESS) {
    if (record->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || record->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
      auto* k = reinterpret_cast<CUpti_ActivityKernel10*>(record);
      const char* name = k->name ? k->name : "(unnamed kernel)";
      int status = 0;
      char* demangled = abi::__cxa_demangle(name, nullptr, nullptr, &status);
      add(short_kernel_name(status == 0 && demangled ? demangled : name), k->start, k->end);
      std::free(demangled);
    } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
      auto* m = reinterpret_cast<CUpti_ActivityMemcpy6*>(record);
      add("[memcpy]", m->start, m->end);
    } else if (record->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
      auto* m = reinterpret_cast<CUpti_ActivityMemset4*>(record);
      add("[memset]", m->start, m->end);
    }
  }
  std::free(buffer);
}

const CUpti_ActivityKind kKinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                     CUPTI_ACTIVITY_KIND_MEMSET};

}  // namespace

bool KernelProfile::start(std::string* why) {
  const Cupti& c = cupti(why);
  if (!c.loaded) return false;
  static std::map<std::string, KernelTime> totals;
  totals.clear();
  g_totals = &totals;
  cuda::synchronize();
  if (c.register_callbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS) {
    *why = "cuptiActivityRegisterCallbacks failed";
    return false;
  }
  for (CUpti_ActivityKind kind : kKinds)
    if (c.enable(kind) != CUPTI_SUCCESS) {
      *why = "cuptiActivityEnable failed (is another profiler attached?)";
      for (CUpti_ActivityKind enabled : kKinds) c.disable(enabled);
      g_totals = nullptr;
      return false;
    }
  return true;
}

std::vector<KernelTime> KernelProfile::stop() {
  const Cupti& c = cupti(nullptr);
  std::vector<KernelTime> out;
  if (!c.loaded || !g_totals) return out;
  cuda::synchronize();
  // Flushed before the kinds are disabled as well as after: CUPTI 13.0 could deadlock disabling
  // concurrent-kernel records with some still buffered (fixed in 13.0 Update 1).
  c.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  for (CUpti_ActivityKind kind : kKinds) c.disable(kind);
  c.flush_all(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  for (auto& [name, k] : *g_totals) out.push_back(k);
  g_totals = nullptr;
  std::sort(out.begin(), out.end(), [](const KernelTime& a, const KernelTime& b) { return a.total_ms > b.total_ms; });
  return out;
}

#else

bool KernelProfile::start(std::string* why) {
  *why = cuda::built_with_cuda() ? "this build found no CUPTI headers" : "this build has no CUDA backend";
  return false;
}
std::vector<KernelTime> KernelProfile::stop() { return {}; }

#endif

void print_kernel_profile(const std::vector<KernelTime>& kernels, int steps, double wall_ms_per_step, int top) {
  double total = 0;
  for (const KernelTime& k : kernels) total += k.total_ms;
  if (total <= 0 || steps <= 0) return;
  std::printf("\nkernel profile (CUPTI, %d step%s; GPU busy %.1f ms of %.1f ms per step, %.0f %%)\n", steps,
              steps == 1 ? "" : "s", total / steps, wall_ms_per_step, 100 * total / steps / wall_ms_per_step);
  std::printf("| kernel | calls/step | ms/step | %% of GPU time |\n|---|---:|---:|---:|\n");
  double shown = 0;
  for (size_t i = 0; i < kernels.size() && static_cast<int>(i) < top; ++i) {
    const KernelTime& k = kernels[i];
    shown += k.total_ms;
    std::printf("| %s | %.0f | %.2f | %.1f |\n", k.name.c_str(), static_cast<double>(k.calls) / steps,
                k.total_ms / steps, 100 * k.total_ms / total);
  }
  if (kernels.size() > static_cast<size_t>(top))
    std::printf("| (%zu other kernels) | | %.2f | %.1f |\n", kernels.size() - top, (total - shown) / steps,
                100 * (total - shown) / total);
}

}  // namespace bam::tool
