// Image ops for the ViT: patchify (the patch-embedding im2col) and bicubic interpolation.
#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/op_support.h"
#include "engine/ops.h"
#include "kernels/cpu/image.h"
#include "kernels/cuda/image.h"

namespace bam {
using namespace detail;

Tensor patchify(const Tensor& images, int64_t patch) {
  BAM_CHECK(images.dim() == 4, "patchify: expects images [B, C, H, W], got {}", images.describe());
  BAM_CHECK(patch >= 1, "patchify: patch size must be positive, got {}", patch);
  const int64_t B = images.size(0), C = images.size(1), H = images.size(2), W = images.size(3);
  BAM_CHECK(H >= patch && W >= patch, "patchify: image {}x{} is smaller than the patch size {}", H, W, patch);
  const int64_t Hp = H / patch, Wp = W / patch;
  Tensor xc = contiguous_data(images);
  Tensor out = empty({B, Hp * Wp, C * patch * patch}, {images.dtype(), images.device()});
  if (images.device().is_cuda()) {
    BAM_CUDA_BRANCH("patchify", cuda_kernels::patchify_forward(images.dtype(), xc.raw_data(), out.raw_data(), B, C, H,
                                                               W, patch, cuda::current_stream()));
  } else {
    dispatch_floating("patchify", images.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::patchify_forward<T>(xc.data<T>(), out.data<T>(), B, C, H, W, patch);
    });
  }
  return record("patchify", out, {images}, [B, C, H, W, patch](const Tensor& g) {
    Tensor gc = contiguous_data(g);
    Tensor dx = empty({B, C, H, W}, {g.dtype(), g.device()});
    if (g.device().is_cuda()) {
      BAM_CUDA_BRANCH("patchify", cuda_kernels::patchify_backward(g.dtype(), gc.raw_data(), dx.raw_data(), B, C, H, W,
                                                                  patch, cuda::current_stream()));
      return std::vector<Tensor>{dx};
    }
    dispatch_floating("patchify", g.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::patchify_backward<T>(gc.data<T>(), dx.data<T>(), B, C, H, W, patch);
    });
    return std::vector<Tensor>{dx};
  });
}

Tensor interpolate_bicubic(const Tensor& x, int64_t out_h, int64_t out_w) {
  BAM_CHECK(x.dim() == 4, "interpolate_bicubic: expects [B, C, H, W], got {}", x.describe());
  BAM_CHECK(out_h >= 1 && out_w >= 1, "interpolate_bicubic: output size {}x{} must be positive", out_h, out_w);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  BAM_CHECK(H >= 1 && W >= 1, "interpolate_bicubic: empty input {}", x.describe());
  Tensor xc = contiguous_data(x);
  Tensor out = empty({B, C, out_h, out_w}, {x.dtype(), x.device()});
  if (x.device().is_cuda()) {
    BAM_CUDA_BRANCH("interpolate_bicubic",
                    cuda_kernels::bicubic_forward(x.dtype(), xc.raw_data(), out.raw_data(), B * C, H, W, out_h, out_w,
                                                  cuda::current_stream()));
  } else {
    dispatch_floating("interpolate_bicubic", x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::bicubic_forward<T>(xc.data<T>(), out.data<T>(), B * C, H, W, out_h, out_w);
    });
  }
  return record("interpolate_bicubic", out, {x}, [B, C, H, W, out_h, out_w](const Tensor& g) {
    Tensor gc = contiguous_data(g);
    Tensor dx = empty({B, C, H, W}, {g.dtype(), g.device()});
    if (g.device().is_cuda()) {
      Tensor scratch = empty({B * C * H * W}, {DType::f64, g.device()});
      BAM_CUDA_BRANCH("interpolate_bicubic",
                      cuda_kernels::bicubic_backward(g.dtype(), gc.raw_data(), dx.raw_data(), scratch.raw_data(), B * C,
                                                     H, W, out_h, out_w, cuda::current_stream()));
      return std::vector<Tensor>{dx};
    }
    dispatch_floating("interpolate_bicubic", g.dtype(), [&](auto tag) {
      using T = decltype(tag);
      cpu::bicubic_backward<T>(gc.data<T>(), dx.data<T>(), B * C, H, W, out_h, out_w);
    });
    return std::vector<Tensor>{dx};
  });
}

}  // namespace bam
