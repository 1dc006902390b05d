// The CPU augmentation: crop geometry (torchvision's RandomResizedCrop), PIL-style antialiased
// bicubic resampling against hand-computed values, each colour operation on hand-checked pixels,
// the per-view recipe (blur/solarise probabilities), determinism of the RNG keys, and the blur, the
// resize's vertical pass and the AVX-512 per-pixel steps against plain loops, bit for bit.
#include <algorithm>
#include <cmath>
#include <random>

#include "data/augment.h"
#include "data/augment_math.h"
#include "data/augment_pixels.h"
#include "kernels/cpu/cpu_features.h"
#include "tests/bit_compare.h"
#include "tests/support.h"

namespace bam::test {
namespace {

data::DecodedImage solid(int w, int h, uint8_t r, uint8_t g, uint8_t b) {
  data::DecodedImage img;
  img.width = w;
  img.height = h;
  for (int i = 0; i < w * h; ++i) img.pixels.insert(img.pixels.end(), {r, g, b});
  return img;
}

// A recipe whose normalisation is x / 255, so outputs read back as pixel values / 255.
data::AugmentRecipe plain_recipe() {
  data::AugmentRecipe r;
  r.mean = {0, 0, 0};
  r.std = {1, 1, 1};
  return r;
}

// Renders `p` (a full-image box, output the image's size) and returns HWC pixel values.
std::vector<float> render(const data::DecodedImage& img, data::CropParams p) {
  p.top = p.left = 0;
  p.height = img.height;
  p.width = img.width;
  p.out_size = img.width;
  std::vector<float> chw(3 * img.width * img.width);
  data::render_crop(img, p, plain_recipe(), chw.data());
  std::vector<float> hwc(chw.size());
  int n = img.width * img.width;
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < n; ++i) hwc[3 * i + c] = chw[c * n + i] * 255.0f;
  return hwc;
}

}  // namespace

TEST_CASE("RandomResizedCrop boxes stay inside the image, within scale and aspect bounds") {
  uint64_t seed = test_seed("crop boxes");
  int fallbacks = 0, near_square_fallbacks = 0;
  for (uint32_t image = 0; image < 300; ++image) {
    int w = 20 + image % 97, h = 15 + (image * 7) % 131;
    int top, left, bh, bw;
    data::random_resized_box(w, h, 0.2, 0.9, seed, 0, image, 1, &top, &left, &bh, &bw);
    CAPTURE(w);
    CAPTURE(h);
    CAPTURE(bw);
    CAPTURE(bh);
    CHECK(top >= 0);
    CHECK(left >= 0);
    CHECK(top + bh <= h);
    CHECK(left + bw <= w);
    // After ten failed draws the box is the whole image clamped to the aspect range, centred.
    const double ratio = double(w) / h;
    const int fallback_w = ratio > 4.0 / 3.0 ? int(std::nearbyint(h * 4.0 / 3.0)) : w;
    const int fallback_h = ratio < 3.0 / 4.0 ? int(std::nearbyint(w * 4.0 / 3.0)) : h;
    if (bw == fallback_w && bh == fallback_h && top == (h - fallback_h) / 2 && left == (w - fallback_w) / 2) {
      ++fallbacks;
      // An image within 10 % of square fails a draw with probability under 0.15 (only a large,
      // elongated box overflows it), so ten failures in a row are a one-in-1e8 event: a fallback
      // there means the draws are wrong.
      near_square_fallbacks += ratio >= 1 / 1.1 && ratio <= 1.1;
      continue;
    }
    // Otherwise a drawn box: area in [0.2, 0.9] of the image and aspect in [3/4, 4/3] before each
    // side is rounded to whole pixels (as torchvision's), so its own area and aspect may be off by
    // up to half a pixel on each side, which on a small box is more than any fixed margin (6 x 9
    // from 6.49 x 8.5, say). These bounds are exact under that rounding.
    const double image_area = double(w) * h;
    CHECK((bw - 0.5) * (bh - 0.5) <= 0.9 * image_area);
    CHECK((bw + 0.5) * (bh + 0.5) >= 0.2 * image_area);
    CHECK((bw + 0.5) / (bh - 0.5) >= 3.0 / 4.0);
    CHECK((bw - 0.5) / (bh + 0.5) <= 4.0 / 3.0);
  }
  CHECK(near_square_fallbacks == 0);
  // The corpus holds elongated images that most draws overflow (114 x 18, say, where 97 % of the
  // ten-draw rounds fall back), so the fallback is exercised: over 2,000 seeds these 300 images
  // gave 26.3 fallbacks on average, standard deviation 3.5 (14 to 38); the bounds are 4.6 away.
  CHECK(fallbacks >= 10);
  CHECK(fallbacks <= 42);
  // A tall sliver cannot fit any 3/4..4/3 box at scale 1: the fallback centres a clamped box.
  int top, left, bh, bw;
  data::random_resized_box(10, 100, 1.0, 1.0, seed, 0, 0, 0, &top, &left, &bh, &bw);
  CHECK(bw == 10);
  CHECK(bh == 13);  // round(10 / 0.75) = 13
  CHECK(top == (100 - 13) / 2);
  // Same key, same crop; another crop index or epoch, another crop.
  auto params = [&](uint32_t epoch, uint32_t crop) {
    return data::sample_crop(data::AugmentRecipe{}, 200, 150, seed, epoch, 42, crop);
  };
  CHECK(params(0, 1).top == params(0, 1).top);
  CHECK(params(0, 1).left == params(0, 1).left);
  int same = 0;
  for (uint32_t c = 0; c < 20; ++c) same += params(0, c).width == params(1, c).width && params(0, c).top == params(1, c).top;
  CHECK(same < 3);
}

TEST_CASE("the view recipe: blur and solarisation probabilities per view") {
  data::AugmentRecipe r;
  r.global_crops = 2;
  r.local_crops = 2;
  int blur[4] = {0, 0, 0, 0}, solarize[4] = {0, 0, 0, 0}, jitter = 0, gray = 0, flip = 0;
  const int n = 4000;
  for (uint32_t image = 0; image < n; ++image)
    for (uint32_t crop = 0; crop < 4; ++crop) {
      auto p = data::sample_crop(r, 64, 48, 7, 0, image, crop);
      blur[crop] += p.blur_sigma > 0;
      solarize[crop] += p.solarize;
      if (crop == 2) {
        jitter += p.jitter;
        gray += p.grayscale;
        flip += p.flip;
        if (p.jitter) {
          CHECK((p.brightness >= 0.6f && p.brightness <= 1.4f));
          CHECK((p.hue >= -0.1f && p.hue <= 0.1f));
        }
        if (p.blur_sigma > 0) CHECK((p.blur_sigma >= 0.1f && p.blur_sigma <= 2.0f));
        CHECK(p.out_size == 96);
      }
    }
  CHECK(blur[0] == n);                             // first global view: always
  CHECK(std::abs(blur[1] / double(n) - 0.1) < 0.02);  // second global view: 10 %
  CHECK(std::abs(blur[2] / double(n) - 0.5) < 0.03);  // local views: 50 %
  CHECK(solarize[0] == 0);
  CHECK(std::abs(solarize[1] / double(n) - 0.2) < 0.02);
  CHECK(solarize[2] == 0);
  CHECK(std::abs(jitter / double(n) - 0.8) < 0.025);
  CHECK(std::abs(gray / double(n) - 0.2) < 0.02);
  CHECK(std::abs(flip / double(n) - 0.5) < 0.03);
}

// The linear probe's training crops (--linear_aug) are DINO eval_linear's RandomResizedCrop(224)
// and flip: torchvision's default bilinear filter, nothing else; the pretraining's are bicubic.
TEST_CASE("the linear probe's crops: bilinear, flipped, no colour, blur or solarisation") {
  data::AugmentRecipe r;
  for (uint32_t image = 0; image < 200; ++image) {
    CHECK_FALSE(data::sample_crop(r, 64, 48, 7, 0, image, 0).bilinear);
    r.crop_and_flip_only = true;
    const data::CropParams p = data::sample_crop(r, 64, 48, 7, 0, image, 0);
    r.crop_and_flip_only = false;
    CHECK(p.bilinear);
    CHECK_FALSE(p.jitter);
    CHECK_FALSE(p.grayscale);
    CHECK_FALSE(p.solarize);
    CHECK(p.blur_sigma == 0);
  }
}

TEST_CASE("antialiased bicubic resampling against hand-computed PIL values") {
  // [0, 0, 255, 255] -> 2 pixels: scale 2 stretches the a = -0.5 kernel to support 4; output 0
  // weighs inputs 0..3 by W(-0.25), W(0.25), W(0.75), W(1.25) = .8671875, .8671875, .2265625,
  // -.0703125 (sum 1.890625): 255 * (.2265625 - .0703125) / 1.890625.
  std::vector<float> src;
  for (float v : {0.f, 0.f, 255.f, 255.f}) src.insert(src.end(), {v, v, v});
  std::vector<float> dst(6);
  data::resize_bicubic_aa(src.data(), 1, 4, 0, 0, 1, 4, dst.data(), 1, 2);
  CHECK(dst[0] == doctest::Approx(255 * 0.15625 / 1.890625).epsilon(1e-6));
  CHECK(dst[3] == doctest::Approx(255 - 255 * 0.15625 / 1.890625).epsilon(1e-6));
  // The same size is the identity; a constant stays constant at any scale.
  std::vector<float> ramp;
  for (int i = 0; i < 5 * 7; ++i) ramp.insert(ramp.end(), {float(i), float(2 * i), float(3 * i % 255)});
  std::vector<float> same(ramp.size());
  data::resize_bicubic_aa(ramp.data(), 5, 7, 0, 0, 5, 7, same.data(), 5, 7);
  for (size_t i = 0; i < ramp.size(); ++i) CHECK(same[i] == doctest::Approx(ramp[i]).epsilon(1e-5));
  std::vector<float> flat(9 * 11 * 3, 77.0f), out(4 * 6 * 3);
  data::resize_bicubic_aa(flat.data(), 9, 11, 1.5, 2.0, 6.0, 7.0, out.data(), 4, 6);
  for (float v : out) CHECK(v == doctest::Approx(77.0f).epsilon(1e-5));
}

TEST_CASE("render_crop resizes its box as torchvision's resized_crop: the box cut out, then resized, bit for bit") {
  // PIL's filter on the cut-out box never reads past it; resizing the box in place must not
  // either (it did: an 8 px box of a 28 px image enlarged to 224 read outside it in 84 rows).
  std::mt19937 rng(test_seed("render_crop box"));
  data::DecodedImage img;
  img.width = 40;
  img.height = 31;
  for (int i = 0; i < img.width * img.height * 3; ++i) img.pixels.push_back(static_cast<uint8_t>(rng()));
  struct Box {
    int top, left, height, width, out;
  };
  for (Box b : {Box{10, 7, 8, 12, 24}, Box{3, 20, 25, 17, 9}, Box{0, 0, 31, 40, 16}, Box{30, 39, 1, 1, 5}}) {
    for (bool bilinear : {false, true}) {
      data::CropParams p;
      p.top = b.top, p.left = b.left, p.height = b.height, p.width = b.width, p.out_size = b.out;
      p.bilinear = bilinear;
      std::vector<float> in_place(static_cast<size_t>(3 * b.out * b.out)), cut_out(in_place.size());
      data::render_crop(img, p, plain_recipe(), in_place.data());
      data::DecodedImage box;
      box.width = b.width;
      box.height = b.height;
      for (int y = 0; y < b.height; ++y) {
        const auto row = img.pixels.begin() + (static_cast<size_t>(b.top + y) * img.width + b.left) * 3;
        box.pixels.insert(box.pixels.end(), row, row + 3 * b.width);
      }
      p.top = p.left = 0;
      data::render_crop(box, p, plain_recipe(), cut_out.data());
      INFO("box " << b.top << "," << b.left << " " << b.height << "x" << b.width << " -> " << b.out
                  << (bilinear ? " bilinear" : " bicubic"));
      CHECK(in_place == cut_out);
    }
  }
}

TEST_CASE("the whole image resized bilinearly (ContrastiveCrop's box update) against hand-computed PIL values") {
  // Columns [0, 60, 120, 240] -> 2 pixels: scale 2 stretches the triangle to support 2. Output 0
  // is centred at 1.0 and weighs inputs 0..2 by T(-0.25), T(0.25), T(0.75) = .75, .75, .25 (sum
  // 1.75); output 1, centred at 3.0, inputs 1..3 by .25, .75, .75. Every row is the same, so the
  // vertical pass keeps the values.
  data::DecodedImage img;
  img.width = img.height = 4;
  for (int y = 0; y < 4; ++y)
    for (uint8_t v : {0, 60, 120, 240}) img.pixels.insert(img.pixels.end(), {v, v, v});
  const data::CropParams p = data::whole_image_params(4, 4, 2);
  CHECK(p.bilinear);
  std::vector<float> out(3 * 2 * 2);
  data::render_crop(img, p, plain_recipe(), out.data());
  const float left = (60 * 0.75f + 120 * 0.25f) / 1.75f, right = (60 * 0.25f + 120 * 0.75f + 240 * 0.75f) / 1.75f;
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 2; ++y) {
      CHECK(out[c * 4 + y * 2] * 255 == doctest::Approx(left).epsilon(1e-5));
      CHECK(out[c * 4 + y * 2 + 1] * 255 == doctest::Approx(right).epsilon(1e-5));
    }
  // Bicubic would give other values: the filter is the one asked for.
  data::CropParams bicubic = p;
  bicubic.bilinear = false;
  data::render_crop(img, bicubic, plain_recipe(), out.data());
  CHECK(std::abs(out[0] * 255 - left) > 1);
}

TEST_CASE("colour operations on hand-checked pixels") {
  data::DecodedImage img = solid(2, 2, 100, 50, 200);
  img.pixels[0] = 250;  // one brighter red value
  data::CropParams p;
  p.jitter = true;
  p.jitter_order = {0, 1, 2, 3};
  // Brightness 1.5 alone: multiply and clamp.
  p.brightness = 1.5f;
  auto px = render(img, p);
  CHECK(px[0] == doctest::Approx(255.0f));   // 250 * 1.5 clamps
  CHECK(px[1] == doctest::Approx(75.0f));
  CHECK(px[5] == doctest::Approx(255.0f));   // 200 * 1.5 clamps
  // Contrast 0: every value becomes the crop's mean grey level.
  p = data::CropParams{};
  p.jitter = true;
  p.contrast = 0.0f;
  px = render(img, p);
  double mean_luma = (0.299 * (250 + 3 * 100) + 0.587 * 4 * 50 + 0.114 * 4 * 200) / 4;
  for (float v : px) CHECK(v == doctest::Approx(mean_luma).epsilon(1e-4));
  // Saturation 0: each pixel becomes its own grey level.
  p = data::CropParams{};
  p.jitter = true;
  p.saturation = 0.0f;
  px = render(img, p);
  CHECK(px[3] == doctest::Approx(0.299 * 100 + 0.587 * 50 + 0.114 * 200).epsilon(1e-4));
  CHECK(px[4] == px[3]);
  // Hue +1/3 turns pure red into pure green.
  data::DecodedImage red = solid(2, 2, 255, 0, 0);
  p = data::CropParams{};
  p.jitter = true;
  p.hue = 1.0f / 3.0f;
  px = render(red, p);
  CHECK(px[0] == doctest::Approx(0.0f).epsilon(1e-4));
  CHECK(px[1] == doctest::Approx(255.0f).epsilon(1e-4));
  // Grayscale, solarise (>= 128 inverted), flip.
  p = data::CropParams{};
  p.grayscale = true;
  px = render(img, p);
  CHECK(px[3] == doctest::Approx(0.299 * 100 + 0.587 * 50 + 0.114 * 200).epsilon(1e-4));
  p = data::CropParams{};
  p.solarize = true;
  px = render(img, p);
  CHECK(px[3] == doctest::Approx(100.0f));
  CHECK(px[5] == doctest::Approx(55.0f));
  data::DecodedImage two = solid(2, 2, 0, 0, 0);
  two.pixels[0] = 200;  // top-left red
  p = data::CropParams{};
  p.flip = true;
  px = render(two, p);
  CHECK(px[0] == doctest::Approx(0.0f));
  CHECK(px[3] == doctest::Approx(200.0f));
  // Blur keeps a constant image constant and spreads a single bright pixel symmetrically.
  data::DecodedImage dot = solid(9, 9, 0, 0, 0);
  dot.pixels[(4 * 9 + 4) * 3] = 255;
  p = data::CropParams{};
  p.blur_sigma = 1.0f;
  px = render(dot, p);
  CHECK(px[(4 * 9 + 4) * 3] < 255.0f);
  CHECK(px[(4 * 9 + 3) * 3] == doctest::Approx(px[(4 * 9 + 5) * 3]));
  CHECK(px[(3 * 9 + 4) * 3] == doctest::Approx(px[(5 * 9 + 4) * 3]));
  double total = 0;
  for (int i = 0; i < 81; ++i) total += px[3 * i];
  CHECK(total == doctest::Approx(255.0).epsilon(1e-3));
}

TEST_CASE("normalisation and the evaluation transform") {
  data::DecodedImage img = solid(40, 30, 255, 128, 0);
  data::AugmentRecipe r;
  std::vector<float> out(3 * 24 * 24);
  data::render_eval(img, 24, r, out.data());
  CHECK(out[0] == doctest::Approx((1.0 - 0.485) / 0.229).epsilon(1e-4));
  CHECK(out[24 * 24] == doctest::Approx((128 / 255.0 - 0.456) / 0.224).epsilon(1e-4));
  CHECK(out[2 * 24 * 24] == doctest::Approx((0 - 0.406) / 0.225).epsilon(1e-4));
  // With ratio 1 an image of exactly the crop size passes through untouched.
  data::DecodedImage gradient = solid(4, 4, 0, 0, 0);
  for (int i = 0; i < 16; ++i) gradient.pixels[3 * i] = static_cast<uint8_t>(i * 10);
  data::AugmentRecipe same = plain_recipe();
  same.eval_resize_ratio = 1.0;
  std::vector<float> exact(3 * 16);
  data::render_eval(gradient, 4, same, exact.data());
  for (int i = 0; i < 16; ++i) CHECK(exact[i] * 255.0f == doctest::Approx(i * 10.0f));
}

// render_eval resamples only the centre crop's rows and columns: it must equal the whole resize
// cut afterwards, bit for bit, at any aspect ratio (a long thin image's whole resize is huge).
TEST_CASE("the evaluation transform equals the whole resize cut to its centre, bit for bit") {
  std::mt19937_64 rng(test_seed("eval transform"));
  struct Case {
    int w, h, size;
    double ratio;
  };
  for (Case k : {Case{37, 29, 24, 256.0 / 224.0}, Case{29, 37, 24, 256.0 / 224.0}, Case{3, 200, 16, 1.25},
                 Case{200, 3, 16, 1.0}, Case{5, 5, 8, 1.0}, Case{24, 24, 24, 1.0}, Case{500, 375, 64, 256.0 / 224.0},
                 Case{1, 40, 12, 1.5}, Case{9, 4, 30, 1.0}}) {
    data::DecodedImage image = solid(k.w, k.h, 0, 0, 0);
    for (uint8_t& v : image.pixels) v = static_cast<uint8_t>(rng());
    data::AugmentRecipe r;
    r.eval_resize_ratio = k.ratio;
    std::vector<float> got(3 * k.size * k.size);
    data::render_eval(image, k.size, r, got.data());

    const data::EvalGeometry g = data::eval_geometry(k.w, k.h, k.size, k.ratio);
    std::vector<float> source(image.pixels.begin(), image.pixels.end());
    std::vector<float> resized = source;
    if (g.resized_w != k.w || g.resized_h != k.h) {
      resized.assign(static_cast<size_t>(g.resized_w) * g.resized_h * 3, 0.0f);
      data::resize_bicubic_aa(source.data(), k.h, k.w, 0, 0, k.h, k.w, resized.data(), g.resized_h, g.resized_w);
    }
    size_t differ = 0;
    for (int c = 0; c < 3; ++c) {
      const float scale = 1.0f / (255.0f * r.std[c]), shift = r.mean[c] / r.std[c];
      for (int y = 0; y < k.size; ++y)
        for (int x = 0; x < k.size; ++x) {
          const int sy = std::clamp(g.top + y, 0, g.resized_h - 1), sx = std::clamp(g.left + x, 0, g.resized_w - 1);
          const float want = resized[(static_cast<size_t>(sy) * g.resized_w + sx) * 3 + c] * scale - shift;
          differ += got[(static_cast<size_t>(c) * k.size + y) * k.size + x] != want;
        }
    }
    INFO(k.w << "x" << k.h << " to " << k.size << " at ratio " << k.ratio);
    CHECK(differ == 0);
  }
}

// render_crop's blur computes eight outputs at a time over a copy of each line with its edges
// repeated (data/augment.cpp); each output must keep the products and the order of the plain
// separable convolution with clamped coordinates, which the GPU kernels follow: the same bits.
// Sizes below, at and above the eight-wide blocks, sigmas whose radius reaches past the image.
TEST_CASE("the Gaussian blur equals the plain separable convolution with repeated edges, bit for bit") {
  std::mt19937_64 rng(test_seed("blur bits"));
  for (int size : {3, 8, 13, 21, 28}) {
    for (float sigma : {0.1f, 0.7f, 1.3f, 2.0f}) {
      data::DecodedImage image = solid(size, size, 0, 0, 0);
      for (uint8_t& v : image.pixels) v = static_cast<uint8_t>(rng());
      data::CropParams p;
      p.blur_sigma = sigma;
      // A full-image box at the image's size: the resize leaves every value as it is (one tap of
      // weight 1), so the blur alone shapes the output.
      const std::vector<float> got = render(image, p);

      const data::augment_math::GaussianKernel g = data::augment_math::gaussian_kernel(sigma);
      const int r = g.radius;
      auto at = [size](int v) { return std::clamp(v, 0, size - 1); };
      std::vector<float> px(image.pixels.begin(), image.pixels.end()), tmp(px.size()), want(px.size());
      for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x)
          for (int c = 0; c < 3; ++c) {
            float acc = 0;
            for (int k = -r; k <= r; ++k) acc += g.weight(k) * px[(y * size + at(x + k)) * 3 + c];
            tmp[(y * size + x) * 3 + c] = acc;
          }
      for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x)
          for (int c = 0; c < 3; ++c) {
            float acc = 0;
            for (int k = -r; k <= r; ++k) acc += g.weight(k) * tmp[(at(y + k) * size + x) * 3 + c];
            // render() reads the normalised output back as x / 255 * 255.
            want[(y * size + x) * 3 + c] = acc * (1.0f / 255.0f) * 255.0f;
          }
      size_t differ = 0;
      for (size_t i = 0; i < got.size(); ++i) differ += got[i] != want[i];
      INFO(size << " px, sigma " << sigma);
      CHECK(differ == 0);
    }
  }
}

// The resize's vertical pass also sums eight values at a time (data/augment.cpp): against both
// passes written as plain loops over PIL's windows (augment_math::resample_window), bit for bit,
// for shrinking, enlarging and odd boxes, at widths around the eight-wide blocks.
TEST_CASE("the antialiased resize equals its plain two-pass loops, bit for bit") {
  std::mt19937_64 rng(test_seed("resize bits"));
  struct Case {
    int src_w, src_h;
    double top, left, box_h, box_w;
    int out_h, out_w;
  };
  for (Case k : {Case{40, 30, 3, 5, 20.5, 31.25, 9, 11}, Case{12, 17, 0, 0, 17, 12, 28, 28},
                 Case{500, 375, 20, 40, 300, 410, 24, 24}, Case{7, 5, 1, 1, 3, 4, 3, 8}}) {
    std::vector<float> src(static_cast<size_t>(k.src_w) * k.src_h * 3);
    for (float& v : src) v = static_cast<float>(rng() % 256);
    std::vector<float> got(static_cast<size_t>(k.out_w) * k.out_h * 3);
    data::resize_bicubic_aa(src.data(), k.src_h, k.src_w, k.top, k.left, k.box_h, k.box_w, got.data(), k.out_h,
                            k.out_w);
    using data::augment_math::resample_window;
    // Horizontal pass over every source row, then the vertical one, each clamped to [0, 255].
    std::vector<float> mid(static_cast<size_t>(k.src_h) * k.out_w * 3), want(got.size());
    for (int y = 0; y < k.src_h; ++y)
      for (int x = 0; x < k.out_w; ++x) {
        const auto w = resample_window(k.left, k.box_w / k.out_w, x, 0, k.src_w);
        for (int c = 0; c < 3; ++c) {
          float acc = 0;
          for (int t = w.lo; t < w.hi; ++t) acc += w.weight(t) * src[(static_cast<size_t>(y) * k.src_w + t) * 3 + c];
          mid[(static_cast<size_t>(y) * k.out_w + x) * 3 + c] = std::clamp(acc, 0.0f, 255.0f);
        }
      }
    for (int y = 0; y < k.out_h; ++y) {
      const auto w = resample_window(k.top, k.box_h / k.out_h, y, 0, k.src_h);
      for (int i = 0; i < k.out_w * 3; ++i) {
        float acc = 0;
        for (int t = w.lo; t < w.hi; ++t) acc += w.weight(t) * mid[static_cast<size_t>(t) * k.out_w * 3 + i];
        want[static_cast<size_t>(y) * k.out_w * 3 + i] = std::clamp(acc, 0.0f, 255.0f);
      }
    }
    size_t differ = 0;
    for (size_t i = 0; i < got.size(); ++i) differ += got[i] != want[i];
    INFO(k.src_w << "x" << k.src_h << " box to " << k.out_w << "x" << k.out_h);
    CHECK(differ == 0);
  }
}

namespace {

// Pixels that take every branch of the colour steps: greys (no hue), ties between the largest
// channels (where two of the hue formulas meet), black (no saturation), each primary, values on
// both sides of the solarisation threshold, then random ones; n is not a multiple of 16, so the
// scalar tail runs too.
std::vector<float> branch_pixels(std::mt19937& rng, int n) {
  const float special[][3] = {{0, 0, 0},         {255, 255, 255},    {128, 128, 128},       {255, 0, 0},
                              {0, 255, 0},       {0, 0, 255},        {255, 255, 0},         {0, 255, 255},
                              {255, 0, 255},     {10, 10, 200},      {127.5f, 128, 128.5f}, {1e-3f, 0, 0},
                              {127.99f, 128, 0}, {200, 13.25f, 200}, {3, 90, 90},           {64, 32, 16}};
  std::uniform_real_distribution<float> value(0.0f, 255.0f);
  std::vector<float> px(static_cast<size_t>(3 * n));
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < 3; ++c)
      px[static_cast<size_t>(3 * i + c)] = i < 16 ? special[i][c] : (i % 7 == 0 ? std::round(value(rng)) : value(rng));
  return px;
}

}  // namespace

TEST_CASE("the AVX-512 per-pixel steps give the scalar steps' bits") {
  if (!cpu::cpu_has_avx512()) {
    MESSAGE("no AVX-512 here: the per-pixel loops run pixel by pixel only");
    return;
  }
  std::mt19937 rng(test_seed("augment pixels"));
  const int n = 16 * 6 + 7;
  // Hue rotations include a tiny negative one, which takes a grey pixel's h = 0 to 1 after the
  // floor: the sector wraps from 6 to 0.
  const float hues[] = {-0.5f, -0.1f, -1e-8f, 0.0f, 0.1f, 1.0f / 3.0f, 0.5f};
  const float factors[] = {0.0f, 0.6f, 1.0f, 1.4f, 2.5f};
  for (int op = 0; op < 4; ++op) {
    for (float factor : factors) {
      for (float hue : hues) {
        if (op != 3 && hue != hues[0]) continue;  // the hue only matters to the hue step
        const std::vector<float> px = branch_pixels(rng, n);
        const float mean = 97.3f;
        std::vector<float> want = px, got = px;
        for (int i = 0; i < n; ++i)
          data::augment_math::jitter_pixel(&want[static_cast<size_t>(3 * i)], op, factor, factor, factor, hue, mean);
        const int done = data::augment_detail::jitter_avx512(got.data(), n, op, factor, factor, factor, hue, mean);
        CHECK(done == n - n % 16);
        for (int i = done; i < n; ++i)
          data::augment_math::jitter_pixel(&got[static_cast<size_t>(3 * i)], op, factor, factor, factor, hue, mean);
        CHECK_MESSAGE(differing_bits(got, want) == 0, "jitter step ", op, " factor ", factor, " hue ", hue);
        if (op < 3 ? factor != 1.0f : std::abs(hue) >= 0.1f)
          CHECK_MESSAGE(differing_bits(got, px) != 0, "jitter step ", op, " changed nothing");
      }
    }
  }
  // Grayscale and solarisation.
  const std::vector<float> px = branch_pixels(rng, n);
  std::vector<float> want = px, got = px;
  for (int i = 0; i < n; ++i) {
    const float g = data::augment_math::luma(&want[static_cast<size_t>(3 * i)]);
    for (int c = 0; c < 3; ++c) want[static_cast<size_t>(3 * i + c)] = g;
  }
  int done = data::augment_detail::grayscale_avx512(got.data(), n);
  for (int i = done; i < n; ++i) {
    const float g = data::augment_math::luma(&got[static_cast<size_t>(3 * i)]);
    for (int c = 0; c < 3; ++c) got[static_cast<size_t>(3 * i + c)] = g;
  }
  CHECK(differing_bits(got, want) == 0);
  want = px;
  got = px;
  for (float& v : want)
    if (v >= 128.0f) v = 255.0f - v;
  done = data::augment_detail::solarize_avx512(got.data(), n);
  for (size_t i = 3 * static_cast<size_t>(done); i < got.size(); ++i)
    if (got[i] >= 128.0f) got[i] = 255.0f - got[i];
  CHECK(differing_bits(got, want) == 0);
}

TEST_CASE("render_crop gives the same bits with and without the AVX-512 per-pixel steps") {
  if (!cpu::cpu_has_avx512()) {
    MESSAGE("no AVX-512 here: render_crop runs its per-pixel steps pixel by pixel only");
    return;
  }
  // A 64 x 48 image with grey and saturated patches among random pixels; every view of the
  // 8-crop recipe (jitter in random orders, grayscale, blur, solarisation) at 28 px and 20 px.
  std::mt19937 rng(test_seed("render_crop avx512"));
  data::DecodedImage img;
  img.width = 64;
  img.height = 48;
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) {
      const uint8_t r = static_cast<uint8_t>(rng()), g = static_cast<uint8_t>(rng()), b = static_cast<uint8_t>(rng());
      if (x < 16)
        img.pixels.insert(img.pixels.end(), {r, r, r});  // grey
      else if (y < 12)
        img.pixels.insert(img.pixels.end(), {255, g, 0});  // red at its top, blue at 0
      else
        img.pixels.insert(img.pixels.end(), {r, g, b});
    }
  data::AugmentRecipe recipe;
  recipe.global_size = 28;
  recipe.local_size = 20;
  recipe.local_crops = 6;
  struct Restore {
    ~Restore() { data::render_crop_use_avx512(true); }
  } restore;
  int64_t crops = 0, jittered = 0;
  for (uint32_t image = 0; image < 40; ++image) {
    for (int view = 0; view < recipe.views(); ++view) {
      const data::CropParams p = data::sample_crop(recipe, img.width, img.height, 5, 0, image, view);
      const size_t size = static_cast<size_t>(3 * p.out_size * p.out_size);
      std::vector<float> want(size), got(size);
      data::render_crop_use_avx512(false);
      data::render_crop(img, p, recipe, want.data());
      data::render_crop_use_avx512(true);
      data::render_crop(img, p, recipe, got.data());
      CHECK_MESSAGE(differing_bits(got, want) == 0, "image ", image, " view ", view);
      ++crops;
      jittered += p.jitter;
    }
  }
  CHECK(jittered > crops / 2);  // the recipe jitters with p = 0.8
}

}  // namespace bam::test
