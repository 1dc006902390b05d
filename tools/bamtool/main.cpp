// bamtool: the utility front end. Each subcommand lives in its own file in tools/bamtool/.
#include <cstdio>
#include <map>
#include <string>

#include "engine/error.h"
#include "engine/host_allocator.h"
#include "tools/bamtool/commands.h"
#include "tools/common/environment.h"

int main(int argc, char** argv) {
  bam::tune_host_allocator();
  CLI::App app{"bamtool: utilities of the bam engine (run `bamtool <command> --help` for a command's flags)"};
  app.require_subcommand(1);
  std::map<std::string, bam::tool::Action> actions;
  actions["demo"] = bam::tool::add_demo(app);
  actions["loss"] = bam::tool::add_loss(app);
  actions["export"] = bam::tool::add_export(app);
  actions["bench-step"] = bam::tool::add_bench_step(app);
  actions["fmnist"] = bam::tool::add_fmnist(app);
  actions["decode"] = bam::tool::add_decode(app);
  actions["augment"] = bam::tool::add_augment(app);
  actions["report"] = bam::tool::add_report(app);
  actions["bench-data"] = bam::tool::add_bench_data(app);
  bam::tool::require_plain_numbers(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    bam::tool::check_environment_variables();
    for (auto* sub : app.get_subcommands()) return actions.at(sub->get_name())();
  } catch (const std::exception& e) {  // bam::Error, and anything else a library throws
    std::fprintf(stderr, "bamtool: %s\n", e.what());
    return 1;
  }
  return 0;
}
