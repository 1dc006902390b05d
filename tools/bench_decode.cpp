// Benchmark of JPEG decoding per CPU core: our decoder (full RGB, and the entropy stage alone that
// feeds the GPU path), stb_image, and libjpeg-turbo as the yardstick (when built with
// BAM_HAVE_LIBJPEG). Prints one table.
//
//   bench_decode DIR_OR_FILES... [--threads N] [--reps R]
//   bench_decode --generate DIR [--count N] [--seed S]   (writes a synthetic 500x375 q90 test set)
#include <fmt/format.h>
#include <stb_image.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "data/augment.h"
#include "data/image_decode.h"
#include "data/jpeg_decoder.h"
#include "engine/host_allocator.h"

#ifdef BAM_HAVE_LIBJPEG
#include <jpeglib.h>
#endif

namespace fs = std::filesystem;
using namespace bam::data;

namespace {

using Bytes = std::vector<uint8_t>;

Bytes read_file(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw std::runtime_error(fmt::format("cannot open {}", path.string()));
  return Bytes(std::istreambuf_iterator<char>(file), {});
}

// ---- The synthetic test set ----

// A natural-ish picture: a fractal luminance field summed from octaves of smoothly interpolated
// random lattices (2 to 250 pixels per cell, amplitude falling 0.93x per octave), a slowly varying
// colour cast correlated with it, a few hard-edged discs and bars (objects), and Gaussian sensor
// noise (sigma 4). At quality 90 these compress to roughly the bits per pixel of photographs.
std::vector<uint8_t> natural_image(int width, int height, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  std::normal_distribution<float> noise(0.f, 4.f);
  auto octave_field = [&](int cells, float amplitude, std::vector<float>& field) {
    int gw = cells + 2, gh = cells * height / width + 2;
    std::vector<float> grid(size_t(gw) * gh);
    for (float& g : grid) g = uniform(rng) * amplitude;
    for (int y = 0; y < height; ++y) {
      float gy = float(y) / height * (gh - 2);
      int y0 = int(gy);
      float ty = gy - y0;
      ty = ty * ty * (3 - 2 * ty);
      for (int x = 0; x < width; ++x) {
        float gx = float(x) / width * (gw - 2);
        int x0 = int(gx);
        float tx = gx - x0;
        tx = tx * tx * (3 - 2 * tx);
        auto at = [&](int i, int j) { return grid[size_t(j) * gw + i]; };
        float top = at(x0, y0) + (at(x0 + 1, y0) - at(x0, y0)) * tx;
        float bottom = at(x0, y0 + 1) + (at(x0 + 1, y0 + 1) - at(x0, y0 + 1)) * tx;
        field[size_t(y) * width + x] += top + (bottom - top) * ty;
      }
    }
  };
  std::vector<float> luma(size_t(width) * height, 0.f), tint_a(luma.size(), 0.f),
      tint_b(luma.size(), 0.f);
  // Photographs have roughly equal contrast energy per octave of spatial frequency; a gentle
  // falloff keeps the finest octaves (2-4 pixel detail) present, as texture is in real scenes.
  float amplitude = 45.f;
  for (int cells = 2; cells <= width / 2; cells *= 2, amplitude *= 0.93f) {
    octave_field(cells, amplitude, luma);
  }
  octave_field(3, 40.f, tint_a);
  octave_field(5, 30.f, tint_b);
  struct Disc {
    float x, y, r, shade;
  };
  std::vector<Disc> discs;
  for (int i = 0; i < 6; ++i) {
    discs.push_back({(uniform(rng) * 0.5f + 0.5f) * width, (uniform(rng) * 0.5f + 0.5f) * height,
                     (0.05f + 0.1f * (uniform(rng) + 1)) * height, uniform(rng) * 70.f});
  }
  std::vector<uint8_t> rgb(size_t(width) * height * 3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      size_t i = size_t(y) * width + x;
      float l = 120 + luma[i];
      for (const Disc& d : discs) {
        if (std::hypot(x - d.x, y - d.y) < d.r) l += d.shade;
      }
      if ((x / 37 + y / 53) % 7 == 0) l -= 30;  // a few bars
      float a = tint_a[i] + 0.2f * luma[i], b = tint_b[i] - 0.1f * luma[i];
      float rgb_f[3] = {l + a, l - 0.5f * a - 0.3f * b, l + b};
      for (int c = 0; c < 3; ++c) {
        rgb[3 * i + c] = uint8_t(std::clamp(std::lround(rgb_f[c] + noise(rng)), 0L, 255L));
      }
    }
  }
  return rgb;
}

int generate_test_set(const fs::path& dir, int count, uint64_t seed) {
  fs::create_directories(dir);
  const int width = 500, height = 375;
  for (int i = 0; i < count; ++i) {
    std::vector<uint8_t> rgb = natural_image(width, height, seed + i);
    fs::path ppm = dir / fmt::format("synthetic_{:03}.ppm", i);
    fs::path jpg = dir / fmt::format("synthetic_{:03}.jpg", i);
    {
      std::ofstream out(ppm, std::ios::binary);
      out << fmt::format("P6\n{} {}\n255\n", width, height);
      out.write(reinterpret_cast<const char*>(rgb.data()), std::streamsize(rgb.size()));
    }
    std::string command =
        fmt::format("cjpeg -quality 90 -outfile '{}' '{}'", jpg.string(), ppm.string());
    if (std::system(command.c_str()) != 0) {
      fmt::print(stderr, "cjpeg failed (install libjpeg-turbo-progs): {}\n", command);
      return 1;
    }
    fs::remove(ppm);
  }
  fmt::print("wrote {} synthetic {}x{} quality-90 JPEGs (4:2:0, cjpeg defaults) to {}\n", count,
             width, height, dir.string());
  return 0;
}

// ---- Decoders under test: each decodes one file and returns a checksum-ish byte count ----

struct Decoder {
  std::string name;
  std::function<size_t(const Bytes&)> decode;
};

size_t ours_full(const Bytes& file) {
  ImageDecodeOptions options;
  options.apply_exif_orientation = false;
  options.allow_fallback = false;
  DecodedImage image = decode_image(file.data(), file.size(), "bench", options);
  return image.pixels.size();
}

size_t ours_entropy(const Bytes& file) {
  thread_local std::vector<int16_t> buffer;
  JpegLayout layout =
      decode_jpeg_coefficients_into(file.data(), file.size(), "bench", [](const JpegLayout& l) {
        if (buffer.size() < size_t(l.num_coefficients)) buffer.resize(size_t(l.num_coefficients));
        return buffer.data();
      });
  return size_t(layout.num_coefficients);
}

// Decode plus the full DINO multi-crop recipe (2 x 224 + 6 x 96, every colour/blur/solarise
// step), the CPU work per training image.
size_t ours_multicrop(const Bytes& file) {
  static std::atomic<uint32_t> counter{0};
  ImageDecodeOptions options;
  options.allow_fallback = false;
  DecodedImage image = decode_image(file.data(), file.size(), "bench", options);
  AugmentRecipe recipe;
  recipe.local_crops = 6;
  thread_local std::vector<float> out(3 * 224 * 224);
  uint32_t index = counter++;
  for (uint32_t crop = 0; crop < 8; ++crop) {
    CropParams p = sample_crop(recipe, image.width, image.height, 0, 0, index, crop);
    render_crop(image, p, recipe, out.data());
  }
  return image.pixels.size();
}

size_t stb_full(const Bytes& file) {
  int w = 0, h = 0, c = 0;
  uint8_t* pixels = stbi_load_from_memory(file.data(), int(file.size()), &w, &h, &c, 3);
  if (!pixels) throw std::runtime_error(stbi_failure_reason());
  stbi_image_free(pixels);
  return size_t(w) * h * 3;
}

#ifdef BAM_HAVE_LIBJPEG
struct JpegErrorJump {
  jpeg_error_mgr manager;
  jmp_buf jump;
};

void jpeg_error_exit(j_common_ptr cinfo) {
  longjmp(reinterpret_cast<JpegErrorJump*>(cinfo->err)->jump, 1);
}

// libjpeg-turbo with its defaults (islow IDCT, fancy upsampling, SIMD), like djpeg and PIL.
size_t libjpeg_full(const Bytes& file, std::vector<uint8_t>* out = nullptr) {
  jpeg_decompress_struct cinfo;
  JpegErrorJump error;
  cinfo.err = jpeg_std_error(&error.manager);
  error.manager.error_exit = jpeg_error_exit;
  thread_local std::vector<uint8_t> pixels;
  if (setjmp(error.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw std::runtime_error("libjpeg error");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, file.data(), static_cast<unsigned long>(file.size()));
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  size_t stride = size_t(cinfo.output_width) * 3;
  std::vector<uint8_t>& dst = out ? *out : pixels;
  dst.resize(stride * cinfo.output_height);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = dst.data() + stride * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return dst.size();
}

// libjpeg-turbo's entropy decoding alone (jpeg_read_coefficients): the peer of ours_entropy.
size_t libjpeg_coefficients(const Bytes& file) {
  jpeg_decompress_struct cinfo;
  JpegErrorJump error;
  cinfo.err = jpeg_std_error(&error.manager);
  error.manager.error_exit = jpeg_error_exit;
  if (setjmp(error.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw std::runtime_error("libjpeg error");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, file.data(), static_cast<unsigned long>(file.size()));
  jpeg_read_header(&cinfo, TRUE);
  jpeg_read_coefficients(&cinfo);
  size_t blocks = 0;
  for (int c = 0; c < cinfo.num_components; ++c) {
    blocks += size_t(cinfo.comp_info[c].width_in_blocks) * cinfo.comp_info[c].height_in_blocks;
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return blocks * 64;
}
#endif

struct Result {
  double seconds = 0;
  size_t images = 0;
};

// Every thread decodes every file `reps` times; returns the wall time of the timed part.
Result time_decoder(const Decoder& decoder, const std::vector<Bytes>& files, int threads,
                    int reps) {
  std::atomic<size_t> sink{0};
  auto work = [&](int passes) {
    size_t local = 0;
    for (int r = 0; r < passes; ++r) {
      for (const Bytes& f : files) local += decoder.decode(f);
    }
    sink += local;
  };
  work(1);  // warm-up: page in code and tables, size thread-local buffers
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work, reps);
  for (std::thread& t : pool) t.join();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (sink.load() == 0) fmt::print(stderr, "(nothing decoded?)\n");
  return {seconds, files.size() * size_t(reps) * size_t(threads)};
}

}  // namespace

int main(int argc, char** argv) {
  bam::tune_host_allocator();
  std::vector<std::string> inputs;
  int threads = 1, reps = 5, count = 100;
  uint64_t seed = 2024;
  std::string generate_dir;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--threads") {
      threads = std::max(1, std::stoi(value()));
    } else if (arg == "--reps") {
      reps = std::max(1, std::stoi(value()));
    } else if (arg == "--generate") {
      generate_dir = value();
    } else if (arg == "--count") {
      count = std::stoi(value());
    } else if (arg == "--seed") {
      seed = std::stoull(value());
    } else if (arg == "--help" || arg == "-h") {
      fmt::print(
          "usage: bench_decode DIR_OR_FILES... [--threads N] [--reps R]\n"
          "       bench_decode --generate DIR [--count N] [--seed S]\n");
      return 0;
    } else {
      inputs.push_back(arg);
    }
  }
  if (!generate_dir.empty()) return generate_test_set(generate_dir, count, seed);

  std::vector<fs::path> paths;
  for (const std::string& input : inputs) {
    if (fs::is_directory(input)) {
      for (const auto& entry : fs::directory_iterator(input)) {
        std::string ext = entry.path().extension().string();
        std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
        if (ext == ".jpg" || ext == ".jpeg") paths.push_back(entry.path());
      }
    } else {
      paths.push_back(input);
    }
  }
  std::sort(paths.begin(), paths.end());
  if (paths.empty()) {
    fmt::print(stderr, "no JPEG files given (try --generate DIR first)\n");
    return 1;
  }
  std::vector<Bytes> files;
  double megapixels = 0, bytes = 0;
  for (const fs::path& p : paths) {
    files.push_back(read_file(p));
    int w = 0, h = 0, c = 0;
    if (stbi_info_from_memory(files.back().data(), int(files.back().size()), &w, &h, &c)) {
      megapixels += w * double(h) / 1e6;
    }
    bytes += double(files.back().size());
  }
  // Only files our decoder handles are timed, so every decoder sees the same set.
  std::vector<Bytes> usable;
  for (Bytes& f : files) {
    try {
      ours_full(f);
      usable.push_back(std::move(f));
    } catch (const std::exception& e) {
      fmt::print(stderr, "skipping a file our decoder does not handle: {}\n", e.what());
    }
  }
  if (usable.empty()) return 1;

  std::vector<Decoder> decoders = {
      {"bam: full decode to RGB", ours_full},
      {"bam: entropy decode only (coefficients)", ours_entropy},
      {"stb_image 2.27 (RGB)", stb_full},
  };
#ifdef BAM_HAVE_LIBJPEG
  decoders.push_back(
      {"libjpeg-turbo (RGB, islow, fancy)", [](const Bytes& f) { return libjpeg_full(f); }});
  decoders.push_back({"libjpeg-turbo: coefficients only", libjpeg_coefficients});
  // Check that the numbers compare like with like: our pixels must equal libjpeg-turbo's.
  size_t identical = 0;
  for (const Bytes& f : usable) {
    std::vector<uint8_t> theirs;
    libjpeg_full(f, &theirs);
    ImageDecodeOptions options;
    options.apply_exif_orientation = false;
    identical += decode_image(f.data(), f.size(), "check", options).pixels == theirs;
  }
#endif

  fmt::print("{} files, {:.2f} MP and {:.1f} KB on average; {} thread(s), {} rep(s)\n",
             usable.size(), megapixels / double(files.size()), bytes / 1024 / double(files.size()),
             threads, reps);
#ifdef BAM_HAVE_LIBJPEG
  fmt::print("our RGB output identical to libjpeg-turbo's on {}/{} files\n", identical,
             usable.size());
#endif
  // Last, so the libjpeg-turbo reference keeps its index.
  decoders.push_back({"bam: decode + 2x224 + 6x96 multi-crop augmentation", ours_multicrop});
  std::vector<Result> results;
  for (const Decoder& d : decoders) results.push_back(time_decoder(d, usable, threads, reps));
  double mp_per_image = megapixels / double(files.size());
  auto per_core = [&](const Result& r) { return double(r.images) / r.seconds / threads; };
  fmt::print(
      "\n| decoder | img/s per core | MP/s per core | ms per image | vs libjpeg-turbo RGB |\n");
  fmt::print("|---|---:|---:|---:|---:|\n");
  double reference = 0;
#ifdef BAM_HAVE_LIBJPEG
  reference = per_core(results[3]);
#endif
  for (size_t i = 0; i < decoders.size(); ++i) {
    double rate = per_core(results[i]);
    std::string ratio = reference > 0 ? fmt::format("{:.2f}x", rate / reference) : "n/a";
    fmt::print("| {} | {:.0f} | {:.1f} | {:.2f} | {} |\n", decoders[i].name, rate,
               rate * mp_per_image, 1000.0 / rate, ratio);
  }
  return 0;
}
