// Training: a short run on synthetic data lowers the loss without collapsing; checkpoints round
// trip bit-exactly; resuming (after whole epochs or mid-epoch) reproduces the uninterrupted run's
// losses, and writes the log row of an epoch whose kNN evaluation was cut short; a non-finite loss
// stops the run and leaves the last checkpoint intact; export writes a timm-named backbone; bad
// flags are rejected with the flag named; the output folder is made (or refused) first. (Runs
// fitted to a time budget are in test_time_budget.cpp.)

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <set>

#include "bam/output_dir.h"
#include "bam/report.h"
#include "bam/trainer.h"
#include "engine/safetensors.h"
#include "tests/support.h"
#include "tests/train_test_support.h"

namespace bam::test {
namespace {

std::string fresh_dir(const std::string& name) { return scratch_dir("train/" + name).string(); }

}  // namespace

TEST_CASE("a short run lowers the loss and does not collapse") {
  TrainConfig c = small_train_config(fresh_dir("short"));
  c.epochs = 6;
  c.data_path = "synthetic:128";
  c.log_freq = 1;
  TrainResult r = train(c);
  REQUIRE(r.epochs.size() == 6);
  MESSAGE("loss by epoch: " << r.epochs.front().loss << " -> " << r.epochs.back().loss);
  CHECK(r.epochs.back().loss < r.epochs.front().loss - 0.1);
  CHECK(r.epochs.back().embedding_std > 0.3);  // collapse would drive this to 0
  CHECK(r.epochs.back().target_entropy > 0.5);
  // log.txt has one JSON object per epoch with DINO's keys; the learning rate and weight decay are
  // the epoch's means over its steps (steps.jsonl has each step's), as DINO logs them.
  std::vector<double> lr_sum(6), wd_sum(6), steps(6), last_lr(6);
  std::ifstream step_log(c.output_dir + "/steps.jsonl");
  for (std::string line; std::getline(step_log, line);) {
    auto j = nlohmann::json::parse(line);
    const auto e = j.at("epoch").get<size_t>();
    REQUIRE(e < 6);
    lr_sum[e] += j.at("lr").get<double>();
    last_lr[e] = j.at("lr").get<double>();
    wd_sum[e] += j.at("wd").get<double>();
    ++steps[e];
  }
  std::ifstream log(c.output_dir + "/log.txt");
  int lines = 0;
  for (std::string line; std::getline(log, line); ++lines) {
    auto j = nlohmann::json::parse(line);
    CHECK(j.contains("train_loss"));
    CHECK(j.at("epoch") == lines);
    REQUIRE(steps[lines] == 8);
    CHECK(j.at("train_lr").get<double>() == doctest::Approx(lr_sum[lines] / 8).epsilon(1e-12));
    CHECK(j.at("train_wd").get<double>() == doctest::Approx(wd_sum[lines] / 8).epsilon(1e-12));
  }
  CHECK(lines == 6);
  // The warm-up's epoch: its mean learning rate is below its last step's (which it logged).
  CHECK(r.epochs[0].lr < 0.9 * last_lr[0]);
}

TEST_CASE("bf16 on the CPU (GEMM operands rounded) tracks the f32 run's loss") {
  TrainConfig c = small_train_config(fresh_dir("precision_f32"));
  c.epochs = 6;
  c.data_path = "synthetic:128";
  const TrainResult f32 = train(c);
  c.output_dir = fresh_dir("precision_bf16");
  c.precision = "bf16";
  const TrainResult bf16 = train(c);
  REQUIRE(f32.epochs.size() == bf16.epochs.size());
  for (size_t e = 0; e < f32.epochs.size(); ++e) {
    MESSAGE("epoch ", e, ": f32 loss ", f32.epochs[e].loss, ", bf16 loss ", bf16.epochs[e].loss);
    CHECK(std::abs(bf16.epochs[e].loss - f32.epochs[e].loss) < 0.02 * std::abs(f32.epochs[e].loss));
  }
  // The same run, not a copy of it: the rounding changed the numbers.
  CHECK(bf16.epochs.back().loss != f32.epochs.back().loss);
  CHECK(bf16.epochs.back().loss < bf16.epochs.front().loss - 0.1);
}

TEST_CASE("checkpoints round trip and resume reproduces the uninterrupted run") {
  TrainConfig full = small_train_config(fresh_dir("full"));
  full.teacher = true;
  TrainResult reference = train(full);
  REQUIRE(reference.step_losses.size() == 12);

  // Stop after 2 epochs, then resume to 3.
  TrainConfig first = small_train_config(fresh_dir("resume"));
  first.teacher = true;
  first.epochs = 3;
  TrainConfig two = first;
  two.time_budget_minutes = 0;
  {
    // Train 2 epochs of a 3-epoch schedule: simulate a stop by running with a trainer whose
    // data/schedule is the full one and interrupting via a tiny time budget after the first step.
    TrainConfig budget = first;
    budget.time_budget_minutes = 1e-9;  // stops after the first step, mid-epoch
    TrainResult part = train(budget);
    CHECK(part.stopped_by_budget);
    REQUIRE(part.step_losses.size() == 1);
    CHECK(part.step_losses[0] == reference.step_losses[0]);
  }
  TrainResult rest = train(first);
  CHECK(rest.resumed);
  REQUIRE(rest.step_losses.size() == 11);
  for (size_t i = 0; i < rest.step_losses.size(); ++i) {
    CAPTURE(i);
    CHECK(rest.step_losses[i] == reference.step_losses[i + 1]);  // bit-identical on the CPU
  }
  // The final weights agree too.
  auto a = load_checkpoint(full.output_dir + "/checkpoint.safetensors");
  auto b = load_checkpoint(first.output_dir + "/checkpoint.safetensors");
  REQUIRE(a.student.size() == b.student.size());
  for (size_t i = 0; i < a.student.size(); ++i)
    CHECK(a.student[i].second.to_vector<float>() == b.student[i].second.to_vector<float>());
  CHECK(a.state.epoch == 3);
  CHECK(a.state.global_step == 12);
  CHECK(a.teacher.size() == a.student.size());
  CHECK(!a.optimizer.empty());
  CHECK(a.metadata.at("format") == "pt");

  // A run that --max_steps ended inside an epoch, resumed with a longer schedule, continues that
  // epoch where it stopped (it used to count the epoch as done and skip its remaining steps).
  TrainConfig short_run = small_train_config(fresh_dir("max_steps_resume"));
  short_run.epochs = 3;
  short_run.max_steps = 6;  // epoch 0 (4 steps) and 2 of epoch 1's
  REQUIRE(train(short_run).step_losses.size() == 6);
  CHECK(load_checkpoint(short_run.output_dir + "/checkpoint.safetensors").state.epoch == 1);
  CHECK(train(short_run).step_losses.empty());  // the same schedule again: already done
  TrainConfig longer = short_run;
  longer.max_steps = 0;
  const TrainResult continued = train(longer);
  CHECK(continued.step_losses.size() == 6);  // epoch 1's last 2 steps and epoch 2
  const auto done = load_checkpoint(longer.output_dir + "/checkpoint.safetensors");
  CHECK(done.state.epoch == 3);
  CHECK(done.state.global_step == 12);

  // Resuming with another architecture is refused, naming the flag.
  TrainConfig other = first;
  other.embed_dim = 48;
  other.epochs = 4;
  CHECK_THROWS_WITH_AS(Trainer(other, make_train_data(other)).run(), doctest::Contains("--arch"), Error);
}

TEST_CASE("--eval_first and --teacher: the kNN monitor sees both backbones, and log.txt keeps each evaluation") {
  TrainConfig c = small_train_config(fresh_dir("knn_teacher"));
  c.epochs = 2;
  c.teacher = true;
  c.knn_freq = 1;
  c.eval_first = true;
  std::vector<std::string> seen;
  const VisionTransformer* student_backbone = nullptr;
  KnnMonitor monitor = [&](const VisionTransformer& backbone) {
    const bool student = &backbone == student_backbone;
    seen.push_back(student ? "student" : "teacher");
    return student ? KnnResult{10.0, 20.0} : KnnResult{30.0, 40.0};
  };
  Trainer trainer(c, make_train_data(c), monitor);
  student_backbone = trainer.student().backbone.get();
  TrainResult r = trainer.run();
  // Before training the student only (the teacher is its copy: the same result, logged for both),
  // then after each of the two epochs the student and the teacher.
  CHECK(seen == std::vector<std::string>{"student", "student", "teacher", "student", "teacher"});
  REQUIRE(r.epochs.size() == 2);
  CHECK(r.epochs[1].knn_top1 == 10.0);
  CHECK(r.epochs[1].teacher_knn_top5 == 40.0);
  std::ifstream log(c.output_dir + "/log.txt");
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(log, line);) rows.push_back(nlohmann::json::parse(line));
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].at("epoch") == -1);
  CHECK(rows[0].at("before_training") == true);
  CHECK(!rows[0].contains("train_loss"));
  CHECK(rows[0].at("knn_top1") == 10.0);
  CHECK(rows[0].at("teacher_knn_top1") == 10.0);
  CHECK(rows[0].at("teacher_knn_top5") == 20.0);
  for (int i = 1; i < 3; ++i) {
    CAPTURE(i);
    CHECK(rows[i].at("knn_top1") == 10.0);
    CHECK(rows[i].at("teacher_knn_top1") == 30.0);
    CHECK(rows[i].at("teacher_knn_top5") == 40.0);
  }
  CHECK(rows[0].at("global_step") == 0);
  CHECK(rows[2].at("epoch") == 1);
  // Run again, the finished run resumes, trains nothing and evaluates nothing.
  Trainer again(c, make_train_data(c), monitor);
  student_backbone = again.student().backbone.get();
  again.run();
  CHECK(seen.size() == 5);
  // The report plots the teacher's curve beside the student's.
  std::ifstream report(c.output_dir + "/report.html");
  const std::string html((std::istreambuf_iterator<char>(report)), {});
  CHECK(html.find("teacher top-1") != std::string::npos);
}

TEST_CASE("the report leaves out the rows it cannot plot and says when the checkpoint is unreadable") {
  const std::string dir = fresh_dir("report_damaged");
  std::filesystem::create_directories(dir);
  // An edited log: a string where a number goes, values whose range would overflow, a cut line,
  // a line that is not an object, a flag of another type.
  std::ofstream(dir + "/log.txt") << R"({"epoch":"x","train_loss":1})"
                                  << "\n"
                                  << "7\n"
                                  << R"({"before_training":1,"global_step":"x"})"
                                  << "\n"
                                  << R"({"epoch":0,"train_loss":5.5})"
                                  << "\n"
                                  << R"({"epoch":1,"train_loss":1e308})"
                                  << "\n"
                                  << R"({"epoch":2,"train_loss":-1e308})"
                                  << "\n"
                                  << R"({"epoch":3,"train_loss":4.5})"
                                  << "\n"
                                  << R"({"epoch":4,"tra)";
  std::ofstream(dir + "/checkpoint.safetensors") << std::string(1000, 'x');
  const std::string path = write_training_report(dir);
  std::ifstream in(path);
  const std::string html((std::istreambuf_iterator<char>(in)), {});
  CHECK(html.find("Checkpoint unreadable: " + dir + "/checkpoint.safetensors") != std::string::npos);
  CHECK(html.find("nan") == std::string::npos);
  CHECK(html.find("inf") == std::string::npos);
  CHECK(html.find("5.5") != std::string::npos);  // the loss chart's range: the two finite rows
}

// A resumed run's evaluation before training (--eval_first) measured weights from inside the epoch
// after its row's: the kNN chart leaves it out (a new run's, at step 0, stays).
TEST_CASE("the report's kNN chart leaves out a resumed run's evaluation before training") {
  const std::string dir = fresh_dir("report_resumed_eval");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/log.txt")
      << R"({"knn_top1":10,"knn_top5":20,"epoch":-1,"global_step":0,"before_training":true})"
      << "\n"
      << R"({"train_loss":5,"knn_top1":30,"knn_top5":40,"epoch":0})"
      << "\n"
      << R"({"knn_top1":7000,"knn_top5":8000,"epoch":0,"global_step":7,"before_training":true})"
      << "\n";
  std::ifstream in(write_training_report(dir));
  const std::string html((std::istreambuf_iterator<char>(in)), {});
  const size_t chart = html.find("kNN accuracy");
  REQUIRE(chart != std::string::npos);
  const std::string knn = html.substr(chart, html.find("</svg>", chart) - chart);
  // The y axis spans the new run's values, 10 to 40, padded by 5 %: its top tick is 41.5 (with
  // the resumed evaluation's 8000 it was 8400).
  CHECK(knn.find(">41.5<") != std::string::npos);
  CHECK(knn.find(">8400<") == std::string::npos);
}

TEST_CASE("a kNN evaluation that fails after an epoch leaves that epoch saved") {
  TrainConfig c = small_train_config(fresh_dir("knn_fails"));
  c.epochs = 2;
  c.knn_freq = 1;
  KnnMonitor failing = [](const VisionTransformer&) -> KnnResult {
    throw Error("kNN monitor: /mnt/val: no such file or folder");
  };
  Trainer trainer(c, make_train_data(c), failing);
  CHECK_THROWS_WITH_AS(trainer.run(), doctest::Contains("/mnt/val"), Error);
  const LoadedCheckpoint ck = load_checkpoint(c.output_dir + "/checkpoint.safetensors");
  CHECK(ck.state.epoch == 1);  // epoch 0 trained and kept; a run again resumes at epoch 1
}

TEST_CASE("a run stopped during the kNN evaluation after an epoch gets that epoch's log row on resume") {
  TrainConfig c = small_train_config(fresh_dir("knn_stopped"));
  c.epochs = 2;
  c.knn_freq = 1;
  // Figures that follow the weights: the same weights, evaluated again, give the same row.
  int calls = 0;
  KnnMonitor monitor = [&](const VisionTransformer& backbone) {
    ++calls;
    double s = 0;
    for (const Tensor& p : backbone.parameters()) s += sum(p.detach().to(DType::f64)).item();
    return KnnResult{s, s + 1};
  };
  const std::string log_path = c.output_dir + "/log.txt";
  const auto read_lines = [&] {
    std::vector<std::string> lines;
    std::ifstream in(log_path);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  };
  // What a run killed during epoch 1's evaluation leaves: epoch 1 saved, its row never written.
  const auto stop_during_last_evaluation = [&] {
    std::vector<std::string> lines = read_lines();
    REQUIRE(lines.size() == 2);
    std::ofstream(log_path, std::ios::trunc) << lines[0] << "\n";
    return lines;
  };
  Trainer(c, make_train_data(c), monitor).run();
  CHECK(calls == 2);
  const std::vector<std::string> whole = stop_during_last_evaluation();
  CHECK(nlohmann::json::parse(whole[1]).contains("knn_top1"));
  // The resume evaluates epoch 1's weights (the checkpoint's) again and writes the row it lost.
  calls = 0;
  Trainer(c, make_train_data(c), monitor).run();
  CHECK(calls == 1);
  CHECK(read_lines() == whole);
  // Run again, nothing is lost: no evaluation, no second row.
  Trainer(c, make_train_data(c), monitor).run();
  CHECK(calls == 1);
  CHECK(read_lines() == whole);
  // Resumed without the monitor: the row comes back without the evaluation it missed.
  stop_during_last_evaluation();
  c.knn_freq = 0;
  Trainer(c, make_train_data(c)).run();
  const std::vector<std::string> lines = read_lines();
  REQUIRE(lines.size() == 2);
  nlohmann::json expected = nlohmann::json::parse(whole[1]);
  for (const char* key : {"knn_top1", "knn_top5"}) expected.erase(key);
  CHECK(nlohmann::json::parse(lines[1]) == expected);
}

TEST_CASE("a resumed run drops the log rows an interrupted run wrote after its checkpoint, and cut-off lines") {
  TrainConfig c = small_train_config(fresh_dir("log_trim"));
  c.epochs = 3;
  c.log_freq = 1;
  c.knn_freq = 1;
  // Epochs 0 and 1 train; the evaluation after epoch 1 fails, after epoch 1 was saved.
  int calls = 0;
  KnnMonitor fails_second = [&](const VisionTransformer&) -> KnnResult {
    if (++calls == 2) throw Error("kNN monitor: the val folder is gone");
    return KnnResult{50.0, 90.0};
  };
  CHECK_THROWS_AS(Trainer(c, make_train_data(c), fails_second).run(), Error);
  // As if a later run had gone on from that checkpoint, logged two steps and epoch 2, and died
  // mid-line before saving.
  {
    std::ofstream steps(c.output_dir + "/steps.jsonl", std::ios::app);
    steps << R"({"epoch":2,"step":9,"loss":1.0})"
          << "\n"
          << R"({"epoch":2,"step":10,"loss":1.0})"
          << "\n"
          << R"({"epoch":2,"st)";
    std::ofstream log(c.output_dir + "/log.txt", std::ios::app);
    log << R"({"train_loss":1.0,"epoch":2})"
        << "\n";
    // Rows edited by hand, with fields of other types (they stopped the resume with a bare JSON
    // type error): dropped as damaged lines.
    log << R"({"epoch":"3"})"
        << "\n"
        << R"({"before_training":1})"
        << "\n"
        << "7\n";
  }
  c.knn_freq = 0;
  const TrainResult rest = train(c);
  CHECK(rest.step_losses.size() == 4);  // epoch 2
  std::vector<int64_t> steps, epochs;
  std::ifstream step_rows(c.output_dir + "/steps.jsonl");
  for (std::string line; std::getline(step_rows, line);) steps.push_back(nlohmann::json::parse(line).at("step"));
  CHECK(steps == std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  std::ifstream log_rows(c.output_dir + "/log.txt");
  for (std::string line; std::getline(log_rows, line);) epochs.push_back(nlohmann::json::parse(line).at("epoch"));
  CHECK(epochs == std::vector<int64_t>{0, 1, 2});  // epoch 1's row without its failed evaluation; epoch 2 once
}

namespace {
std::vector<int64_t> column_of(const std::string& path, const char* key) {
  std::vector<int64_t> values;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) values.push_back(nlohmann::json::parse(line).at(key));
  return values;
}
}  // namespace

TEST_CASE("log rows: a --max_steps run extended writes its cut epoch once, the run's last step is logged") {
  // 4 steps an epoch: --max_steps 6 ends inside epoch 1, whose short row a longer resume replaces
  // (it was written back from the checkpoint, then again at the epoch's end: epochs 0, 1, 1, 2).
  TrainConfig c = small_train_config(fresh_dir("max_steps_longer"));
  c.epochs = 3;
  c.max_steps = 6;
  c.log_freq = 4;
  c.knn_freq = 0;
  train(c);
  CHECK(column_of(c.output_dir + "/steps.jsonl", "step") == std::vector<int64_t>{4, 6});  // 6: the run's last
  c.max_steps = 10;
  CHECK(train(c).resumed);
  CHECK(column_of(c.output_dir + "/log.txt", "epoch") == std::vector<int64_t>{0, 1, 2});
  CHECK(column_of(c.output_dir + "/steps.jsonl", "step") == std::vector<int64_t>{4, 6, 8, 10});
}

TEST_CASE("bamtrain removes the half-written files of its own that a crash left, and no one else's") {
  TrainConfig c = small_train_config(fresh_dir("abandoned_files"));
  c.epochs = 1;
  c.max_steps = 1;
  c.knn_freq = 0;
  std::filesystem::create_directories(c.output_dir);
  // Left by writers that no longer run (no process has these ids: they are above Linux's limit).
  const std::vector<std::string> ours = {"checkpoint.safetensors.tmp.4194999", "checkpoint0040.safetensors.tmp.4194998",
                                         "log.txt.tmp.4194997", "checkpoint.timing.tmp.4194996.tmp.4194996"};
  const std::vector<std::string> theirs = {"dataset.tar.tmp.4194999", "checkpoint_mine.pth.tmp.4194999",
                                           "checkpoint00x1.safetensors.tmp.4194999"};
  for (const auto& names : {ours, theirs})
    for (const std::string& name : names) std::ofstream(c.output_dir + "/" + name) << "x";
  train(c);
  for (const std::string& name : ours) CHECK_MESSAGE(!std::filesystem::exists(c.output_dir + "/" + name), name);
  for (const std::string& name : theirs) CHECK_MESSAGE(std::filesystem::exists(c.output_dir + "/" + name), name);
}

TEST_CASE("a new run moves aside the logs of an earlier run that left no checkpoint") {
  TrainConfig c = small_train_config(fresh_dir("old_logs"));
  c.epochs = 1;
  c.knn_freq = 0;
  std::filesystem::create_directories(c.output_dir);
  std::ofstream(c.output_dir + "/log.txt") << R"({"train_loss":9.0,"epoch":0})"
                                           << "\n";
  std::ofstream(c.output_dir + "/steps.jsonl") << R"({"epoch":0,"step":3,"loss":9.0})"
                                               << "\n";
  CHECK_FALSE(train(c).resumed);
  CHECK(column_of(c.output_dir + "/log.txt.old", "epoch") == std::vector<int64_t>{0});
  CHECK(column_of(c.output_dir + "/steps.jsonl.old", "step") == std::vector<int64_t>{3});
  std::ifstream log(c.output_dir + "/log.txt");
  const std::string first((std::istreambuf_iterator<char>(log)), {});
  CHECK(first.find("9.0") == std::string::npos);  // this run's rows alone
  // Again, with its checkpoint removed: the logs go to .old.2 (.old is taken), and its numbered
  // checkpoint, which the new run would overwrite, aside too.
  const std::string earlier = read_file(c.output_dir + "/checkpoint.safetensors");
  std::filesystem::rename(c.output_dir + "/checkpoint.safetensors", c.output_dir + "/checkpoint0000.safetensors");
  c.saveckp_freq = 1;
  c.seed = 5;  // another run: other weights
  CHECK_FALSE(train(c).resumed);
  CHECK(column_of(c.output_dir + "/log.txt.old", "epoch") == std::vector<int64_t>{0});  // untouched
  CHECK(std::filesystem::exists(c.output_dir + "/log.txt.old.2"));
  CHECK(std::filesystem::exists(c.output_dir + "/steps.jsonl.old.2"));
  CHECK(read_file(c.output_dir + "/checkpoint0000.safetensors.old") == earlier);
  CHECK(read_file(c.output_dir + "/checkpoint0000.safetensors") != earlier);  // this run's
}

TEST_CASE("export writes the backbone under timm names") {
  TrainConfig c = small_train_config(fresh_dir("export"));
  c.epochs = 1;
  train(c);
  auto ck = load_checkpoint(c.output_dir + "/checkpoint.safetensors");
  NamedTensors backbone = backbone_from_checkpoint(ck, false);
  std::set<std::string> names;
  for (auto& [name, t] : backbone) names.insert(name);
  CHECK(names.count("cls_token"));
  CHECK(names.count("pos_embed"));
  CHECK(names.count("patch_embed.proj.weight"));
  CHECK(names.count("blocks.1.attn.qkv.weight"));
  CHECK(names.count("norm.bias"));
  for (auto& n : names) CHECK(n.find("head") == std::string::npos);
  CHECK_THROWS_WITH_AS(backbone_from_checkpoint(ck, true), doctest::Contains("--teacher true"), Error);
}

TEST_CASE("a damaged or doctored checkpoint is refused by name before it is trained on or exported") {
  TrainConfig c = small_train_config(fresh_dir("doctored"));
  c.epochs = 1;
  train(c);
  c.epochs = 2;
  const std::string path = c.output_dir + "/checkpoint.safetensors";
  const SafetensorsFile good = load_safetensors(path);
  // The checkpoint with `edit` applied: resuming from it and exporting its backbone fail (as `in`
  // says), naming the file and `fragment`.
  enum class In { resume, exporting, both };
  const auto refused = [&](const char* fragment, const std::function<void(SafetensorsFile&)>& edit,
                           In in = In::resume) {
    SafetensorsFile f = good;
    edit(f);
    save_safetensors(path, f.tensors, f.metadata);
    std::vector<std::string> errors;
    if (in != In::exporting) errors.push_back(error_of([&] { train(c); }));
    if (in != In::resume) errors.push_back(error_of([&] { backbone_for_export(load_checkpoint(path), false); }));
    for (const std::string& error : errors) {
      CHECK_MESSAGE(error.find(path) != std::string::npos, error);
      CHECK_MESSAGE(error.find(fragment) != std::string::npos, error);
    }
  };
  const auto drop = [](SafetensorsFile& f, const std::string& name) {
    std::erase_if(f.tensors, [&](const auto& named) { return named.first == name; });
  };
  // Progress counters that cannot be (they sent the loader past the data).
  refused("corrupt checkpoint metadata: epoch -1", [](SafetensorsFile& f) { f.metadata["epoch"] = "-1"; });
  refused("4 steps done, 1000 optimizer steps", [](SafetensorsFile& f) { f.metadata["optimizer_steps"] = "1000"; });
  refused("the checkpoint is 1000 steps into an epoch",
          [](SafetensorsFile& f) { f.metadata["step_in_epoch"] = "1000"; });
  // Arguments no run could have had (a patch size of 0 divided by zero in the shape check), and a
  // loss scale that would skip every fp16 step.
  const auto edit_args = [](const char* key, nlohmann::json value) {
    return [key, value](SafetensorsFile& f) {
      nlohmann::json args = nlohmann::json::parse(f.metadata["args"]);
      args[key] = value;
      f.metadata["args"] = args.dump();
    };
  };
  refused("its args are not a valid run's: --patch_size must be in [1, 64], got 0", edit_args("patch_size", 0),
          In::both);
  refused("its args are not a valid run's: --loc_interval must be at least 1", edit_args("loc_interval", 0));
  refused(
      "loss_scale inf is not 0 (none) or a finite scale", [](SafetensorsFile& f) { f.metadata["loss_scale"] = "inf"; },
      In::both);
  // Tensors that belong nowhere, or are missing.
  refused("unexpected tensor 'weird.tensor'",
          [](SafetensorsFile& f) { f.tensors.emplace_back("weird.tensor", ones({2})); });
  refused("holds teacher weights, but this run has no teacher", [](SafetensorsFile& f) {
    f.tensors.emplace_back("teacher.backbone.cls_token", zeros({1, 1, 32}));
  });
  refused("optimizer state 'backbone.nothing.exp_avg' belongs to no parameter",
          [](SafetensorsFile& f) { f.tensors.emplace_back("optimizer.backbone.nothing.exp_avg", ones({2})); });
  refused("no optimizer state after 4 optimizer steps", [&](SafetensorsFile& f) {
    std::erase_if(f.tensors, [](const auto& named) { return named.first.rfind("optimizer.", 0) == 0; });
  });
  refused(
      "blocks.1.mlp.fc2.weight' is missing",
      [&](SafetensorsFile& f) { drop(f, "student.backbone.blocks.1.mlp.fc2.weight"); }, In::both);
  refused(
      "the weights hold 1 blocks, the configuration 2",
      [&](SafetensorsFile& f) {
        std::erase_if(f.tensors, [](const auto& named) { return named.first.find(".blocks.1.") != std::string::npos; });
      },
      In::exporting);
  // Integers where weights were (copy_ would convert their values): the type is named.
  refused(
      "norm.weight' is i32 in the source but f32 here",
      [](SafetensorsFile& f) {
        for (auto& [name, t] : f.tensors)
          if (name == "student.backbone.norm.weight") t = t.to(DType::i32);
      },
      In::both);
  // The weights of a diverged run (bamtrain no longer saves them; an older one did): the tensor
  // is named with its count, for training, evaluating and exporting alike.
  const auto poisoned = [](const std::string& target, float value) {
    return [target, value](SafetensorsFile& f) {
      for (auto& [name, t] : f.tensors)
        if (name == target) {
          t = t.contiguous().clone();
          t.data<float>()[1] = value;
        }
    };
  };
  refused("student.backbone.blocks.0.attn.qkv.weight (1 of 3072 values) is NaN or infinite",
          poisoned("student.backbone.blocks.0.attn.qkv.weight", std::numeric_limits<float>::quiet_NaN()), In::both);
  refused("optimizer.backbone.pos_embed.exp_avg (1 of", poisoned("optimizer.backbone.pos_embed.exp_avg", INFINITY));
  // A run of another projector activation is another network, with the same weights.
  save_safetensors(path, good.tensors, good.metadata);
  c.proj_act = c.proj_act == "gelu" ? "relu" : "gelu";
  CHECK_THROWS_WITH_AS(train(c), doctest::Contains("different --proj_act"), Error);
}

TEST_CASE("a non-finite loss stops the run and keeps the last checkpoint") {
  TrainConfig c = small_train_config(fresh_dir("nan"));
  c.epochs = 1;
  train(c);
  std::string path = c.output_dir + "/checkpoint.safetensors";
  auto before = std::filesystem::last_write_time(path);
  const std::string bytes_before = read_file(path);
  // An absurd learning rate blows the weights up within a step or two.
  TrainConfig wild = c;
  wild.epochs = 3;
  wild.lr = 1e30;
  wild.clip_grad = 0;
  CHECK_THROWS_WITH_AS(train(wild), doctest::Contains("non-finite"), Error);
  CHECK(read_file(path) == bytes_before);
  CHECK(std::filesystem::last_write_time(path) == before);
}

TEST_CASE("weights an update overflowed are never saved: the last checkpoint stays") {
  // A learning rate past the float range turns the weights infinite in the first update, whose
  // loss and gradients were finite; with one step per epoch the epoch's checkpoint comes next.
  TrainConfig c = small_train_config(fresh_dir("overflowed_weights"));
  c.data_path = "synthetic:16";  // one step per epoch
  c.epochs = 1;
  c.warmup_epochs = 0;
  train(c);
  const std::string path = c.output_dir + "/checkpoint.safetensors";
  const std::string bytes_before = read_file(path);
  TrainConfig wild = c;
  wild.epochs = 3;
  wild.lr = 1e40;
  wild.clip_grad = 0;
  wild.saveckp_freq = 1;
  const std::string message = error_of([&] { train(wild); });
  // (The numbered copy is saved first, and refused first.)
  CHECK_MESSAGE(message.find("/checkpoint0001.safetensors: not saved, as student.") != std::string::npos, message);
  CHECK_MESSAGE(message.find("is NaN or infinite after step 2") != std::string::npos, message);
  CHECK(read_file(path) == bytes_before);
  CHECK(!std::filesystem::exists(c.output_dir + "/checkpoint0001.safetensors"));  // nor a numbered copy
  CHECK_NOTHROW(load_checkpoint(path));                                           // still whole, and finite
}

TEST_CASE("a non-finite gradient under a finite loss stops the run before the weights change, in f32") {
  // A temperature of 1e-38 keeps the loss finite (about 4e37) while its gradient, 1/temperature
  // times larger, overflows f32 within the first steps. Applied, it would make every weight NaN,
  // and an epoch that ended on that step would save them as its checkpoint (the epochs here are 2
  // steps long).
  struct Clip {
    double max;
    const char* mode;
  };
  for (const Clip clip : {Clip{0, "global"}, Clip{3.0, "global"}, Clip{3.0, "param"}}) {
    CAPTURE(clip.max);
    CAPTURE(clip.mode);
    TrainConfig c = small_train_config(fresh_dir("nan_gradient"));
    c.data_path = "synthetic:32";
    c.clip_grad = clip.max;
    c.clip_mode = clip.mode;
    c.drop_path_rate = 0;
    c.epochs = 1;
    train(c);  // one clean epoch, so that there is a checkpoint to keep finite
    TrainConfig wild = c;
    wild.epochs = 3;
    wild.temperature = 1e-38;
    CHECK_THROWS_WITH_AS(train(wild), doctest::Contains("non-finite gradient (the loss, "), Error);
    const std::string path = c.output_dir + "/checkpoint.safetensors";
    REQUIRE(std::filesystem::exists(path));
    for (const auto& [name, t] : load_safetensors(path).tensors) {
      if (t.dtype() != DType::f32) continue;
      const float* v = t.data<float>();
      bool finite = true;
      for (int64_t i = 0; i < t.numel(); ++i) finite = finite && std::isfinite(v[i]);
      CHECK_MESSAGE(finite, name);
    }
  }
}

TEST_CASE("bad settings name the flag before any work") {
  TrainConfig c = small_train_config(fresh_dir("flags"));
  auto expect = [&](TrainConfig bad, const char* flag) {
    CAPTURE(flag);
    CHECK_THROWS_WITH_AS(bad.validate(), doctest::Contains(flag), Error);
  };
  TrainConfig t = c;
  t.lr = -1;
  expect(t, "--lr");
  t = c;
  t.arch = "resnet50";
  expect(t, "--arch");
  // A run shorter than the default warm-up is told what to change.
  t = c;
  t.epochs = 3;
  t.warmup_epochs = TrainConfig{}.warmup_epochs;
  expect(t, "--warmup_epochs must be in [0, --epochs] (--epochs 3), got 10 (its default");
  t.warmup_epochs = 4;  // given: no word of the default
  const std::string given = error_of([&] { t.validate(); });
  CHECK_MESSAGE(given.find("--warmup_epochs must be in [0, --epochs] (--epochs 3), got 4") != std::string::npos, given);
  CHECK_MESSAGE(given.find("default") == std::string::npos, given);
  t = c;
  t.global_crops_size = 18;
  expect(t, "--global_crops_size");
  t = c;
  t.precision = "fp16";  // (bf16 runs on the CPU: its GEMMs round their operands)
  expect(t, "--precision");
  t = c;
  t.optimizer = "adam";
  expect(t, "--optimizer");
  t = c;
  t.global_crops_scale = {0.5, 0.2};
  expect(t, "--global_crops_scale");
  t = c;
  t.top_k_sink = 1000;
  expect(t, "--top_k_sink");
  t = c;
  t.time_budget_minutes = std::numeric_limits<double>::infinity();  // overflowed the deadline
  expect(t, "--time_budget_minutes");
  t = c;
  t.data_path = "";
  expect(t, "--data_path");
  t = c;
  t.data_path = "/no/such/folder";
  CHECK_THROWS_WITH_AS(make_train_data(t), doctest::Contains("--data_path /no/such/folder"), Error);
  for (const char* bad : {"synthetic:16abc", "synthetic:0", "synthetic:-3", "synthetic:", "synthetic:1073741825"}) {
    t.data_path = bad;
    CHECK_THROWS_WITH_AS(make_train_data(t), doctest::Contains("expected synthetic:N with N a whole number of images"),
                         Error);
  }
  // Real-valued settings are finite: an infinite learning rate made every weight NaN in one step.
  const double inf = std::numeric_limits<double>::infinity();
  for (auto [flag, set] : std::vector<std::pair<const char*, std::function<void(TrainConfig&)>>>{
           {"--lr must be a finite number", [&](TrainConfig& x) { x.lr = inf; }},
           {"--min_lr must be a finite number", [&](TrainConfig& x) { x.min_lr = inf; }},
           {"--weight_decay_end must be a finite number", [&](TrainConfig& x) { x.weight_decay_end = inf; }},
           {"--reg must be a finite number", [&](TrainConfig& x) { x.reg = inf; }},
           {"--clip_grad must be a finite number", [&](TrainConfig& x) { x.clip_grad = inf; }},
           {"--temperature must be a finite number", [&](TrainConfig& x) { x.temperature = inf; }},
           {"(the linear scaling rule) is not a finite number", [&](TrainConfig& x) { x.lr = 1e308; }},
           {"--reg_final must be positive (or -1", [&](TrainConfig& x) { x.reg_final = -0.05; }},
           {"--eval_resize_ratio must be from 1 to 4", [&](TrainConfig& x) { x.eval_resize_ratio = 1e9; }},
           {"--epochs must be from 1 to 1000000000", [&](TrainConfig& x) { x.epochs = int64_t{1} << 62; }},
       }) {
    t = c;
    set(t);
    expect(t, flag);
  }
  t = c;
  t.reg_final = -1;  // the default: the same as --reg
  CHECK_NOTHROW(t.validate());
}

TEST_CASE("the output folder is made, or refused with the flag named, before any work") {
  const std::string root = fresh_dir("output_dir");
  const std::string nested = root + "/a/b";
  const std::vector<std::string> made = prepare_output_dir(nested + "/");
  CHECK(std::filesystem::is_directory(nested));
  CHECK(std::filesystem::is_empty(nested));  // the write test leaves nothing behind
  CHECK(made.size() == 2);                   // b, then a: the folders to remove if the run is refused
  CHECK(prepare_output_dir(nested).empty());
  // Removing them after a refusal takes only folders still empty: a sibling another run made in
  // the meantime keeps its parent.
  std::filesystem::create_directories(root + "/a/other");
  remove_unused_output_dir(made);
  CHECK(!std::filesystem::exists(nested));
  CHECK(std::filesystem::is_directory(root + "/a/other"));
  std::filesystem::remove(root + "/a/other");
  std::filesystem::remove(root + "/a");
  remove_unused_output_dir(prepare_output_dir(nested));  // both made again, both removed
  CHECK(!std::filesystem::exists(root + "/a"));
  CHECK(std::filesystem::is_directory(root));
  prepare_output_dir(nested);
  const std::string file = root + "/a_file";
  std::ofstream(file) << "x";
  CHECK_THROWS_WITH_AS(prepare_output_dir(file), doctest::Contains(("--output_dir " + file).c_str()), Error);
  CHECK_THROWS_WITH_AS(prepare_output_dir(file + "/sub"), doctest::Contains("cannot create the folder"), Error);
  CHECK_THROWS_WITH_AS(prepare_output_dir(""), doctest::Contains("--output_dir is empty"), Error);
  // The trainer refuses it too, before it loads or trains anything.
  TrainConfig c = small_train_config(file + "/sub");
  Trainer trainer(c, make_train_data(c));
  CHECK_THROWS_WITH_AS(trainer.run(), doctest::Contains(("--output_dir " + file + "/sub").c_str()), Error);
}

}  // namespace bam::test
