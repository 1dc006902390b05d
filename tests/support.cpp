// Test support implementation: input generation, Ref helpers, closeness and gradient checks,
// the scratch folder.
#include "tests/support.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <string>
#include <thread>

#include "engine/device_copy.h"
#include "engine/random.h"

namespace bam::test {

int64_t Ref::offset(const Shape& index) const {
  int64_t off = 0;
  for (size_t d = 0; d < shape.size(); ++d) off = off * shape[d] + index[d];
  return off;
}

std::vector<Shape> all_indices(const Shape& shape) {
  std::vector<Shape> out;
  int64_t n = shape_numel(shape);
  Shape index(shape.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(index);
    for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
      if (++index[d] < shape[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

double broadcast_at(const Ref& r, const Shape& index) {
  size_t lead = index.size() - r.shape.size();
  Shape local(r.shape.size());
  for (size_t d = 0; d < r.shape.size(); ++d) local[d] = r.shape[d] == 1 ? 0 : index[lead + d];
  return r.at(local);
}

Ref to_ref(const Tensor& t) {
  Ref r;
  r.shape = t.shape();
  r.data = t.detach().to_vector<double>();
  return r;
}

InputMaker::InputMaker(uint64_t seed) : seed_(seed), engine_(seed) {}

std::vector<double> InputMaker::values(const InputSpec& spec) {
  int64_t n = shape_numel(spec.shape);
  std::vector<double> v(n);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  switch (spec.values) {
    case Values::normal:
      for (auto& x : v) x = normal(engine_);
      break;
    case Values::positive:
      for (auto& x : v) x = 0.5 + 1.5 * uniform(engine_);
      break;
    case Values::unit:
      for (auto& x : v) x = -0.9 + 1.8 * uniform(engine_);
      break;
    case Values::away:
      for (auto& x : v) {
        do x = normal(engine_);
        while (std::abs(x) < 0.05 || std::abs(std::abs(x) - 0.5) < 0.05);
      }
      break;
    case Values::mask:
      for (auto& x : v) x = uniform(engine_) < 0.5 ? 1.0 : 0.0;
      break;
    case Values::index: {
      std::uniform_int_distribution<int64_t> pick(0, spec.high - 1);
      for (auto& x : v) x = static_cast<double>(pick(engine_));
      break;
    }
    case Values::distinct:
    case Values::distinct_between: {
      // Separated by 0.1 so finite differences never swap the order; distinct_between sits halfway
      // between the grid points of distinct, so two such inputs stay 0.04 apart as well.
      const double shift = spec.values == Values::distinct_between ? 0.05 : 0.0;
      std::vector<int64_t> order(n);
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), engine_);
      for (int64_t i = 0; i < n; ++i)
        v[i] = 0.1 * static_cast<double>(order[i] - n / 2) + shift + 0.01 * uniform(engine_);
      break;
    }
  }
  return v;
}

Tensor InputMaker::make(const InputSpec& spec, const std::vector<double>& logical, DType float_dtype,
                        Device device) {
  DType dtype = spec.values == Values::mask ? DType::boolean : spec.values == Values::index ? DType::i64 : float_dtype;
  NoGradGuard no_grad;
  Tensor dense = from_vector(logical, spec.shape, {DType::f64}).to(dtype).to(device);
  Tensor out;
  if (spec.layout == Layout::transposed && spec.shape.size() >= 2) {
    // Same values, stored with the last two dims swapped.
    out = dense.transpose(-1, -2).contiguous().transpose(-1, -2);
  } else if (spec.layout == Layout::strided && !spec.shape.empty()) {
    // Every other element of a buffer twice as long in the last dim.
    Shape wide = spec.shape;
    wide.back() *= 2;
    Tensor buffer = zeros(wide, {dtype, device});
    out = buffer.slice(-1, 0, wide.back(), 2);
    copy_into(out, dense);
  } else {
    out = dense;
  }
  return out;
}

void check_close(const Tensor& actual, const Ref& expected, Tolerance tol, const std::string& what,
                 const Ref* magnitude) {
  INFO(what);
  REQUIRE_MESSAGE(actual.shape() == expected.shape, "shape " << shape_str(actual.shape()) << " expected "
                                                           << shape_str(expected.shape));
  if (magnitude) REQUIRE(magnitude->shape == expected.shape);
  Ref got = to_ref(actual);
  int reported = 0;
  int64_t bad = 0;
  double worst = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    if (within_tolerance(got.data[i], expected.data[i], tol)) continue;
    if (magnitude && std::isfinite(expected.data[i]) &&
        std::fabs(got.data[i] - expected.data[i]) <= tol.atol + tol.rtol * magnitude->data[i])
      continue;
    ++bad;
    worst = std::max(worst, std::abs(got.data[i] - expected.data[i]));
    if (reported++ < 5)
      MESSAGE(what << ": element " << i << " is " << got.data[i] << ", expected " << expected.data[i]);
  }
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " of " << got.numel() << " elements differ (worst abs error "
                               << worst << ", atol " << tol.atol << ", rtol " << tol.rtol << ")");
}

namespace {

// Element offsets (in the storage) of every logical element of t, in row-major order.
std::vector<int64_t> storage_offsets(const Tensor& t) {
  std::vector<int64_t> offsets;
  for (const Shape& index : all_indices(t.shape())) {
    int64_t off = t.offset();
    for (size_t d = 0; d < index.size(); ++d) off += index[d] * t.strides()[d];
    offsets.push_back(off);
  }
  return offsets;
}

double weighted_sum(const Tensor& y, const Tensor& w) { return sum(mul(y, w)).item(); }

}  // namespace

void check_gradients(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
                     const std::vector<bool>& check, InputMaker& maker, const std::string& what,
                     GradCheckOptions options) {
  INFO("gradient check of " << what << " (seed " << maker.seed() << ")");
  std::vector<Tensor> leaves;
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor leaf = inputs[i].detach();
    if (check[i]) {
      REQUIRE_MESSAGE(leaf.dtype() == DType::f64, "gradient checks run in f64");
      leaf.requires_grad_(true);
    }
    leaves.push_back(leaf);
  }
  Tensor y = f(leaves);
  std::vector<double> weights(y.numel());
  std::normal_distribution<double> normal(0.0, 1.0);
  for (auto& w : weights) w = normal(maker.engine());
  Tensor w = from_vector(weights, y.shape(), {DType::f64});
  sum(mul(y, w)).backward();

  for (size_t i = 0; i < leaves.size(); ++i) {
    if (!check[i]) continue;
    Tensor grad = leaves[i].grad();
    REQUIRE_MESSAGE(grad.defined(), what << ": input " << i << " received no gradient");
    REQUIRE(grad.shape() == leaves[i].shape());
    Ref analytic = to_ref(grad);
    double* storage = static_cast<double*>(leaves[i].storage()->data());
    std::vector<int64_t> offsets = storage_offsets(leaves[i]);
    int reported = 0;
    int64_t bad = 0;
    NoGradGuard no_grad;
    for (size_t k = 0; k < offsets.size(); ++k) {
      double original = storage[offsets[k]];
      storage[offsets[k]] = original + options.step;
      double plus = weighted_sum(f(leaves), w);
      storage[offsets[k]] = original - options.step;
      double minus = weighted_sum(f(leaves), w);
      storage[offsets[k]] = original;
      double numeric = (plus - minus) / (2 * options.step);
      if (within_tolerance(analytic.data[k], numeric, options.tol)) continue;
      ++bad;
      if (reported++ < 5)
        MESSAGE(what << ": d/d input" << i << "[" << k << "] analytic " << analytic.data[k] << " numeric " << numeric);
    }
    CHECK_MESSAGE(bad == 0, what << ": " << bad << " of " << offsets.size() << " gradient entries of input " << i
                                 << " disagree with finite differences");
  }
}

uint64_t test_seed(const char* test_name) {
  uint64_t seed;
  if (const char* env = std::getenv("BAM_TEST_SEED")) {
    seed = std::strtoull(env, nullptr, 10);
  } else {
    seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) % 1000000007ull;
  }
  MESSAGE(std::string(test_name) << ": seed " << seed << " (rerun with BAM_TEST_SEED=" << seed << ")");
  return seed;
}

int64_t settled_count(const std::function<int64_t()>& count, int64_t at_least) {
  for (int i = 0; i < 2000 && count() < at_least; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  return count();
}

namespace {

// This process's scratch root, removed (with everything in it) at exit.
class ScratchRoot {
 public:
  ScratchRoot() : path_(std::filesystem::temp_directory_path() / ("bam_tests_" + std::to_string(::getpid()))) {
    std::filesystem::create_directories(path_);
  }
  ~ScratchRoot() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchRoot(const ScratchRoot&) = delete;
  ScratchRoot& operator=(const ScratchRoot&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace

std::filesystem::path scratch_dir(const std::string& name) {
  static const ScratchRoot root;
  const std::filesystem::path dir = root.path() / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

namespace {

// What `work` writes to file descriptor `fd` (stdout or stderr) through `stream`, which still goes
// there afterwards.
std::string output_of(int fd, std::FILE* stream, const char* name, const std::function<void()>& work) {
  const std::filesystem::path file = scratch_dir(std::string(name) + "_of") / "captured.txt";
  std::fflush(stream);
  const int saved = ::dup(fd);
  BAM_CHECK(saved >= 0, "{}_of: cannot duplicate {}", name, name);
  std::FILE* capture = std::fopen(file.c_str(), "w+");
  BAM_CHECK(capture != nullptr, "{}_of: cannot open {}", name, file.string());
  ::dup2(::fileno(capture), fd);
  auto restore = [&] {
    std::fflush(stream);
    ::dup2(saved, fd);
    ::close(saved);
  };
  try {
    work();
  } catch (...) {
    restore();
    std::fclose(capture);
    throw;
  }
  restore();
  std::string text;
  std::rewind(capture);
  for (int c; (c = std::fgetc(capture)) != EOF;) text.push_back(static_cast<char>(c));
  std::fclose(capture);
  std::fputs(text.c_str(), stream);  // still shown
  return text;
}

}  // namespace

std::string stdout_of(const std::function<void()>& work) { return output_of(STDOUT_FILENO, stdout, "stdout", work); }

std::string stderr_of(const std::function<void()>& work) { return output_of(STDERR_FILENO, stderr, "stderr", work); }

std::string error_of(const std::function<void()>& work) {
  try {
    work();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace bam::test
