// The Trainer's logs: log.txt's rows (one per epoch, one for an evaluation before training), and on
// resume the rows an interrupted run wrote after its checkpoint dropped, or the one it lost
// written again (steps.jsonl's rows are written by the training loop).
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>

#include "bam/trainer.h"
#include "engine/atomic_file.h"
#include "engine/error.h"

namespace bam {

namespace {

// The kNN results and the ContrastiveCrop box update of `s` that were measured, under their
// log.txt keys, after those `j` has (an "epoch" key stays the last, as log_row places it).
void add_measured_fields(nlohmann::ordered_json& j, const EpochStats& s) {
  const auto epoch = j.find("epoch");
  const nlohmann::ordered_json epoch_value = epoch != j.end() ? *epoch : nlohmann::ordered_json();
  if (epoch != j.end()) j.erase(epoch);
  if (s.knn_top1 >= 0) {
    j["knn_top1"] = s.knn_top1;
    j["knn_top5"] = s.knn_top5;
  }
  if (s.teacher_knn_top1 >= 0) {
    j["teacher_knn_top1"] = s.teacher_knn_top1;
    j["teacher_knn_top5"] = s.teacher_knn_top5;
  }
  if (s.box_area >= 0) {
    j["ccrop_box_area"] = s.box_area;
    j["ccrop_box_seconds"] = s.box_seconds;
  }
  if (!epoch_value.is_null()) j["epoch"] = epoch_value;
}

}  // namespace

void Trainer::add_to_last_epoch_row(const EpochStats& measured) {
  nlohmann::ordered_json row = nlohmann::ordered_json::parse(state_.last_epoch_row);
  add_measured_fields(row, measured);
  state_.last_epoch_row = row.dump();
}

nlohmann::ordered_json Trainer::log_row(const EpochStats& s, bool cuda) {
  nlohmann::ordered_json j;
  j["train_loss"] = s.loss;
  j["train_lr"] = s.lr;
  j["train_wd"] = s.wd;
  j["train_reg"] = s.reg;
  j["train_target_entropy"] = s.target_entropy;
  j["train_embedding_std"] = s.embedding_std;
  j["train_img_per_s"] = s.img_per_s;
  j["train_data_wait_s"] = s.data_wait_s;
  j["train_seconds"] = s.seconds;
  if (cuda) j["train_host_waits_per_step"] = s.host_waits_per_step;
  add_measured_fields(j, s);
  j["epoch"] = s.epoch;
  return j;
}

void Trainer::append_log(const EpochStats& s) { append_log_row(log_row(s, device_.is_cuda())); }

void Trainer::restore_lost_epoch_row() {
  if (state_.last_epoch_row.empty()) return;  // no epoch has ended yet (or an older checkpoint)
  const int64_t epoch = nlohmann::ordered_json::parse(state_.last_epoch_row).at("epoch").get<int64_t>();
  // The row of an epoch that --max_steps ended inside, resumed with a longer schedule: the epoch
  // goes on, and its row is written when it ends (trim_logs_to_checkpoint dropped the short one).
  if (epoch == state_.epoch && step_in_epoch_ > 0 && state_.global_step < total_steps_) return;
  int64_t lost = 0;
  if (writes_files()) {
    lost = 1;
    std::ifstream in(config_.output_dir + "/log.txt");
    for (std::string line; lost && std::getline(in, line);) {
      const nlohmann::json r = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      try {  // (value() throws for a field of another type: such a row is not the epoch's)
        if (r.is_object() && !r.value("before_training", false) && r.value("epoch", int64_t{-2}) == epoch) lost = 0;
      } catch (const nlohmann::json::exception&) {
      }
    }
  }
  if (!decided_by_rank0(lost)) return;
  // The weights are the epoch's end only if nothing trained after it (a run stopped by its budget
  // later saves this row again, from a later step).
  const bool evaluate =
      knn_ && config_.knn_freq > 0 && state_.last_epoch_knn_due && state_.last_epoch_row_step == state_.global_step;
  if (evaluate) {
    EpochStats measured;
    KnnEvaluation knn = evaluate_knn();
    knn.into(&measured);
    add_to_last_epoch_row(measured);
    std::printf("kNN evaluation after epoch %lld (run again: the previous run stopped during it): %s (%.1f s)\n",
                static_cast<long long>(epoch), knn.text().c_str(), knn.seconds);
  }
  append_log_row(nlohmann::ordered_json::parse(state_.last_epoch_row));
  std::printf(
      "Resuming: log.txt had no row for epoch %lld (the previous run stopped after saving it%s); written "
      "from the checkpoint%s\n",
      static_cast<long long>(epoch), state_.last_epoch_knn_due ? ", during its kNN evaluation" : "",
      evaluate ? " with the evaluation run again" : ", without a kNN evaluation");
}

void Trainer::trim_logs_to_checkpoint() {
  if (!writes_files()) return;
  const auto trim = [](const std::string& path, const std::function<bool(const nlohmann::json&)>& keep) {
    std::ifstream in(path);
    if (!in.good()) return;
    std::string kept, line;
    int64_t dropped = 0;
    while (std::getline(in, line)) {
      const nlohmann::json row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      bool kept_row = false;
      try {  // a row whose fields have other types (edited by hand) is dropped as a damaged line
        kept_row = !row.is_discarded() && row.is_object() && keep(row);
      } catch (const nlohmann::json::exception&) {
      }
      if (kept_row) {
        kept += line + "\n";
      } else if (!line.empty()) {
        ++dropped;
      }
    }
    in.close();
    if (dropped == 0) return;
    write_file_atomically(path, kept);
    std::printf("Resuming: %lld line%s of %s from after the checkpoint (or cut off or damaged) dropped\n",
                static_cast<long long>(dropped), dropped == 1 ? "" : "s", path.c_str());
  };
  const int64_t step = state_.global_step, epoch = state_.epoch;
  const bool inside_epoch = step_in_epoch_ > 0;
  trim(config_.output_dir + "/steps.jsonl",
       [&](const nlohmann::json& row) { return row.value("step", int64_t{0}) <= step; });
  trim(config_.output_dir + "/log.txt", [&](const nlohmann::json& row) {
    // An evaluation before training at this checkpoint's step came from a run that started here and
    // is now run again.
    if (row.value("before_training", false)) return row.value("global_step", int64_t{0}) < step;
    // Epochs before the checkpoint's; its own only when it holds the epoch's end (--max_steps ended
    // the schedule inside it), after which nothing runs again.
    const int64_t e = row.value("epoch", int64_t{-1});
    return e < epoch || (e == epoch && inside_epoch && step >= total_steps_);
  });
}

void Trainer::append_log_row(const nlohmann::ordered_json& row) {
  if (!writes_files()) return;
  std::ofstream out(config_.output_dir + "/log.txt", std::ios::app);
  BAM_CHECK(out.good(), "{}/log.txt: cannot open for appending", config_.output_dir);
  out << row.dump() << "\n";
  out.flush();
  // The checkpoint holds the epoch's row: a resume writes it again (restore_lost_epoch_row).
  BAM_CHECK(out.good(),
            "{}/log.txt: the epoch's row could not be written (disk full?); the checkpoint keeps it, "
            "and a resume writes it",
            config_.output_dir);
}

void Trainer::append_before_training_row(const KnnEvaluation& knn) {
  EpochStats measured;
  knn.into(&measured);
  nlohmann::ordered_json j;
  add_measured_fields(j, measured);
  j["epoch"] = state_.epoch - 1;
  j["global_step"] = state_.global_step;
  j["before_training"] = true;
  append_log_row(j);
}

}  // namespace bam
