// `bamtool decode`: decodes one image with our decoder (stb_image for formats it does not take)
// and writes it as binary PPM (P6, RGB; grayscale replicated), e.g. to compare with djpeg.
#include <cstdio>
#include <filesystem>

#include "data/image_decode.h"
#include "engine/cuda.h"
#include "engine/error.h"
#include "tools/bamtool/commands.h"
#include "tools/common/image_files.h"

namespace bam::tool {
namespace {

struct DecodeOptions {
  std::string input, output, backend = "cpu";
};

int run_decode(const DecodeOptions& o) {
  BAM_CHECK(o.backend == "cpu" || o.backend == "cuda", "--backend must be cpu or cuda, got '{}'", o.backend);
  BAM_CHECK(o.backend == "cpu",
            "--backend cuda: `bamtool decode` decodes on the CPU only; the GPU decode runs inside the GPU loader "
            "(bamtrain/bamprobe --data_backend gpu, and `bamtool bench-data` measures it)");
  std::error_code ec;
  BAM_CHECK(!std::filesystem::equivalent(o.input, o.output, ec), "decode: the output {} is the input itself", o.output);
  data::DecodedImage image;
  try {
    image = data::decode_image_file(o.input);
  } catch (const data::ImageDecodeError& e) {
    fail("{}", e.what());
  }
  write_ppm_file(o.output, image.width, image.height, image.pixels.data());
  std::printf(
      "%s: %dx%d, decoded by %s%s\n", o.input.c_str(), image.width, image.height, image.decoder,
      image.exif_orientation != 1 ? fmt::format(", Exif orientation {} applied", image.exif_orientation).c_str() : "");
  for (const auto& w : image.warnings) std::printf("warning: %s\n", w.c_str());
  return 0;
}

}  // namespace

Action add_decode(CLI::App& app) {
  auto o = std::make_shared<DecodeOptions>();
  CLI::App* sub = app.add_subcommand("decode", "Decode an image and write it as binary PPM");
  sub->add_option("input", o->input, "image file (JPEG, PNG, ...)")->required();
  sub->add_option("output", o->output, "output .ppm")->required();
  sub->add_option("--backend", o->backend, "cpu | cuda")->default_val(o->backend);
  return [o] { return run_decode(*o); };
}

}  // namespace bam::tool
