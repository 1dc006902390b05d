// The per-pixel steps of render_crop (colour jitter, grayscale, solarisation) sixteen pixels at a
// time with AVX-512 (augment_pixels_avx512.cpp), for crops of n interleaved RGB pixels (floats in
// [0, 255]). Each gives the bits of the per-pixel functions of augment_math.h (the specification,
// which the GPU kernels share): the same IEEE operations in the same order, with no multiply fused
// into an add, and the branches as lane masks. Each does the first n - n % 16 pixels and returns
// that count; the caller runs the scalar code over the rest. Only to be called when
// cpu_has_avx512() (tests/test_augment.cpp compares both paths bit for bit).
#pragma once

namespace bam::data::augment_detail {

// jitter_pixel's step `op` (0 brightness, 1 contrast towards `mean`, 2 saturation, 3 hue).
int jitter_avx512(float* px, int n, int op, float brightness, float contrast, float saturation, float hue, float mean);
// Every pixel to its luma in all three channels.
int grayscale_avx512(float* px, int n);
// v >= 128 becomes 255 - v, in every channel.
int solarize_avx512(float* px, int n);

}  // namespace bam::data::augment_detail
