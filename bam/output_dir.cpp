// prepare_output_dir: see output_dir.h.
#include "bam/output_dir.h"

#include <cstdio>
#include <filesystem>
#include <system_error>

#include "engine/error.h"

namespace bam {

void prepare_output_dir(const std::string& dir, const char* flag) {
  namespace fs = std::filesystem;
  BAM_CHECK(!dir.empty(), "{} is empty: name a folder for the run's files", flag);
  std::error_code error;
  fs::create_directories(dir, error);
  BAM_CHECK(!error, "{} {}: cannot create the folder: {}", flag, dir, error.message());
  BAM_CHECK(fs::is_directory(dir, error), "{} {}: exists and is not a folder", flag, dir);
  // Creating the folder can succeed where writing in it fails (a read-only folder, a full disk).
  const fs::path probe = fs::path(dir) / ".bam_write_test";
  std::FILE* file = std::fopen(probe.c_str(), "wb");
  BAM_CHECK(file != nullptr, "{} {}: cannot write in the folder", flag, dir);
  std::fclose(file);
  fs::remove(probe, error);
}

}  // namespace bam
