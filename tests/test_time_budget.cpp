// Runs fitted to a time budget (--time_budget_minutes, --fit_epochs_to_budget): the fit counts the
// kNN monitor and checkpoint saves and the schedule completes; refits follow a machine that slows
// down or speeds up; the ETA counts the evaluations to come; the budget is kept at epoch ends; a
// finished fitted run is not given another budget; and every resume keeps the fitted schedule,
// saying which flags it does not follow. (ContrastiveCrop's schedule under a fit is in
// test_contrastive_crop.cpp; the fit's arithmetic in test_budget_fit.cpp.)

#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "bam/trainer.h"
#include "tests/support.h"
#include "tests/train_test_support.h"

namespace bam::test {
namespace {

std::string fresh_dir(const std::string& name) { return scratch_dir("budget/" + name).string(); }

// A run fitted to a budget of `minutes`, with steps so cheap (8 images of 16 px, a one-block
// model) that the test's pauses and monitors, not the machine's noisy step time, set its length;
// `images` synthetic images (8 a step), --epochs 1000 until the fit.
TrainConfig cheap_budget_config(const std::string& name, int64_t images, double minutes, int64_t knn_freq) {
  TrainConfig c = small_train_config(fresh_dir(name));
  c.embed_dim = 16;
  c.depth = 1;
  c.local_crops_number = 0;
  c.hidden_dim = 32;
  c.out_dim = 32;
  c.batch_size_per_gpu = 8;
  c.data_path = "synthetic:" + std::to_string(images);
  c.epochs = 1000;
  c.time_budget_minutes = minutes;
  c.fit_epochs_to_budget = true;
  c.knn_freq = knn_freq;
  return c;
}

// Passes batches through and keeps the run length the trainer last gave its data source.
class EpochsRecorder : public PassThroughData {
 public:
  EpochsRecorder(std::unique_ptr<TrainData> inner, int64_t* epochs)
      : PassThroughData(std::move(inner)), epochs_(epochs) {}
  void set_epochs(int64_t epochs) override { *epochs_ = epochs; }

 private:
  int64_t* epochs_;
};

}  // namespace

// --fit_epochs_to_budget counts the work between epochs: with a kNN monitor about as slow as an
// epoch (a small model on a GPU), a schedule fitted to the steps alone ran into the deadline well
// short of its end, its learning rate never annealed. The monitor here takes 0.4 s a call, and an
// epoch is 64 steps, more than the refit's window, so the refit cannot average the monitor in.
TEST_CASE("a budget-fitted schedule counts the kNN monitor and checkpoint time and completes") {
  // Cheap steps, so that the monitor's fixed 0.4 s rather than the step time, which a loaded machine
  // makes noisy, sets the schedule's length. 6 s.
  TrainConfig c = cheap_budget_config("budget", 512, 0.1, 1);
  // With a teacher each evaluation after an epoch calls the monitor twice, but the one before
  // training once (the teacher is the student's copy then): the fit must count both calls.
  c.teacher = true;
  int calls = 0;
  KnnMonitor slow_monitor = [&](const VisionTransformer&) {
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    return KnnResult{50.0, 90.0};
  };
  auto start = std::chrono::steady_clock::now();
  int64_t data_epochs = 0;
  Trainer trainer(c, std::make_unique<EpochsRecorder>(make_train_data(c), &data_epochs), slow_monitor);
  CHECK(data_epochs == 1000);  // --epochs, until the schedule is fitted
  TrainResult r = trainer.run();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE(r.epochs.size() << " epochs, " << calls << " kNN evaluations, " << seconds << " s for a 6 s budget");
  CHECK_FALSE(r.stopped_by_budget);  // the whole fitted schedule ran: warm-up, then the full decay
  CHECK(calls == 2 * static_cast<int>(r.epochs.size()) + 1);  // one before training, to measure it
  CHECK(r.epochs.size() >= 4);                                // nor planned short (about 10 fit here)
  // The loader was told the fitted length, so that it runs on into each next epoch up to there.
  CHECK(data_epochs == static_cast<int64_t>(r.epochs.size()));
  CHECK(seconds < 6.0 * 1.15 + 3.0);  // the budget, its deadline margin, and the step calibration
}

// The schedule fitted to a budget is refitted through the run from the steps' real times: when
// the machine slows down after the first refit, the run still completes its schedule (a fit kept
// from the early steps ran into the deadline, its learning rate never annealed), and when it
// speeds up, the run goes on to use the budget (a kept fit ended with much of it unspent).
TEST_CASE("a budget-fitted schedule follows a change of speed during the run") {
  for (const bool slows_down : {true, false}) {
    CAPTURE(slows_down);
    // Steps cheap beside the pauses, which set their time; 64 steps an epoch, 6 s.
    TrainConfig c = cheap_budget_config(slows_down ? "slower" : "faster", 512, 0.1, 0);
    // The calibration's 6 batches and 80 steps, past the first refit (at step 60 at the most), at
    // one speed; the rest at a speed 3 times lower or higher.
    const int first_ms = slows_down ? 4 : 12, then_ms = slows_down ? 12 : 4;
    auto start = std::chrono::steady_clock::now();
    Trainer trainer(c, std::make_unique<ChangingSpeedData>(make_train_data(c), first_ms, then_ms, 86));
    TrainResult r = trainer.run();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    MESSAGE(r.step_losses.size() << " steps in " << seconds << " s for a 6 s budget");
    CHECK_FALSE(r.stopped_by_budget);  // the whole schedule ran, to the end of its decay
    CHECK(seconds > 0.85 * 6.0);       // and it used the budget
    CHECK(seconds < 6.0 * 1.15 + 3.0);
  }
}

// The ETA of the progress line (and steps.jsonl's eta_s) counts the epoch ends to come: here a
// kNN evaluation of 0.3 s after each epoch, timed from the first one on. (It counted the steps
// left only, a few milliseconds.)
TEST_CASE("the ETA counts the kNN evaluations to come at what the last ones cost") {
  TrainConfig c = small_train_config(fresh_dir("eta"));  // 3 epochs of 4 steps
  c.knn_freq = 1;
  c.log_freq = 1;
  KnnMonitor slow = [](const VisionTransformer&) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    return KnnResult{10.0, 20.0};
  };
  Trainer trainer(c, make_train_data(c), slow);
  trainer.run();
  std::ifstream steps(c.output_dir + "/steps.jsonl");
  int lines = 0;
  for (std::string line; std::getline(steps, line); ++lines) {
    const auto j = nlohmann::json::parse(line);
    const int64_t epoch = j.at("epoch");
    const double eta = j.at("eta_s");
    CAPTURE(line);
    if (epoch >= 1) CHECK(eta >= 0.3 * static_cast<double>(3 - epoch));  // the evaluations left
  }
  CHECK(lines == 12);
}

TEST_CASE("the time budget is kept at epoch ends too, and a finished fitted run is not given another budget") {
  // One step an epoch: the budget was checked only between an epoch's steps, so it never stopped.
  TrainConfig c = cheap_budget_config("budget_epochs", 8, 0.01, 0);  // 0.6 s
  c.fit_epochs_to_budget = false;
  c.epochs = 100000;
  const auto start = std::chrono::steady_clock::now();
  const TrainResult r = train(c);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(r.stopped_by_budget);
  CHECK(seconds < 20);
  CHECK(r.step_losses.size() < 100000);

  TrainConfig fitted = cheap_budget_config("budget_complete", 64, 0.02, 0);
  bool complete = false;
  for (int run = 0; run < 5 && !complete; ++run) {  // a slow machine may pause it at its deadline first
    train(fitted);
    const auto ck = load_checkpoint(fitted.output_dir + "/checkpoint.safetensors");
    complete = ck.state.global_step >= ck.config.max_steps;
  }
  REQUIRE(complete);
  TrainConfig longer = fitted;
  longer.time_budget_minutes = 0.5;
  CHECK_THROWS_WITH_AS(train(longer), doctest::Contains("the checkpoint's run is complete"), Error);
  CHECK(train(fitted).step_losses.empty());  // the same budget: done, as before
}

TEST_CASE("a budget-fitted schedule is kept by every later resume, with or without the budget flags") {
  TrainConfig c = cheap_budget_config("fit_resume", 64, 0.03, 1);  // 1.8 s
  // The monitor times itself for the fit, then fails after epoch 0: the run stops with its fitted
  // schedule saved, unfinished.
  int calls = 0;
  KnnMonitor fails_later = [&](const VisionTransformer&) -> KnnResult {
    if (++calls > 1) throw Error("kNN monitor: the val folder is gone");
    return KnnResult{50.0, 90.0};
  };
  CHECK_THROWS_AS(Trainer(c, make_train_data(c), fails_later).run(), Error);
  const auto fitted = load_checkpoint(c.output_dir + "/checkpoint.safetensors");
  REQUIRE(fitted.config.fit_epochs_to_budget);
  REQUIRE(fitted.state.epoch == 1);
  REQUIRE(fitted.config.max_steps > 8);  // more than this run's first epoch
  // Resumed without the budget flags, the run keeps the fitted schedule and trains on to its end;
  // its checkpoint must still say the schedule was fitted, or the next resume would rebuild it
  // from --epochs 1000.
  TrainConfig plain = c;
  plain.time_budget_minutes = 0;
  plain.fit_epochs_to_budget = false;
  plain.knn_freq = 0;
  // Flags of the fitted schedule asked anew are not followed, and the run says so.
  plain.warmup_epochs = fitted.config.warmup_epochs + 3;
  plain.loc_interval = fitted.config.loc_interval + 5;
  plain.reg_warmup_epochs = 0;  // the fit bounded the asked 30 by its epochs
  REQUIRE(fitted.config.reg_warmup_epochs > 0);
  TrainResult rest;
  const std::string said = stdout_of([&] { rest = train(plain); });
  CHECK_MESSAGE(
      said.find(fmt::format("its schedule is kept as fitted, with --warmup_epochs {} --loc_interval {} "
                            "--reg_warmup_epochs {}; this run's --warmup_epochs {} --loc_interval {} "
                            "--reg_warmup_epochs 0 are not followed",
                            fitted.config.warmup_epochs, fitted.config.loc_interval, fitted.config.reg_warmup_epochs,
                            plain.warmup_epochs, plain.loc_interval)) != std::string::npos,
      said);
  CHECK(rest.resumed);
  CHECK(static_cast<int64_t>(rest.step_losses.size()) == fitted.config.max_steps - 8);
  const auto after = load_checkpoint(c.output_dir + "/checkpoint.safetensors");
  CHECK(after.config.fit_epochs_to_budget);
  CHECK(after.config.max_steps == fitted.config.max_steps);
  CHECK(after.config.warmup_epochs == fitted.config.warmup_epochs);
  CHECK(after.config.loc_interval == fitted.config.loc_interval);
  CHECK(after.config.reg_warmup_epochs == fitted.config.reg_warmup_epochs);
  CHECK(after.state.global_step == fitted.config.max_steps);
  CHECK(train(plain).step_losses.empty());  // and a third run finds it done
  // The first run's schedule flags again: no note.
  TrainConfig same = plain;
  same.warmup_epochs = c.warmup_epochs;
  same.loc_interval = c.loc_interval;
  same.reg_warmup_epochs = c.reg_warmup_epochs;
  const std::string again = stdout_of([&] { CHECK(train(same).step_losses.empty()); });
  CHECK_MESSAGE(again.find("are not followed") == std::string::npos, again);
}

}  // namespace bam::test
