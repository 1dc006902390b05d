// copy_into: strided, broadcasting, converting copies on the CPU or on a CUDA device.
#include "engine/device_copy.h"

#include "engine/error.h"
#include "kernels/cpu/copy.h"
#ifdef BAM_WITH_CUDA
#include "engine/cuda.h"
#include "kernels/cuda/copy.h"
#endif

namespace bam {

Shape broadcast_strides(const Tensor& t, const Shape& target, const char* op) {
  const Shape& shape = t.shape();
  BAM_CHECK(shape.size() <= target.size(), "{}: cannot broadcast shape {} to {}", op, shape_str(shape),
            shape_str(target));
  Shape strides(target.size(), 0);
  size_t lead = target.size() - shape.size();
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == target[lead + d]) {
      strides[lead + d] = t.strides()[d];
    } else {
      BAM_CHECK(shape[d] == 1, "{}: cannot broadcast shape {} to {}", op, shape_str(shape), shape_str(target));
    }
  }
  return strides;
}

void copy_into(const Tensor& dst, const Tensor& src) {
  BAM_CHECK(dst.device() == src.device(), "copy: source on {} and destination on {}", src.device().str(),
            dst.device().str());
  Shape src_strides = broadcast_strides(src, dst.shape(), "copy");
  int ndim = static_cast<int>(dst.dim());
  if (dst.device().is_cpu()) {
    cpu::copy_strided(src.raw_data(), src.dtype(), src_strides.data(), dst.raw_data(), dst.dtype(),
                      dst.strides().data(), dst.shape().data(), ndim);
    return;
  }
#ifdef BAM_WITH_CUDA
  cuda_kernels::copy_strided(src.raw_data(), src.dtype(), src_strides.data(), dst.raw_data(), dst.dtype(),
                             dst.strides().data(), dst.shape().data(), ndim, cuda::current_stream());
#else
  fail("copy: {} is on {} but this build has no CUDA backend", dst.describe(), dst.device().str());
#endif
}

}  // namespace bam
