// `--device auto` and `--precision auto` for the tools: the GPU with bf16 autocast when a CUDA
// device answers, else the CPU, in bf16 where it multiplies bf16 faster than f32 (AMX-BF16 or
// AVX-512 BF16) and in f32 elsewhere. Resolved once, before the flags are validated, so that logs
// and checkpoints record what actually ran.
#pragma once

#include <string>

#include "engine/device.h"

namespace bam::tool {

// "auto" -> "cuda" when a CUDA device is usable, else "cpu"; any other value is returned as is.
std::string resolve_device(const std::string& device);
// For a --device `asked` of "auto" that resolved to the CPU: a note saying why no GPU was taken
// (the driver's message, or a build without CUDA), so that a GPU machine whose driver fails does
// not train on its CPU unnoticed; empty otherwise.
std::string cpu_fallback_note(const std::string& asked, const std::string& resolved_device);

// "auto" -> "bf16" on a CUDA device; on the CPU "bf16" when it has AMX-BF16 or AVX-512 BF16 (its
// matmuls then run on the tiles or the pair dot products, with bf16 operands), else "f32"; any
// other value is returned as is.
std::string resolve_precision(const std::string& precision, const std::string& resolved_device);

// "auto" -> "gpu" on a CUDA device (with a CUDA build), "cpu" otherwise; any other value as is.
std::string resolve_data_backend(const std::string& backend, const std::string& resolved_device);

// Parses a resolved --device value and, for cuda:N, makes N the process's device (engine/cuda.h)
// before any CUDA work: stops with an error naming the flag when the value is not a device name or
// the device does not answer.
Device open_device(const std::string& resolved_device);

}  // namespace bam::tool
