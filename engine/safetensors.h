// Safetensors files (the format timm and Hugging Face load): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}},
// then the raw little-endian tensor bytes. Our own reader and writer; writes are atomic.
#pragma once

#include <map>
#include <string>

#include "engine/module.h"

namespace bam {

struct SafetensorsFile {
  NamedTensors tensors;                         // in file order, on the CPU
  std::map<std::string, std::string> metadata;  // the "__metadata__" map
  const Tensor* find(const std::string& name) const;
};

// Reads every tensor. Any malformation (truncation, bad JSON, offsets outside the data, a shape
// that disagrees with the byte count, an unsupported dtype) is an Error naming the file.
SafetensorsFile load_safetensors(const std::string& path);
// The "__metadata__" map alone, from the header (checked as above), without reading any tensor.
std::map<std::string, std::string> load_safetensors_metadata(const std::string& path);

// The first floating-point tensor of `tensors` (on any device) that holds a NaN or an infinity, as
// "<name> (<count> of <numel> values)"; empty when every value is finite. Weights saved by a run
// that diverged: what is computed from them means nothing, so the tools refuse them by name.
std::string first_non_finite(const NamedTensors& tensors);

// Writes to a temporary file beside `path`, fsyncs it, then renames it over `path`: a crash at
// any point leaves either the old file or the new one, never a torn one. Tensors may live on any
// device and have any layout. Names must be unique.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata);

}  // namespace bam
