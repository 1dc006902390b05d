// Image files the tools write (JPEG datasets, PNG grids, PPM decodes), every step of the write
// checked: stb_image_write's own file functions report success even when the disk is full (they
// do not check fwrite or fclose), so the images are encoded in memory and written here.
#pragma once

#include <cstdint>
#include <string>

namespace bam::tool {

// A JPEG of `channels` (1 or 3) interleaved 8-bit channels. Written in place: for the many small
// files of a dataset, whose conversion is marked complete as a whole (scripts/run.sh).
void write_jpeg_file(const std::string& path, int width, int height, int channels, const uint8_t* pixels, int quality);

// A PNG of RGB pixels, written atomically (engine/atomic_file.h).
void write_png_file(const std::string& path, int width, int height, const uint8_t* rgb);

// A binary PPM (P6) of RGB pixels, written atomically.
void write_ppm_file(const std::string& path, int width, int height, const uint8_t* rgb);

}  // namespace bam::tool
