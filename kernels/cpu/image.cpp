// Patchify and bicubic kernels. Both are linear maps; backward applies the transposed map.
#include "kernels/cpu/image.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace bam::cpu {

template <typename T>
void patchify_forward(const T* images, T* patches, int64_t B, int64_t C, int64_t H, int64_t W, int64_t P) {
  const int64_t Hp = H / P, Wp = W / P, K = C * P * P;
  parallel_for(B * Hp, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bp = begin; bp < end; ++bp) {
      int64_t b = bp / Hp, py = bp % Hp;
      for (int64_t px = 0; px < Wp; ++px) {
        T* out = patches + ((b * Hp + py) * Wp + px) * K;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t ky = 0; ky < P; ++ky) {
            const T* row = images + ((b * C + c) * H + py * P + ky) * W + px * P;
            std::copy_n(row, P, out + (c * P + ky) * P);
          }
      }
    }
  });
}

template <typename T>
void patchify_backward(const T* d_patches, T* d_images, int64_t B, int64_t C, int64_t H, int64_t W, int64_t P) {
  const int64_t Hp = H / P, Wp = W / P, K = C * P * P;
  std::fill_n(d_images, B * C * H * W, T(0));
  parallel_for(B * Hp, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bp = begin; bp < end; ++bp) {
      int64_t b = bp / Hp, py = bp % Hp;
      for (int64_t px = 0; px < Wp; ++px) {
        const T* in = d_patches + ((b * Hp + py) * Wp + px) * K;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t ky = 0; ky < P; ++ky) {
            T* row = d_images + ((b * C + c) * H + py * P + ky) * W + px * P;
            std::copy_n(in + (c * P + ky) * P, P, row);
          }
      }
    }
  });
}

namespace {

// The four taps of one output coordinate: clamped source indices and cubic weights.
struct CubicTaps {
  int64_t index[4];
  double weight[4];
};

double cubic_near(double t, double a) { return ((a + 2) * t - (a + 3)) * t * t + 1; }  // |t| <= 1
double cubic_far(double t, double a) { return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a; }  // 1 < |t| < 2

std::vector<CubicTaps> cubic_taps(int64_t in_size, int64_t out_size) {
  const double a = -0.75;
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  std::vector<CubicTaps> taps(out_size);
  for (int64_t o = 0; o < out_size; ++o) {
    double src = (o + 0.5) * scale - 0.5;
    double base = std::floor(src);
    double t = src - base;
    CubicTaps& tap = taps[o];
    tap.weight[0] = cubic_far(t + 1, a);
    tap.weight[1] = cubic_near(t, a);
    tap.weight[2] = cubic_near(1 - t, a);
    tap.weight[3] = cubic_far(2 - t, a);
    for (int k = 0; k < 4; ++k)
      tap.index[k] = std::clamp<int64_t>(static_cast<int64_t>(base) - 1 + k, 0, in_size - 1);
  }
  return taps;
}

}  // namespace

template <typename T>
void bicubic_forward(const T* x, T* y, int64_t N, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w) {
  auto rows = cubic_taps(in_h, out_h), cols = cubic_taps(in_w, out_w);
  parallel_for(N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const T* plane = x + n * in_h * in_w;
      for (int64_t oy = 0; oy < out_h; ++oy)
        for (int64_t ox = 0; ox < out_w; ++ox) {
          double acc = 0;
          for (int i = 0; i < 4; ++i) {
            const T* row = plane + rows[oy].index[i] * in_w;
            double r = 0;
            for (int j = 0; j < 4; ++j) r += cols[ox].weight[j] * row[cols[ox].index[j]];
            acc += rows[oy].weight[i] * r;
          }
          y[(n * out_h + oy) * out_w + ox] = static_cast<T>(acc);
        }
    }
  });
}

template <typename T>
void bicubic_backward(const T* dy, T* dx, int64_t N, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w) {
  auto rows = cubic_taps(in_h, out_h), cols = cubic_taps(in_w, out_w);
  parallel_for(N, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> acc(in_h * in_w);
    for (int64_t n = begin; n < end; ++n) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t oy = 0; oy < out_h; ++oy)
        for (int64_t ox = 0; ox < out_w; ++ox) {
          double g = dy[(n * out_h + oy) * out_w + ox];
          for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j)
              acc[rows[oy].index[i] * in_w + cols[ox].index[j]] += rows[oy].weight[i] * cols[ox].weight[j] * g;
        }
      for (int64_t k = 0; k < in_h * in_w; ++k) dx[n * in_h * in_w + k] = static_cast<T>(acc[k]);
    }
  });
}

#define BAM_INSTANTIATE(T)                                                                               \
  template void patchify_forward<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t);          \
  template void patchify_backward<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t);         \
  template void bicubic_forward<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t);           \
  template void bicubic_backward<T>(const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t);
BAM_INSTANTIATE(float)
BAM_INSTANTIATE(double)

}  // namespace bam::cpu
