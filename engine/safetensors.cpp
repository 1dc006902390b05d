// Safetensors reading and atomic writing with nlohmann::json for the header.
#include "engine/safetensors.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "engine/atomic_file.h"
#include "engine/autograd.h"
#include "engine/error.h"

namespace bam {
namespace {

struct DTypeName {
  DType dtype;
  const char* name;
};
constexpr DTypeName kNames[] = {{DType::f32, "F32"}, {DType::f64, "F64"}, {DType::bf16, "BF16"},
                                {DType::f16, "F16"}, {DType::i32, "I32"}, {DType::i64, "I64"},
                                {DType::u8, "U8"},   {DType::boolean, "BOOL"}};

const char* safetensors_name(DType t) {
  for (const auto& n : kNames)
    if (n.dtype == t) return n.name;
  return "?";
}

bool safetensors_dtype(const std::string& name, DType* out) {
  for (const auto& n : kNames)
    if (name == n.name) {
      *out = n.dtype;
      return true;
    }
  return false;
}

constexpr uint64_t kMaxHeader = 100u << 20;  // the format's own limit is 100 MB

}  // namespace

const Tensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

namespace {

// The file's header (checked whole, as below) and, with `read_tensors`, its tensors.
SafetensorsFile read_safetensors(const std::string& path, bool read_tensors) {
  std::error_code ec;
  BAM_CHECK(!std::filesystem::exists(path, ec) || std::filesystem::is_regular_file(path, ec),
            "{}: not a file (a folder?)", path);
  std::ifstream in(path, std::ios::binary);
  BAM_CHECK(in.good(), "{}: cannot open for reading", path);
  in.seekg(0, std::ios::end);
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  BAM_CHECK(file_size >= 8, "{}: not a safetensors file ({} bytes, too short for the header length)", path,
            file_size);
  unsigned char length_bytes[8];
  in.read(reinterpret_cast<char*>(length_bytes), 8);
  BAM_CHECK(in.good(), "{}: could not read the header length", path);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | length_bytes[i];
  BAM_CHECK(header_size <= kMaxHeader && header_size <= file_size - 8,
            "{}: header length {} does not fit a file of {} bytes (not a safetensors file, or truncated)", path,
            header_size, file_size);
  std::string header(header_size, '\0');
  in.read(header.data(), static_cast<std::streamsize>(header_size));
  BAM_CHECK(in.good(), "{}: could not read the {}-byte header", path, header_size);

  nlohmann::json json;
  // A name given twice would be read as its last entry, the first one unchecked: refused.
  std::set<std::string> names;
  std::string duplicate;
  const auto note_duplicates = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (depth == 1 && event == nlohmann::json::parse_event_t::key && !names.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  try {
    json = nlohmann::json::parse(header, note_duplicates);
  } catch (const std::exception& e) {
    fail("{}: the header is not valid JSON: {}", path, e.what());
  }
  BAM_CHECK(duplicate.empty(), "{}: the header names '{}' twice", path, duplicate);
  BAM_CHECK(json.is_object(), "{}: the header is not a JSON object", path);
  const uint64_t data_start = 8 + header_size, data_size = file_size - data_start;

  SafetensorsFile out;
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (auto it = json.begin(); it != json.end(); ++it) {
    if (it.key() == "__metadata__") {
      BAM_CHECK(it->is_object(), "{}: __metadata__ must be an object", path);
      for (auto m = it->begin(); m != it->end(); ++m) {
        BAM_CHECK(m->is_string(), "{}: metadata '{}' is not a string", path, m.key());
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    const auto& info = *it;
    const std::string& name = it.key();
    try {
      Entry e;
      e.name = name;
      std::string dtype_name = info.at("dtype").get<std::string>();
      BAM_CHECK(safetensors_dtype(dtype_name, &e.dtype), "{}: tensor '{}' has unsupported dtype {}", path, name,
                dtype_name);
      const auto& shape = info.at("shape");
      BAM_CHECK(shape.is_array(), "{}: tensor '{}' has a shape that is not a list: {}", path, name, shape.dump());
      uint64_t expected = dtype_size(e.dtype);  // bytes, multiplied up with an overflow check
      for (const auto& s : shape) {
        BAM_CHECK(s.is_number_unsigned() && s.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX),
                  "{}: tensor '{}' has a bad shape entry {}", path, name, s.dump());
        BAM_CHECK(!__builtin_mul_overflow(expected, s.get<uint64_t>(), &expected),
                  "{}: tensor '{}' of shape {} is larger than any file", path, name, shape.dump());
        e.shape.push_back(s.get<int64_t>());
      }
      const auto& offsets = info.at("data_offsets");
      BAM_CHECK(offsets.is_array() && offsets.size() == 2, "{}: tensor '{}' needs two data_offsets", path, name);
      e.begin = offsets[0].get<uint64_t>();
      e.end = offsets[1].get<uint64_t>();
      BAM_CHECK(e.begin <= e.end && e.end <= data_size,
                "{}: tensor '{}' has data_offsets [{}, {}) outside the {} data bytes", path, name, e.begin, e.end,
                data_size);
      BAM_CHECK(e.end - e.begin == expected, "{}: tensor '{}' of shape {} {} needs {} bytes but has {}", path, name,
                shape_str(e.shape), dtype_name, expected, e.end - e.begin);
      entries.push_back(e);
    } catch (const nlohmann::json::exception& ex) {
      fail("{}: bad header entry for tensor '{}': {}", path, name, ex.what());
    }
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  // The tensors cover the data bytes end to end, as the format asks: no overlap, no gap, nothing
  // after the last (bytes no tensor claims are a damaged or doctored file).
  uint64_t covered = 0;
  const Entry* last = nullptr;  // the last that took bytes
  for (const Entry& e : entries) {
    if (e.begin == e.end) continue;  // an empty tensor takes no bytes
    BAM_CHECK(e.begin >= covered, "{}: tensors '{}' and '{}' overlap", path, last ? last->name : "", e.name);
    BAM_CHECK(e.begin == covered, "{}: the data bytes [{}, {}) before tensor '{}' belong to no tensor", path, covered,
              e.begin, e.name);
    covered = e.end;
    last = &e;
  }
  BAM_CHECK(covered == data_size, "{}: the last {} data bytes belong to no tensor", path, data_size - covered);
  if (!read_tensors) return out;
  for (const Entry& e : entries) {
    Tensor t = empty(e.shape, {e.dtype});
    in.seekg(static_cast<std::streamoff>(data_start + e.begin));
    in.read(static_cast<char*>(t.raw_data()), static_cast<std::streamsize>(e.end - e.begin));
    BAM_CHECK(in.good() || e.end == e.begin, "{}: could not read tensor '{}'", path, e.name);
    out.tensors.emplace_back(e.name, t);
  }
  return out;
}

}  // namespace

SafetensorsFile load_safetensors(const std::string& path) { return read_safetensors(path, true); }

std::map<std::string, std::string> load_safetensors_metadata(const std::string& path) {
  return read_safetensors(path, false).metadata;
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  NoGradGuard no_grad;
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<Tensor> host;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    BAM_CHECK(names.insert(name).second, "save_safetensors: duplicate tensor name '{}' for {}", name, path);
    BAM_CHECK(name != "__metadata__", "save_safetensors: '__metadata__' is reserved");
    Tensor h = t.detach().to(Device::cpu()).contiguous();
    uint64_t bytes = static_cast<uint64_t>(h.numel()) * h.element_size();
    header[name] = {{"dtype", safetensors_name(h.dtype())}, {"shape", h.shape()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    host.push_back(h);
  }
  std::string text = header.dump();
  while ((8 + text.size()) % 8 != 0) text.push_back(' ');  // data starts 8-byte aligned

  write_file_atomically(path, [&](const AppendBytes& append) {
    unsigned char length_bytes[8];
    uint64_t length = text.size();
    for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<unsigned char>(length >> (8 * i));
    append(length_bytes, 8);
    append(text.data(), text.size());
    for (const Tensor& h : host) append(h.raw_data(), static_cast<size_t>(h.numel()) * h.element_size());
  });
}

std::string first_non_finite(const NamedTensors& tensors) {
  for (const auto& [name, t] : tensors) {
    if (!is_floating(t.dtype()) || t.numel() == 0) continue;
    const Tensor host = t.detach().to(Device::cpu());
    const Tensor values = host.dtype() == DType::f64 ? host.contiguous() : host.to(DType::f32).contiguous();
    int64_t bad = 0;
    if (values.dtype() == DType::f64) {
      const double* v = values.data<double>();
      for (int64_t i = 0; i < values.numel(); ++i) bad += std::isfinite(v[i]) ? 0 : 1;
    } else {
      const float* v = values.data<float>();
      for (int64_t i = 0; i < values.numel(); ++i) bad += std::isfinite(v[i]) ? 0 : 1;
    }
    if (bad > 0) return fmt::format("{} ({} of {} values)", name, bad, t.numel());
  }
  return "";
}

}  // namespace bam
