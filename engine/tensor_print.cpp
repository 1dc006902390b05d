// Readable printing of tensors, PyTorch style: nested brackets, aligned columns, elided middles.
#include <sstream>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/tensor.h"
#include "kernels/cpu/copy.h"

namespace bam {
namespace {

constexpr int64_t kElideAbove = 1000;  // elements; beyond this each dim shows its first/last 3
constexpr int64_t kEdgeItems = 3;

struct Printer {
  const Tensor& t;  // contiguous, on the CPU
  bool elide;
  bool use_exponent = false;
  int width = 0;

  std::string element(int64_t i) const {
    double v = cpu::read_as_double(t.raw_data(), t.dtype(), i);
    switch (t.dtype()) {
      case DType::boolean: return v != 0 ? "true" : "false";
      case DType::i32:
      case DType::i64:
      case DType::u8: return fmt::format("{}", static_cast<int64_t>(v));
      default: return use_exponent ? fmt::format("{:.4e}", v) : fmt::format("{:.4f}", v);
    }
  }

  void print(std::ostringstream& os, int64_t dim, int64_t offset, int indent) const {
    const Shape& shape = t.shape();
    const int64_t n = shape[dim];
    int64_t stride = 1;
    for (size_t d = dim + 1; d < shape.size(); ++d) stride *= shape[d];
    os << "[";
    for (int64_t i = 0; i < n; ++i) {
      if (elide && n > 2 * kEdgeItems && i == kEdgeItems) {
        os << (dim + 1 == t.dim() ? "..., " : "...,\n" + std::string(indent + 1, ' '));
        i = n - kEdgeItems;
      }
      if (dim + 1 == t.dim()) {
        std::string e = element(offset + i * stride);
        os << std::string(width > static_cast<int>(e.size()) ? width - e.size() : 0, ' ') << e;
        if (i + 1 < n) os << ", ";
      } else {
        print(os, dim + 1, offset + i * stride, indent + 1);
        if (i + 1 < n) os << ",\n" << std::string(indent + 1, ' ');
      }
    }
    os << "]";
  }
};

}  // namespace

std::string Tensor::str() const {
  if (!defined()) return "tensor(<undefined>)";
  NoGradGuard no_grad;
  Tensor host = device().is_cpu() ? contiguous() : to(Device::cpu()).contiguous();
  std::ostringstream os;
  os << "tensor(";
  if (numel() == 0) {
    os << "[]";
  } else {
    Printer p{host, numel() > kElideAbove};
    if (is_floating(dtype())) {
      double largest = 0, smallest = INFINITY;
      for (int64_t i = 0; i < numel(); ++i) {
        double v = std::abs(cpu::read_as_double(host.raw_data(), dtype(), i));
        if (!std::isfinite(v)) continue;
        largest = std::max(largest, v);
        if (v > 0) smallest = std::min(smallest, v);
      }
      p.use_exponent = largest >= 1e5 || (smallest < 1e-4 && smallest > 0);
    }
    for (int64_t i = 0; i < numel(); ++i) p.width = std::max(p.width, static_cast<int>(p.element(i).size()));
    if (dim() == 0) os << p.element(0);
    else p.print(os, 0, 0, 7);
  }
  os << ", dtype=" << dtype_name(dtype());
  if (!device().is_cpu()) os << ", device=" << device().str();
  if (requires_grad()) os << ", requires_grad";
  os << ")";
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

bool parse_dtype(const std::string& name, DType* out) {
  static const std::pair<const char*, DType> names[] = {
      {"f32", DType::f32},   {"float32", DType::f32}, {"float", DType::f32},  {"f64", DType::f64},
      {"float64", DType::f64}, {"double", DType::f64}, {"bf16", DType::bf16}, {"bfloat16", DType::bf16},
      {"f16", DType::f16},   {"float16", DType::f16}, {"fp16", DType::f16},   {"half", DType::f16},
      {"i32", DType::i32},   {"int32", DType::i32},   {"i64", DType::i64},    {"int64", DType::i64},
      {"u8", DType::u8},     {"uint8", DType::u8},    {"bool", DType::boolean}};
  for (const auto& [n, t] : names)
    if (name == n) {
      *out = t;
      return true;
    }
  return false;
}

bool parse_device(const std::string& text, Device* out) {
  if (text == "cpu") {
    *out = Device::cpu();
    return true;
  }
  if (text == "cuda") {
    *out = Device::cuda(0);
    return true;
  }
  if (text.rfind("cuda:", 0) == 0 && text.size() > 5 && text.size() <= 9) {  // at most 4 digits
    int index = 0;
    for (char c : text.substr(5)) {
      if (c < '0' || c > '9') return false;
      index = index * 10 + (c - '0');
    }
    *out = Device::cuda(index);
    return true;
  }
  return false;
}

}  // namespace bam
