// bamtool subcommands: each registers its flags on the CLI11 app and returns the action to run.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

#include "tools/common/flag_checks.h"

namespace bam::tool {

using Action = std::function<int()>;

// Each add_* function declares one subcommand with its flags; the action runs when it is chosen.
Action add_demo(CLI::App& app);
Action add_loss(CLI::App& app);
Action add_export(CLI::App& app);
Action add_bench_step(CLI::App& app);
Action add_fmnist(CLI::App& app);
Action add_decode(CLI::App& app);
Action add_augment(CLI::App& app);
Action add_report(CLI::App& app);
Action add_bench_data(CLI::App& app);

}  // namespace bam::tool
