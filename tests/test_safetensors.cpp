// Safetensors: bit-exact round trips for every dtype and layout, metadata, atomic replacement, and
// clear errors (naming the file) for every kind of damaged file.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/atomic_file.h"
#include "engine/safetensors.h"
#include "tests/support.h"

namespace bam::test {
namespace {

std::string temp_path(const std::string& name) {
  static const std::filesystem::path dir = scratch_dir("safetensors");
  return (dir / name).string();
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

}  // namespace

TEST_CASE("round trip is bit-exact for every dtype and layout") {
  InputMaker maker(test_seed("safetensors"));
  NamedTensors tensors;
  for (DType t : kAllDTypes) {
    InputSpec spec{{3, 4}, t == DType::boolean ? Values::mask : Values::normal};
    tensors.emplace_back(std::string(dtype_name(t)), maker.make(spec, maker.values(spec), DType::f64).to(t));
  }
  tensors.emplace_back("transposed", maker.make({{5, 3}, Values::normal, Layout::transposed}, maker.values({{5, 3}}), DType::f32));
  tensors.emplace_back("scalar", scalar_tensor(1.5));
  tensors.emplace_back("empty", zeros({0, 7}));
  std::string path = temp_path("roundtrip.safetensors");
  save_safetensors(path, tensors, {{"format", "pt"}, {"note", "a \"quoted\" value"}});
  SafetensorsFile back = load_safetensors(path);
  REQUIRE(back.tensors.size() == tensors.size());
  CHECK(back.metadata.at("format") == "pt");
  CHECK(back.metadata.at("note") == "a \"quoted\" value");
  for (size_t i = 0; i < tensors.size(); ++i) {
    CAPTURE(tensors[i].first);
    const Tensor* t = back.find(tensors[i].first);
    REQUIRE(t);
    CHECK(t->dtype() == tensors[i].second.dtype());
    CHECK(t->shape() == tensors[i].second.shape());
    Tensor original = tensors[i].second.contiguous();
    size_t bytes = static_cast<size_t>(original.numel()) * original.element_size();
    CHECK(std::memcmp(t->raw_data(), original.raw_data(), bytes) == 0);
  }
  // The header is padded so the data starts 8-byte aligned, and no temporary file is left behind.
  std::string raw = read_file(path);
  uint64_t header = 0;
  std::memcpy(&header, raw.data(), 8);
  CHECK((8 + header) % 8 == 0);
  for (auto& entry : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path()))
    CHECK(entry.path().filename().string().find(".tmp.") == std::string::npos);
  CHECK_THROWS_WITH_AS(save_safetensors(path, {{"a", zeros({1})}, {"a", zeros({1})}}, {}),
                       doctest::Contains("duplicate tensor name"), Error);
  // A failed save leaves the previous file as it was.
  CHECK(read_file(path) == raw);
}

TEST_CASE("damaged files give errors that name the file") {
  std::string good_path = temp_path("good.safetensors");
  save_safetensors(good_path, {{"w", arange(0, 10, 1, {DType::f32})}, {"b", ones({3})}}, {{"format", "pt"}});
  std::string good = read_file(good_path);
  std::string bad_path = temp_path("bad.safetensors");
  auto expect_error = [&](const std::string& bytes, const char* fragment) {
    write_file(bad_path, bytes);
    CAPTURE(std::string(fragment));
    CHECK_THROWS_WITH_AS(load_safetensors(bad_path), doctest::Contains(bad_path.c_str()), Error);
    CHECK_THROWS_WITH_AS(load_safetensors(bad_path), doctest::Contains(fragment), Error);
  };
  expect_error("", "too short");
  expect_error(good.substr(0, 5), "too short");
  expect_error(good.substr(0, 20), "does not fit");
  expect_error(good.substr(0, good.size() - 4), "outside the");
  std::string bad_json = good;
  bad_json[8] = '#';  // the header's opening brace
  expect_error(bad_json, "not valid JSON");
  std::string huge = good;
  huge[6] = '\x7f';
  expect_error(huge, "does not fit");
  // Shape/byte-count disagreement: claim 11 elements for 40 bytes.
  std::string wrong_shape = good;
  auto at = wrong_shape.find("[10]");
  REQUIRE(at != std::string::npos);
  wrong_shape.replace(at, 4, "[11]");
  expect_error(wrong_shape, "needs 44 bytes");
  std::string wrong_dtype = good;
  at = wrong_dtype.find("\"F32\"");
  wrong_dtype.replace(at, 5, "\"F8E\"");
  expect_error(wrong_dtype, "unsupported dtype F8E");
  CHECK_THROWS_WITH_AS(load_safetensors(temp_path("missing.safetensors")), doctest::Contains("cannot open"), Error);
  // A folder passed as the file.
  std::filesystem::create_directories(temp_path("folder.safetensors"));
  CHECK_THROWS_WITH_AS(load_safetensors(temp_path("folder.safetensors")), doctest::Contains("not a file"), Error);
  // Headers written by hand: the data is 8 bytes, two f32 values.
  auto file = [](std::string header, size_t data_bytes) {
    while ((8 + header.size()) % 8) header.push_back(' ');
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(header.size() >> (8 * i));
    return bytes + header + std::string(data_bytes, '\0');
  };
  const std::string both = R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]})";
  CHECK(load_safetensors((write_file(bad_path, file("{" + both + "}", 8)), bad_path)).tensors.size() == 2);
  // A name given twice (the last would hide the first, unchecked).
  expect_error(file(R"({"a":{"dtype":"NOPE","shape":"x","data_offsets":[0,0]},)" + both + "}", 8), "names 'a' twice");
  // A shape that is not a list, or whose size overflows (it would pass as 0 bytes).
  expect_error(file(R"({"a":{"dtype":"F32","shape":8,"data_offsets":[0,8]}})", 8), "not a list");
  expect_error(file(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]},)"
                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                    8),
               "larger than any file");
  expect_error(file(R"({"a":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,0]}})", 0),
               "bad shape entry");
  // Bytes that belong to no tensor: after the last, or between two.
  expect_error(file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8), "last 4 data bytes");
  expect_error(file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "[0, 4) before tensor 'a'");
  expect_error(file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                    8),
               "overlap");
}

TEST_CASE("write_file_atomically replaces a file whole, or leaves it as it was") {
  const std::string dir = scratch_dir("atomic_file").string(), path = dir + "/probe.json";
  const auto read = [&] {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  write_file_atomically(path, std::string("first\n"));
  CHECK(read() == "first\n");
  // A writer that fails half-way: the old contents stay, and no temporary file is left behind.
  CHECK_THROWS_WITH_AS(write_file_atomically(path,
                                             [](const AppendBytes& append) {
                                               append("sec", 3);
                                               throw Error("the writer gave up");
                                             }),
                       doctest::Contains("the writer gave up"), Error);
  CHECK(read() == "first\n");
  int64_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) files += entry.is_regular_file();
  CHECK(files == 1);
  // A folder that does not exist: the error names the file.
  CHECK_THROWS_WITH_AS(write_file_atomically(dir + "/missing/probe.json", std::string("x")),
                       doctest::Contains("missing/probe.json.tmp."), Error);
  write_file_atomically(path, std::string("second\n"));
  CHECK(read() == "second\n");
  // What a crash mid-write leaves is removed later, unless its writer still runs.
  const std::string ours = "log.txt.tmp." + std::to_string(::getpid());
  for (const std::string name : {"checkpoint.safetensors.tmp.4194999", ours.c_str(), "notes.tmp.txt", "a.tmp.",
                                 "probe.json.tmp.4194998", "probe.json.bak.tmp.4194997"})
    std::ofstream(dir + "/" + name) << "x";
  // Those of one file only (bamprobe's probe.json), then all.
  CHECK(remove_abandoned_temporary_files(dir, [](const std::string& name) { return name == "probe.json"; }) ==
        std::vector<std::string>{"probe.json.tmp.4194998"});
  CHECK(std::filesystem::exists(dir + "/checkpoint.safetensors.tmp.4194999"));
  std::vector<std::string> removed = remove_abandoned_temporary_files(dir, [](const std::string&) { return true; });
  std::sort(removed.begin(), removed.end());
  CHECK(removed == std::vector<std::string>{"checkpoint.safetensors.tmp.4194999", "probe.json.bak.tmp.4194997"});
  CHECK(std::filesystem::exists(dir + "/" + ours));
  CHECK(std::filesystem::exists(dir + "/notes.tmp.txt"));
  CHECK(std::filesystem::exists(dir + "/probe.json"));
}

}  // namespace bam::test
