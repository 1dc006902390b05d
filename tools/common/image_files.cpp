// write_jpeg_file, write_png_file and write_ppm_file (image_files.h).
#include "tools/common/image_files.h"

#include <stb_image_write.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "engine/atomic_file.h"
#include "engine/error.h"

namespace bam::tool {
namespace {

void append_to_string(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<size_t>(size));
}

}  // namespace

void write_jpeg_file(const std::string& path, int width, int height, int channels, const uint8_t* pixels, int quality) {
  std::string bytes;
  BAM_CHECK(stbi_write_jpg_to_func(append_to_string, &bytes, width, height, channels, pixels, quality),
            "{}: could not encode the JPEG", path);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  BAM_CHECK(f != nullptr, "{}: cannot open for writing: {}", path, std::strerror(errno));
  const bool written = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  const int write_error = errno;
  const bool closed = std::fclose(f) == 0;
  BAM_CHECK(written && closed, "{}: could not write: {}", path, std::strerror(written ? errno : write_error));
}

void write_png_file(const std::string& path, int width, int height, const uint8_t* rgb) {
  std::string bytes;
  BAM_CHECK(stbi_write_png_to_func(append_to_string, &bytes, width, height, 3, rgb, width * 3),
            "{}: could not encode the PNG", path);
  write_file_atomically(path, bytes);
}

void write_ppm_file(const std::string& path, int width, int height, const uint8_t* rgb) {
  std::string bytes = "P6\n" + std::to_string(width) + " " + std::to_string(height) + "\n255\n";
  bytes.append(reinterpret_cast<const char*>(rgb), static_cast<size_t>(width) * height * 3);
  write_file_atomically(path, bytes);
}

}  // namespace bam::tool
