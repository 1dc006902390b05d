// `bamtool report OUTPUT_DIR`: (re)generates OUTPUT_DIR/report.html from a run's logs and checkpoint.
#include <cstdio>

#include "bam/report.h"
#include "tools/bamtool/commands.h"

namespace bam::tool {

Action add_report(CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand("report", "Write OUTPUT_DIR/report.html from a bamtrain run's logs");
  sub->add_option("output_dir", *dir, "a bamtrain --output_dir")->required()->check(CLI::ExistingDirectory);
  return [dir] {
    std::printf("wrote %s\n", write_training_report(*dir).c_str());
    return 0;
  };
}

}  // namespace bam::tool
