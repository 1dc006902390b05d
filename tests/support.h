// Test support: seeded random inputs in chosen layouts, a tiny f64 reference array type for naive
// reference implementations, closeness checks from engine/tolerance.h, the f64
// finite-difference gradient check used by the op table, a scratch folder per test process, and
// a folder moved away for a test.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/cuda.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/tolerance.h"
#include "tests/doctest_text.h"

namespace bam::test {

// Whether the suites run under ThreadSanitizer (scripts/sanitize.sh --thread), whose steps are
// about ten times slower and which defers signals: the few tests of wall-clock schedules and of
// signal delivery skip under it, saying so.
#if defined(__SANITIZE_THREAD__)
constexpr bool kUnderThreadSanitizer = true;
#else
constexpr bool kUnderThreadSanitizer = false;
#endif

// A dense row-major f64 array: what reference implementations read and write.
struct Ref {
  Shape shape;
  std::vector<double> data;

  Ref() = default;
  explicit Ref(Shape s, double fill = 0.0) : shape(std::move(s)), data(shape_numel(shape), fill) {}
  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  int64_t dim() const { return static_cast<int64_t>(shape.size()); }
  // Linear position of a multi-index.
  int64_t offset(const Shape& index) const;
  double& at(const Shape& index) { return data[offset(index)]; }
  double at(const Shape& index) const { return data[offset(index)]; }
};

// Every multi-index of `shape` in row-major order.
std::vector<Shape> all_indices(const Shape& shape);
// The element of `r` that broadcasts to `index` of a larger shape (NumPy rules).
double broadcast_at(const Ref& r, const Shape& index);

// The logical contents of any tensor (any layout, dtype) as a Ref.
Ref to_ref(const Tensor& t);

// How a generated input is laid out in memory: the values are the same, only strides differ.
enum class Layout { contiguous, transposed, strided };
// What values a generated input holds.
enum class Values {
  normal,     // N(0, 1)
  positive,   // in [0.5, 2]
  unit,       // in (-0.9, 0.9)
  away,       // N(0, 1) kept at least 0.05 away from 0 and +-0.5 (kinks of relu/abs/clamp)
  mask,       // bool, about half true
  index,      // i64 in [0, high)
  distinct,   // a shuffled set of well-separated values (max/min/topk without ties)
  distinct_between,  // as distinct, shifted half a spacing: >= 0.04 from any distinct value, so
                     // maximum/minimum of two inputs never compare values that finite differences swap
};

struct InputSpec {
  Shape shape;
  Values values = Values::normal;
  Layout layout = Layout::contiguous;
  bool grad = true;    // gradient-checked (floating inputs only)
  int64_t high = 0;    // for Values::index
};

// A generator of test inputs whose seed is printed, so a failure can be replayed.
class InputMaker {
 public:
  explicit InputMaker(uint64_t seed);
  uint64_t seed() const { return seed_; }
  // Values for a spec (in logical row-major order).
  std::vector<double> values(const InputSpec& spec);
  // A tensor holding `logical` in the spec's layout, dtype and device (the layout is built on the
  // device, so CUDA kernels see the same strides as CPU kernels).
  Tensor make(const InputSpec& spec, const std::vector<double>& logical, DType float_dtype,
              Device device = Device::cpu());
  std::mt19937_64& engine() { return engine_; }

 private:
  uint64_t seed_;
  std::mt19937_64 engine_;
};

// Checks every element of `actual` against `expected`; reports the first mismatches with context.
// With `magnitude` (the shape of `expected`), rtol applies to max(|expected|, magnitude): a value
// that sums terms which cancel carries their rounding, so its error scales with sum |term|.
void check_close(const Tensor& actual, const Ref& expected, Tolerance tol, const std::string& what,
                 const Ref* magnitude = nullptr);

// Finite-difference gradient check in f64: L = sum(f(inputs) * w) for fixed random w; compares
// backward's gradient for every input with grad=true against central differences.
struct GradCheckOptions {
  double step = 1e-6;
  Tolerance tol{1e-6, 1e-5};
};
void check_gradients(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
                     const std::vector<bool>& check, InputMaker& maker, const std::string& what,
                     GradCheckOptions options = {});

// A fresh seed for a test, printed through doctest's MESSAGE (BAM_TEST_SEED overrides it).
uint64_t test_seed(const char* test_name);

// A count that background threads raise (images a loader decoded, files it skipped): waits up
// to 20 s for it to reach `at_least`, then 300 ms for it to go beyond, and returns it. The counts
// tests wait for are limits the code sets, not timings: a slow machine can only hide an overrun.
int64_t settled_count(const std::function<int64_t()>& count, int64_t at_least);

// A fresh, empty folder for a test's files: <temp>/bam_tests_<pid>/<name> (`name` may hold
// slashes). The whole <temp>/bam_tests_<pid> is removed when the test process exits normally, so
// test runs leave nothing behind in the temporary directory.
std::filesystem::path scratch_dir(const std::string& name);

// What `work` throws (std::exception's what()), or "(no error)".
std::string error_of(const std::function<void()>& work);

// The whole file's bytes (empty when it cannot be read).
std::string read_file(const std::string& path);

// What `work` prints to stdout (the progress lines and notes the tools print), which still goes
// to stdout afterwards. Also printf's output from other threads meanwhile.
std::string stdout_of(const std::function<void()>& work);
// The same for stderr (the warnings and notices).
std::string stderr_of(const std::function<void()>& work);

// Moves a folder away (to make every file of a dataset unreadable) and puts it back when
// destroyed, however the test ends.
class MovedFolder {
 public:
  MovedFolder(std::filesystem::path path, std::filesystem::path away) : path_(std::move(path)), away_(std::move(away)) {
    std::filesystem::rename(path_, away_);
  }
  ~MovedFolder() {
    std::error_code ignored;
    std::filesystem::rename(away_, path_, ignored);
  }
  MovedFolder(const MovedFolder&) = delete;
  MovedFolder& operator=(const MovedFolder&) = delete;

 private:
  std::filesystem::path path_, away_;
};

}  // namespace bam::test
