// The environment variables the tools read for their own settings, checked at start: a value that
// would be ignored or misread stops the tool before any work, naming the variable.
#pragma once

namespace bam::tool {

// BAM_NUM_THREADS (a count from 1 to 1024), BAM_AVAILABLE_MEMORY_MIB (a positive number of MiB),
// BAM_CPU_CACHE_MB (a whole number) and BAM_DIST_BACKEND (tcp or nccl), each when set and not
// empty.
void check_environment_variables();

}  // namespace bam::tool
