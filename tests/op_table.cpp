// The whole op-test table, gathered from the per-family files.
#include "tests/op_table.h"

namespace bam::test {

std::vector<OpCase> all_op_cases() {
  std::vector<OpCase> cases;
  for (auto part : {elementwise_cases, reduction_cases, linalg_cases, nn_cases, shape_cases}) {
    auto rows = part();
    cases.insert(cases.end(), rows.begin(), rows.end());
  }
  return cases;
}

}  // namespace bam::test
