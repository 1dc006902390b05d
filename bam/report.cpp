// The HTML training report: SVG line charts drawn by hand, PNGs encoded with stb_image_write and
// inlined as base64, attention maps from the checkpoint's backbone.
#include "bam/report.h"

#include <stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "bam/checkpoint.h"
#include "bam/folder_data.h"
#include "data/augment.h"
#include "data/dataset.h"
#include "data/object_boxes.h"
#include "engine/atomic_file.h"
#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace bam {
namespace fs = std::filesystem;
namespace {

struct Series {
  std::string name;
  std::vector<double> x, y;
};

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else if (c == '"') out += "&quot;";
    else out += c;
  }
  return out;
}

std::string number(double v) {
  if (v == 0) return "0";
  double a = std::fabs(v);
  if (a >= 1e4 || a < 1e-3) return fmt::format("{:.2e}", v);
  return fmt::format("{:.4g}", v);
}

// A line chart of one or more series against a shared x axis.
std::string svg_chart(const std::string& title, const std::string& x_label, const std::vector<Series>& series) {
  const double W = 440, H = 240, left = 62, right = 12, top = 28, bottom = 40;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
    }
  std::ostringstream svg;
  svg << fmt::format("<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' class='chart'>", W, H);
  svg << fmt::format("<text x='{}' y='18' class='title'>{}</text>", W / 2, escape(title));
  if (!std::isfinite(x0)) {
    svg << fmt::format("<text x='{}' y='{}' class='empty'>no data yet</text></svg>", W / 2, H / 2);
    return svg.str();
  }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + (y0 == 0 ? 1 : std::fabs(y0) * 0.1);
  const double pad = 0.05 * (y1 - y0);
  y0 -= pad, y1 += pad;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * (W - left - right); };
  auto py = [&](double y) { return top + (1 - (y - y0) / (y1 - y0)) * (H - top - bottom); };
  svg << fmt::format("<rect x='{}' y='{}' width='{}' height='{}' class='frame'/>", left, top, W - left - right,
                     H - top - bottom);
  for (int t = 0; t <= 4; ++t) {
    double yv = y0 + (y1 - y0) * t / 4, xv = x0 + (x1 - x0) * t / 4;
    svg << fmt::format("<line x1='{}' x2='{}' y1='{}' y2='{}' class='grid'/>", left, W - right, py(yv), py(yv));
    svg << fmt::format("<text x='{}' y='{}' class='ytick'>{}</text>", left - 4, py(yv) + 4, number(yv));
    svg << fmt::format("<text x='{}' y='{}' class='xtick'>{}</text>", px(xv), H - bottom + 14, number(xv));
  }
  svg << fmt::format("<text x='{}' y='{}' class='xlabel'>{}</text>", (left + W - right) / 2, H - 6, escape(x_label));
  const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd"};
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    std::ostringstream points;
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.y[i])) points << fmt::format("{:.1f},{:.1f} ", px(s.x[i]), py(s.y[i]));
    const char* colour = colours[k % 4];
    if (s.x.size() == 1) {
      svg << fmt::format("<circle cx='{:.1f}' cy='{:.1f}' r='3' fill='{}'/>", px(s.x[0]), py(s.y[0]), colour);
    } else {
      svg << fmt::format("<polyline points='{}' fill='none' stroke='{}' stroke-width='1.5'/>", points.str(), colour);
    }
    if (series.size() > 1)
      svg << fmt::format("<text x='{}' y='{}' fill='{}' class='legend'>{}</text>", left + 8, top + 14 + 14 * k, colour,
                         escape(s.name));
  }
  svg << "</svg>";
  return svg.str();
}

std::string base64(const std::vector<unsigned char>& bytes) {
  static const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    for (int k = 3; k >= 0; --k) out += table[(v >> (6 * k)) & 63];
  }
  if (i < bytes.size()) {
    uint32_t v = bytes[i] << 16;
    if (i + 1 < bytes.size()) v |= bytes[i + 1] << 8;
    out += table[(v >> 18) & 63];
    out += table[(v >> 12) & 63];
    out += i + 1 < bytes.size() ? table[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// An RGB8 canvas that becomes an inline <img>.
struct Canvas {
  int width, height;
  std::vector<uint8_t> rgb;
  Canvas(int w, int h) : width(w), height(h), rgb(static_cast<size_t>(w) * h * 3, 255) {}
  void put(int x, int y, float r, float g, float b) {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    uint8_t* p = &rgb[(static_cast<size_t>(y) * width + x) * 3];
    p[0] = static_cast<uint8_t>(std::clamp(r, 0.0f, 255.0f));
    p[1] = static_cast<uint8_t>(std::clamp(g, 0.0f, 255.0f));
    p[2] = static_cast<uint8_t>(std::clamp(b, 0.0f, 255.0f));
  }
  std::string img_tag(const std::string& alt) const {
    std::vector<unsigned char> png;
    stbi_write_png_to_func(
        [](void* ctx, void* data, int size) {
          auto* out = static_cast<std::vector<unsigned char>*>(ctx);
          out->insert(out->end(), static_cast<unsigned char*>(data), static_cast<unsigned char*>(data) + size);
        },
        &png, width, height, 3, rgb.data(), width * 3);
    return fmt::format("<img alt='{}' src='data:image/png;base64,{}' width='{}' height='{}'>", escape(alt),
                       base64(png), width, height);
  }
};

// Draws a normalised CHW crop (undoing the normalisation) at (x0, y0), scaled up `zoom` times.
void draw_crop(Canvas& c, const float* chw, int size, const data::AugmentRecipe& r, int x0, int y0, int zoom) {
  for (int y = 0; y < size * zoom; ++y)
    for (int x = 0; x < size * zoom; ++x) {
      float v[3];
      for (int ch = 0; ch < 3; ++ch)
        v[ch] = (chw[(ch * size + y / zoom) * size + x / zoom] * r.std[ch] + r.mean[ch]) * 255.0f;
      c.put(x0 + x, y0 + y, v[0], v[1], v[2]);
    }
}

// A perceptual-ish colour map (dark blue -> yellow) for attention weights in [0, 1].
void heat(float t, float* r, float* g, float* b) {
  t = std::clamp(t, 0.0f, 1.0f);
  *r = 255.0f * std::clamp(1.5f * t - 0.2f, 0.0f, 1.0f);
  *g = 255.0f * std::clamp(1.2f * t, 0.0f, 1.0f) * 0.9f;
  *b = 255.0f * std::clamp(0.6f - 0.8f * t, 0.0f, 1.0f) + 40.0f * (1 - t);
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    try {
      nlohmann::json row = nlohmann::json::parse(line);
      if (row.is_object()) rows.push_back(std::move(row));  // (a line of another shape has nothing to draw)
    } catch (const std::exception&) {
      // A line cut short by a crash is skipped, not fatal.
    }
  }
  return rows;
}

Series column(const std::vector<nlohmann::json>& rows, const char* x_key, const char* y_key, const std::string& name) {
  Series s;
  s.name = name;
  // Rows whose values are not numbers, or not finite ones (edited by hand, a diverged run's inf;
  // beyond 1e300 the chart's range would overflow), are left out, as lines a crash cut short are:
  // the rest still makes the chart.
  const auto finite = [](const nlohmann::json& v) { return v.is_number() && std::fabs(v.get<double>()) < 1e300; };
  for (const auto& r : rows)
    if (r.is_object() && r.contains(x_key) && r.contains(y_key) && finite(r[x_key]) && finite(r[y_key])) {
      s.x.push_back(r[x_key].get<double>());
      s.y.push_back(r[y_key].get<double>());
    }
  return s;
}

// The images the visual sections use: the kNN validation folder when there is one, else the
// training data.
data::Dataset preview_dataset(const TrainConfig& c) {
  if (!c.knn_val_path.empty() && fs::is_directory(c.knn_val_path)) return data::open_dataset(c.knn_val_path);
  const fs::path train = folder_path(c.data_path), val = train.parent_path() / "val";
  if (train.filename() == "train" && fs::is_directory(val)) return data::open_dataset(val.string());
  return data::open_dataset(c.data_path);
}

std::string augmentation_section(const TrainConfig& c, const data::Dataset& d) {
  data::AugmentRecipe r = recipe_from_config(c);
  const int rows = static_cast<int>(std::min<int64_t>(4, d.size())), views = static_cast<int>(r.views());
  const int cell = static_cast<int>(r.local_crops > 0 ? std::max(r.global_size, r.local_size) : r.global_size);
  const int zoom = std::max(1, 96 / cell), pad = 6;
  Canvas canvas(views * (cell * zoom + pad) + pad, rows * (cell * zoom + pad) + pad);
  auto order = data::epoch_order(d.size(), static_cast<uint64_t>(c.seed), 0);
  for (int row = 0; row < rows; ++row) {
    data::DecodedImage image = data::decode_image_file(d.files[order[row]]);
    for (int v = 0; v < views; ++v) {
      auto p = data::sample_crop(r, image.width, image.height, static_cast<uint64_t>(c.seed), 0,
                                 static_cast<uint32_t>(order[row]), static_cast<uint32_t>(v));
      std::vector<float> crop(3 * p.out_size * p.out_size);
      data::render_crop(image, p, r, crop.data());
      draw_crop(canvas, crop.data(), p.out_size, r, pad + v * (cell * zoom + pad), pad + row * (cell * zoom + pad), zoom);
    }
  }
  return canvas.img_tag("augmented views");
}

std::string attention_section(const LoadedCheckpoint& ck, const data::Dataset& d) {
  const TrainConfig& c = ck.config;
  NamedTensors weights = backbone_from_checkpoint(ck, false);  // its shapes checked before the model is built
  VisionTransformer vit(c.vit(), nullptr);
  vit.load_state(weights);
  vit.train(false);
  data::AugmentRecipe r = recipe_from_config(c);
  r.eval_resize_ratio = c.eval_resize_ratio;
  const int S = static_cast<int>(c.global_crops_size), n = static_cast<int>(std::min<int64_t>(4, d.size()));
  std::vector<float> pixels(static_cast<size_t>(n) * 3 * S * S);
  auto order = data::epoch_order(d.size(), static_cast<uint64_t>(c.seed) + 1, 0);
  for (int i = 0; i < n; ++i)
    data::render_eval(data::decode_image_file(d.files[order[i]]), S, r, pixels.data() + static_cast<size_t>(i) * 3 * S * S);
  NoGradGuard no_grad;
  Tensor images = from_vector(pixels, {n, 3, S, S});
  Tensor probs = vit.last_attention(images);  // [n, H, N, N]
  const int H = static_cast<int>(probs.size(1)), P = static_cast<int>(c.patch_size), g = S / P;
  std::vector<float> p = probs.contiguous().to_vector<float>();
  const int N = static_cast<int>(probs.size(2));
  const int zoom = std::max(1, 96 / S), cell = S * zoom, pad = 6;
  Canvas canvas((H + 2) * (cell + pad) + pad, n * (cell + pad) + pad);
  for (int i = 0; i < n; ++i) {
    int y0 = pad + i * (cell + pad);
    draw_crop(canvas, pixels.data() + static_cast<size_t>(i) * 3 * S * S, S, r, pad, y0, zoom);
    std::vector<float> average(g * g, 0.0f);
    for (int h = 0; h <= H; ++h) {
      std::vector<float> map(g * g);
      if (h < H) {
        const float* row = &p[((static_cast<size_t>(i) * H + h) * N) * N];  // the CLS token's row
        for (int k = 0; k < g * g; ++k) average[k] += (map[k] = row[1 + k]) / H;
      } else {
        map = average;
      }
      float top = *std::max_element(map.begin(), map.end());
      int x0 = pad + (h + 1) * (cell + pad);
      for (int y = 0; y < cell; ++y)
        for (int x = 0; x < cell; ++x) {
          int gy = std::min(g - 1, y * g / cell), gx = std::min(g - 1, x * g / cell);
          float rr, gg, bb;
          heat(top > 0 ? map[gy * g + gx] / top : 0, &rr, &gg, &bb);
          canvas.put(x0 + x, y0 + y, rr, gg, bb);
        }
    }
    if (c.use_ccrop) {
      // The object box this map gives (box_from_attention at --box_thresh), outlined in green on
      // the crop. Training locates the boxes the same way, with the teacher, on whole images.
      const data::ObjectBox box = data::box_from_attention(average.data(), g, g, S, c.box_thresh);
      auto pixel = [S](float fraction) { return std::clamp(static_cast<int>(std::lround(fraction * S)), 0, S - 1); };
      const int left = pad + pixel(box.left) * zoom, right = pad + (pixel(box.right) + 1) * zoom - 1;
      const int top = y0 + pixel(box.top) * zoom, bottom = y0 + (pixel(box.bottom) + 1) * zoom - 1;
      for (int x = left; x <= right; ++x) canvas.put(x, top, 30, 230, 50), canvas.put(x, bottom, 30, 230, 50);
      for (int y = top; y <= bottom; ++y) canvas.put(left, y, 30, 230, 50), canvas.put(right, y, 30, 230, 50);
    }
  }
  return canvas.img_tag("attention maps") +
         fmt::format(
             "<p class='note'>Left: the evaluation crop. Then the last block's attention from the CLS token "
             "to each of the {}x{} patches, one map per head ({} heads), and their average (right).{}</p>",
             g, g, H,
             c.use_ccrop ? fmt::format(" Green: the object box ContrastiveCrop reads off the average with "
                                       "--box_thresh {} (training reads it off the teacher's map of the whole "
                                       "image, and draws the crops' centres within it).",
                                       c.box_thresh)
                         : "");
}

}  // namespace

std::string write_training_report(const std::string& output_dir) {
  const std::string checkpoint = output_dir + "/checkpoint.safetensors";
  auto steps = read_jsonl(output_dir + "/steps.jsonl");
  auto epochs = read_jsonl(output_dir + "/log.txt");
  // An evaluation before training that a resumed run made (--eval_first) measured the weights of
  // its step, inside the epoch after the row's; at the row's epoch it would bend the kNN curve back.
  // Only a new run's, at step 0, is drawn.
  std::erase_if(epochs, [](const nlohmann::json& row) {
    const auto before = row.find("before_training"), step = row.find("global_step");
    return before != row.end() && before->is_boolean() && before->get<bool>() && step != row.end() &&
           step->is_number() && step->get<double>() > 0;
  });
  BAM_CHECK(!steps.empty() || !epochs.empty() || fs::exists(checkpoint),
            "{}: no training logs (steps.jsonl, log.txt) or checkpoint to report on", output_dir);
  std::ostringstream html;
  html << "<!DOCTYPE html><html><head><meta charset='utf-8'><title>bam training report</title><style>"
          "body{font-family:sans-serif;margin:24px;color:#222;max-width:1400px}"
          "h1{font-size:22px}h2{font-size:17px;margin-top:28px}"
          ".charts{display:flex;flex-wrap:wrap;gap:8px}.chart{background:#fff;border:1px solid #ddd}"
          ".title{font-size:13px;text-anchor:middle;font-weight:bold}.ytick{font-size:10px;text-anchor:end}"
          ".xtick{font-size:10px;text-anchor:middle}.xlabel{font-size:11px;text-anchor:middle}"
          ".legend{font-size:11px}.empty{font-size:12px;text-anchor:middle;fill:#999}"
          ".frame{fill:none;stroke:#999}.grid{stroke:#eee}"
          "table{border-collapse:collapse;font-size:12px}td{border:1px solid #ddd;padding:2px 6px}"
          ".note{font-size:12px;color:#555}img{image-rendering:pixelated;border:1px solid #ddd}"
          "</style></head><body>";
  html << "<h1>bam training report</h1><p class='note'>" << escape(output_dir) << "</p>";

  html << "<h2>Curves</h2><div class='charts'>";
  html << svg_chart("loss", "step", {column(steps, "step", "loss", "loss")});
  html << svg_chart("learning rate", "step", {column(steps, "step", "lr", "lr")});
  html << svg_chart("weight decay", "step", {column(steps, "step", "wd", "wd")});
  html << svg_chart("Sinkhorn target entropy (nats)", "step", {column(steps, "step", "target_entropy", "entropy")});
  html << svg_chart("embedding std x sqrt(D) (collapse monitor: 0 = collapsed)", "step",
                    {column(steps, "step", "embedding_std", "std")});
  html << svg_chart("images / s", "step", {column(steps, "step", "img_per_s", "img/s")});
  // The student's kNN accuracy, the teacher's beside it with --teacher, from epoch -1 with an
  // evaluation before training.
  std::vector<Series> knn{column(epochs, "epoch", "knn_top1", "top-1"), column(epochs, "epoch", "knn_top5", "top-5")};
  for (Series teacher : {column(epochs, "epoch", "teacher_knn_top1", "teacher top-1"),
                         column(epochs, "epoch", "teacher_knn_top5", "teacher top-5")})
    if (!teacher.x.empty()) knn.push_back(std::move(teacher));
  html << svg_chart("kNN accuracy (%)", "epoch", knn);
  html << svg_chart("epoch mean loss", "epoch", {column(epochs, "epoch", "train_loss", "loss")});
  // With --use_ccrop: how much of the image the located objects cover, after each renewal.
  if (Series area = column(epochs, "epoch", "ccrop_box_area", "area"); !area.x.empty())
    html << svg_chart("ContrastiveCrop: mean object-box area (fraction of the image)", "epoch", {area});
  html << "</div>";

  std::optional<LoadedCheckpoint> loaded;
  if (fs::exists(checkpoint)) {
    try {
      loaded = load_checkpoint(checkpoint);
    } catch (const std::exception& e) {  // the charts above are still worth the page
      html << "<p class='note'>Checkpoint unreadable: " << escape(e.what()) << "</p>";
    }
  }
  if (loaded) {
    const LoadedCheckpoint& ck = *loaded;
    try {
      data::Dataset preview = preview_dataset(ck.config);
      html << "<h2>Augmented views</h2><p class='note'>One row per image of " << escape(preview.root)
           << ": the global views, then the local views, drawn with the run's augmentation as the training loader "
              "draws them at epoch 0"
           << (ck.config.use_ccrop ? " (without ContrastiveCrop's boxes, which place the training crops)" : "")
           << ".</p>" << augmentation_section(ck.config, preview);
      html << "<h2>CLS attention of the last block</h2>" << attention_section(ck, preview);
    } catch (const std::exception& e) {
      html << "<p class='note'>Images unavailable: " << escape(e.what()) << "</p>";
    }
    html << fmt::format("<h2>Run</h2><p class='note'>{} epochs and {} steps done.</p><table>", ck.state.epoch,
                        ck.state.global_step);
    const auto args = ck.config.to_json();
    for (const auto& [key, value] : args.items())
      html << "<tr><td>" << escape(key) << "</td><td>" << escape(value.dump()) << "</td></tr>";
    html << "</table>";
  }
  html << "</body></html>\n";
  const std::string path = output_dir + "/report.html";
  write_file_atomically(path, html.str());
  return path;
}

}  // namespace bam
