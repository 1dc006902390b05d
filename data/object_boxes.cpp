// ContrastiveCrop's boxes: reading one off an attention map, and the Beta draws that place crops.
#include "data/object_boxes.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/error.h"
#include "engine/philox.h"

namespace bam::data {

static_assert(sizeof(ObjectBox) == 4 * sizeof(float), "boxes_to_tensor copies ObjectBox as four floats");

Tensor boxes_to_tensor(const std::vector<ObjectBox>& boxes) {
  Tensor table = empty({static_cast<int64_t>(boxes.size()), 4}, {DType::f32, Device::cpu()});
  if (!boxes.empty()) std::memcpy(table.data<float>(), boxes.data(), boxes.size() * sizeof(ObjectBox));
  return table;
}

std::vector<ObjectBox> boxes_from_tensor(const Tensor& table) {
  BAM_CHECK(table.dim() == 2 && table.size(1) == 4 && table.dtype() == DType::f32,
            "object boxes: expected an [N, 4] f32 table, got {}", table.describe());
  const Tensor t = table.to(Device::cpu()).contiguous();
  const float* b = t.data<float>();
  std::vector<ObjectBox> boxes(static_cast<size_t>(t.size(0)));
  for (size_t i = 0; i < boxes.size(); ++i) boxes[i] = {b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]};
  return boxes;
}

std::optional<CropPlacement> ObjectBoxes::placement(int64_t epoch, int64_t index) const {
  if (epoch < first_epoch) return std::nullopt;
  BAM_CHECK(index >= 0 && index < static_cast<int64_t>(boxes.size()),
            "ContrastiveCrop: image {} has no box ({} boxes for the dataset)", index, boxes.size());
  return CropPlacement{boxes[static_cast<size_t>(index)], alpha};
}

namespace {

// The source coordinate output sample `dst` of a linear resize reads (PyTorch's
// area_pixel_compute_source_index with align_corners = false): below 0 clamps to 0.
struct LinearTap {
  int i0, i1;
  float lambda;
};
LinearTap linear_tap(int dst, int in_size, int out_size) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  float src = scale * (static_cast<float>(dst) + 0.5f) - 0.5f;
  if (src < 0) src = 0;
  const int i0 = std::min(static_cast<int>(src), in_size - 1);
  return {i0, std::min(i0 + 1, in_size - 1), src - static_cast<float>(i0)};
}

}  // namespace

ObjectBox box_from_attention(const float* map, int gh, int gw, int image_size, double threshold) {
  BAM_CHECK(gh > 0 && gw > 0 && image_size > 0, "box_from_attention: a {}x{} map to {} pixels", gh, gw, image_size);
  const int n = gh * gw, S = image_size;
  // Scaled to [0, 1] as the official update_box does.
  float lo = map[0];
  for (int i = 1; i < n; ++i) lo = std::min(lo, map[i]);
  std::vector<float> scaled(static_cast<size_t>(n));
  float hi = 0;
  for (int i = 0; i < n; ++i) hi = std::max(hi, scaled[i] = map[i] - lo);
  for (float& v : scaled) v /= hi + 1e-5f;
  // The bilinear resize, separably: every map row resized along x first ([gh, S]); an output value
  // is then the blend of two of those rows. Only each output row's and column's largest value
  // matters, and that needs few values: along a run of outputs that read the same two map samples,
  // the value is linear in the blend weight, so its largest is at the run's first or last output.
  std::vector<LinearTap> xs(static_cast<size_t>(S)), ys(static_cast<size_t>(S));
  for (int o = 0; o < S; ++o) xs[o] = linear_tap(o, gw, S), ys[o] = linear_tap(o, gh, S);
  auto run_ends = [S](const std::vector<LinearTap>& taps) {
    std::vector<int> ends;
    for (int o = 0; o < S; ++o)
      if (o == 0 || o == S - 1 || taps[o].i0 != taps[o - 1].i0 || taps[o].i0 != taps[o + 1].i0) ends.push_back(o);
    return ends;
  };
  const std::vector<int> x_ends = run_ends(xs), y_ends = run_ends(ys);
  std::vector<float> along_x(static_cast<size_t>(gh) * S);
  for (int r = 0; r < gh; ++r)
    for (int x = 0; x < S; ++x) {
      const LinearTap& t = xs[x];
      along_x[r * S + x] = (1 - t.lambda) * scaled[r * gw + t.i0] + t.lambda * scaled[r * gw + t.i1];
    }
  auto value = [&](int y, int x) {  // the resized map at (y, x)
    const LinearTap& t = ys[y];
    return (1 - t.lambda) * along_x[t.i0 * S + x] + t.lambda * along_x[t.i1 * S + x];
  };
  const auto t = static_cast<float>(threshold);
  auto first_and_last = [&](bool rows, int* first, int* last) {  // rows (else columns) with a value above t
    *first = *last = -1;
    for (int o = 0; o < S; ++o) {
      float best = -1.0f;
      for (int across : rows ? x_ends : y_ends) best = std::max(best, rows ? value(o, across) : value(across, o));
      if (best > t) {
        if (*first < 0) *first = o;
        *last = o;
      }
    }
  };
  int first_row, last_row, first_col, last_col;
  first_and_last(true, &first_row, &last_row);
  first_and_last(false, &first_col, &last_col);
  if (first_row < 0 || first_col < 0) return ObjectBox{};  // a flat map: nothing stands out
  const float s = static_cast<float>(S);
  return {first_row / s, first_col / s, last_row / s, last_col / s};
}

namespace {

// Gamma(shape, 1) from the stream, taking words from *k on: standard normals and uniforms in
// (0, 1] from the engine's Philox helpers (engine/philox.h).
double gamma_sample(double shape, const std::function<uint32_t(uint32_t)>& bits, uint32_t* k) {
  double boost = 1;
  if (shape < 1) {  // Gamma(a) = Gamma(a + 1) * U^(1/a)
    boost = std::pow(static_cast<double>(uniform_open_zero(bits((*k)++))), 1.0 / shape);
    shape += 1;
  }
  const double d = shape - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  // Each try accepts with probability above 0.95 for shape >= 1: 64 tries never all fail in practice.
  for (int attempt = 0; attempt < 64; ++attempt) {
    float z, unused;
    normal_pair(bits(*k), bits(*k + 1), &z, &unused);
    const double x = z, u = uniform_open_zero(bits(*k + 2));
    *k += 3;
    double v = 1.0 + c * x;
    if (v <= 0) continue;
    v = v * v * v;
    if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v * boost;
  }
  return d * boost;  // the mode's neighbourhood; unreachable with any real probability
}

}  // namespace

double beta_symmetric(double alpha, const std::function<uint32_t(uint32_t)>& bits) {
  BAM_CHECK(alpha >= 0.05, "ContrastiveCrop: Beta({0}, {0}) needs alpha >= 0.05 (below, U^(1/alpha) underflows)",
            alpha);
  uint32_t k = 0;
  const double x = gamma_sample(alpha, bits, &k);
  const double y = gamma_sample(alpha, bits, &k);
  return x / (x + y);
}

}  // namespace bam::data
