// Interrupted training runs. A stop signal (SIGINT, SIGTERM, SIGHUP): the run stops after the step in
// progress with its checkpoint saved, or after an epoch's end when the signal comes at the epoch's
// last step, and resuming reproduces the uninterrupted run bit for bit; a second signal, not the
// same one passed on, ends the process at once. The signals are raised in this process, from the
// data source, at a chosen batch; tests/cli_stop_signal.sh sends real ones to bamtrain and to its
// --nproc_per_node launcher. The epoch cut in two has one log.txt row, over all its steps. A run
// that fails between an epoch's two saves keeps its numbered checkpoint. A resume over another
// number of images says so.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bam/checkpoint.h"
#include "bam/stop_signals.h"
#include "bam/trainer.h"
#include "tests/support.h"
#include "tests/train_test_support.h"

namespace bam::test {
namespace {

// Passes batches through, and does `action` when asked for batch `at` (from 1).
class ActionAtBatch : public PassThroughData {
 public:
  ActionAtBatch(std::unique_ptr<TrainData> inner, int64_t at, std::function<void()> action)
      : PassThroughData(std::move(inner)), at_(at), action_(std::move(action)) {}
  CropBatch next() override {
    if (++asked_ == at_) action_();
    return PassThroughData::next();
  }

 private:
  int64_t at_, asked_ = 0;
  std::function<void()> action_;
};

// The handlers for one test: installed, and the defaults back afterwards (a Ctrl-C at the test
// binary must end it).
struct StopHandlers {
  StopHandlers() {
    clear_stop_signal();
    ::signal(SIGINT, SIG_DFL);  // not ignored, whatever started this binary: the handlers take it
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGHUP, SIG_DFL);
    install_stop_signal_handlers();
  }
  ~StopHandlers() {
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGHUP, SIG_DFL);
    clear_stop_signal();
  }
};

TrainResult train_signalled(const TrainConfig& c, int64_t at, int signal) {
  Trainer trainer(c, std::make_unique<ActionAtBatch>(make_train_data(c), at, [signal] { ::raise(signal); }));
  return trainer.run();
}

// log.txt's epoch rows.
std::vector<nlohmann::json> epoch_rows(const std::string& dir) {
  std::vector<nlohmann::json> rows;
  std::ifstream log(dir + "/log.txt");
  for (std::string line; std::getline(log, line);) {
    nlohmann::json row = nlohmann::json::parse(line);
    if (!row.value("before_training", false)) rows.push_back(std::move(row));
  }
  return rows;
}

TrainConfig config_in(const std::string& name) {
  TrainConfig c = small_train_config(scratch_dir("stop_signals/" + name).string());
  c.teacher = true;  // its EMA state must survive the stop too
  return c;          // 3 epochs of 4 steps
}

}  // namespace

TEST_CASE("a stop signal between steps saves the step reached, and the resumed run is the uninterrupted one") {
  StopHandlers handlers;
  TrainResult reference;
  const TrainConfig reference_config = config_in("reference");
  {
    const TrainConfig& c = reference_config;
    Trainer trainer(c, make_train_data(c));
    reference = trainer.run();
  }
  REQUIRE(reference.step_losses.size() == 12);
  struct Case {
    int signal;
    int64_t at;                 // the batch whose step gets the signal
    size_t steps, epochs_done;  // what the stopped run trained
  };
  // SIGTERM during epoch 1's second step: that step ends, and the run stops inside the epoch.
  // SIGINT during epoch 0's last step: the epoch ends as usual (its row and checkpoint), and the
  // run stops before the next one.
  for (const Case& k : {Case{SIGTERM, 6, 6, 1}, Case{SIGINT, 4, 4, 1}}) {
    CAPTURE(k.at);
    const TrainConfig c = config_in("stopped_at_" + std::to_string(k.at));
    const TrainResult stopped = train_signalled(c, k.at, k.signal);
    CHECK(stopped.stopped_by_signal == k.signal);
    CHECK_FALSE(stopped.stopped_by_budget);
    REQUIRE(stopped.step_losses.size() == k.steps);
    CHECK(stopped.epochs.size() == k.epochs_done);
    const LoadedCheckpoint saved = load_checkpoint(c.output_dir + "/checkpoint.safetensors");
    CHECK(saved.state.global_step == static_cast<int64_t>(k.steps));
    CHECK(saved.state.epoch == 1);
    clear_stop_signal();
    const TrainResult rest = train_signalled(c, 0, 0);
    CHECK(rest.resumed);
    CHECK(rest.stopped_by_signal == 0);
    REQUIRE(rest.step_losses.size() == 12 - k.steps);
    for (size_t i = 0; i < rest.step_losses.size(); ++i) {
      CAPTURE(i);
      CHECK(rest.step_losses[i] == reference.step_losses[k.steps + i]);  // bit-identical on the CPU
    }
    // log.txt: each epoch once, the one cut in two averaged over all its steps as the
    // uninterrupted run's (it averaged the resumed steps only).
    const std::vector<nlohmann::json> rows = epoch_rows(c.output_dir),
                                      expected = epoch_rows(reference_config.output_dir);
    REQUIRE(rows.size() == 3);
    REQUIRE(expected.size() == 3);
    for (size_t e = 0; e < 3; ++e) {
      CAPTURE(e);
      CHECK(rows[e].at("epoch") == e);
      for (const char* key : {"train_loss", "train_lr", "train_wd", "train_target_entropy", "train_embedding_std"})
        CHECK(rows[e].at(key) == expected[e].at(key));
    }
  }
}

// A signal during an epoch's last step whose end has a kNN evaluation due: the epoch is saved, the
// evaluation (a long pass over other folders, which a scheduler's grace period may not cover) and
// the row are left to the resume, which writes them.
TEST_CASE("a stop signal at an epoch's last step leaves its kNN evaluation and row to the resume") {
  StopHandlers handlers;
  TrainConfig c = config_in("knn_left");
  c.teacher = false;  // one evaluation per epoch end (the teacher would add its own)
  c.knn_freq = 1;
  int evaluations = 0;
  const KnnMonitor monitor = [&](const VisionTransformer&) {
    ++evaluations;
    return KnnResult{50.0, 90.0};
  };
  {
    Trainer trainer(c, std::make_unique<ActionAtBatch>(make_train_data(c), 4, [] { ::raise(SIGTERM); }), monitor);
    const TrainResult stopped = trainer.run();
    CHECK(stopped.stopped_by_signal == SIGTERM);
  }
  CHECK(evaluations == 0);
  CHECK(load_checkpoint(c.output_dir + "/checkpoint.safetensors").state.global_step == 4);
  CHECK(epoch_rows(c.output_dir).empty());
  clear_stop_signal();
  c.max_steps = 4;  // the resume trains nothing more: it writes the row, evaluated
  {
    Trainer trainer(c, make_train_data(c), monitor);
    trainer.run();
  }
  CHECK(evaluations == 1);
  const std::vector<nlohmann::json> rows = epoch_rows(c.output_dir);
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].at("epoch") == 0);
  CHECK(rows[0].contains("knn_top1"));
}

// An epoch's regularisation is fixed at its start: a run stopped inside it and resumed with another
// reg schedule (as a budget refit during the epoch changes it) finishes the epoch with the value it
// began with, as the uninterrupted run does; the new schedule acts from the next epoch.
TEST_CASE("an epoch resumed mid-way keeps the regularisation it began with") {
  StopHandlers handlers;
  TrainConfig reference = config_in("reg_reference");
  reference.reg_final = 0.2;
  reference.reg_warmup_epochs = 3;  // epochs 0, 1, 2: 0.05, 0.125, 0.2
  {
    Trainer trainer(reference, make_train_data(reference));
    trainer.run();
  }
  TrainConfig c = reference;
  c.output_dir = config_in("reg_resumed").output_dir;
  CHECK(train_signalled(c, 6, SIGTERM).stopped_by_signal == SIGTERM);  // epoch 1, step 2
  clear_stop_signal();
  c.reg_warmup_epochs = 2;  // would give epoch 1 the final 0.2
  train_signalled(c, 0, 0);
  const std::vector<nlohmann::json> rows = epoch_rows(c.output_dir), expected = epoch_rows(reference.output_dir);
  REQUIRE(rows.size() == 3);
  REQUIRE(expected.size() == 3);
  CHECK(expected[1].at("train_reg").get<double>() == doctest::Approx(0.125));
  CHECK(rows[1].at("train_reg") == expected[1].at("train_reg"));
  CHECK(rows[1].at("train_loss") == expected[1].at("train_loss"));  // the steps after the stop too
}

// ContrastiveCrop: a signal during the last step of an epoch after which the boxes are located
// again. The update (a pass of the model over every training image) is left to the resume, which
// does it from the same weights: the resumed run is the uninterrupted one, boxes and losses.
TEST_CASE("a stop signal at an epoch's end leaves ContrastiveCrop's box update to the resume, which does it") {
  StopHandlers handlers;
  const std::string folder = write_colour_folder("stop_signals/ccrop_images", 4, 16, 8);
  auto config = [&](const std::string& name) {
    TrainConfig c = config_in(name);
    c.data_path = folder;  // 64 images, 4 steps an epoch
    c.num_workers = 2;
    c.use_ccrop = true;
    c.loc_interval = 1;  // boxes after epochs 0 and 1
    c.warmup_epochs = 0;
    c.box_thresh = 0.5;
    c.teacher_m = 0.5;
    return c;
  };
  const TrainConfig full = config("ccrop_full");
  const TrainResult reference = Trainer(full, make_train_data(full)).run();
  REQUIRE(reference.step_losses.size() == 12);
  const TrainConfig c = config("ccrop_stopped");
  const TrainResult stopped = train_signalled(c, 4, SIGTERM);  // epoch 0's last step
  CHECK(stopped.stopped_by_signal == SIGTERM);
  CHECK(stopped.epochs.empty());  // no row, no update: both left
  const LoadedCheckpoint saved = load_checkpoint(c.output_dir + "/checkpoint.safetensors");
  CHECK(saved.state.boxes_due_after_epoch == 0);
  CHECK(saved.state.global_step == 4);
  clear_stop_signal();
  const TrainResult rest = train_signalled(c, 0, 0);
  REQUIRE(rest.step_losses.size() == 8);
  for (size_t i = 0; i < 8; ++i) {
    CAPTURE(i);
    CHECK(rest.step_losses[i] == reference.step_losses[4 + i]);  // crops placed by the same boxes
  }
  const std::vector<nlohmann::json> rows = epoch_rows(c.output_dir), expected = epoch_rows(full.output_dir);
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].at("epoch") == 0);
  CHECK(rows[0].at("ccrop_box_area") == expected[0].at("ccrop_box_area"));
  CHECK(load_checkpoint(c.output_dir + "/checkpoint.safetensors").state.boxes_due_after_epoch == -1);
}

TEST_CASE("a stop signal before the first step stops the run with nothing trained or saved") {
  StopHandlers handlers;
  const TrainConfig c = config_in("before_first_step");
  ::raise(SIGINT);  // as during the start: the resume, the calibration, the first kNN evaluation
  const TrainResult r = train_signalled(c, 0, 0);
  CHECK(r.stopped_by_signal == SIGINT);
  CHECK(r.step_losses.empty());
  CHECK_FALSE(std::filesystem::exists(c.output_dir + "/checkpoint.safetensors"));
}

TEST_CASE("a second signal within a second of the first is the same request; stop_signal names the first") {
  StopHandlers handlers;
  ::raise(SIGINT);
  ::raise(SIGTERM);  // the launcher passing on the terminal's Ctrl-C: the process lives on
  CHECK(stop_signal() == SIGINT);
  CHECK(std::string(stop_signal_name(SIGTERM)) == "SIGTERM");
  CHECK(std::string(stop_signal_name(9)) == "signal 9");
}

// An epoch's end writes checkpoint0000.safetensors (--saveckp_freq 1) and checkpoint.safetensors.
// A run stopped between the two (here the second fails: a folder is in its way) has the numbered
// one: a resume from the checkpoint before would not write it again. The other order lost it.
TEST_CASE("a run stopped between an epoch's two saves keeps the numbered checkpoint") {
  TrainConfig c = config_in("between_saves");
  c.saveckp_freq = 1;
  const std::string blocker = c.output_dir + "/checkpoint.safetensors/in_the_way";
  Trainer trainer(c, std::make_unique<ActionAtBatch>(make_train_data(c), 4, [&] {
                    std::filesystem::create_directories(blocker);  // during epoch 0's last step
                  }));
  CHECK_THROWS_WITH_AS(trainer.run(), doctest::Contains("checkpoint.safetensors"), Error);
  const LoadedCheckpoint numbered = load_checkpoint(c.output_dir + "/checkpoint0000.safetensors");
  CHECK(numbered.state.epoch == 1);
  CHECK(numbered.state.global_step == 4);
}

// A folder that grew between a stop and its resume, with as many steps an epoch: the run goes on,
// and says that its order is not the uninterrupted run's (it said nothing).
TEST_CASE("a resume with another image count and the same steps per epoch says so") {
  TrainConfig c = config_in("image_count");  // 64 images, 4 steps an epoch
  c.max_steps = 2;                           // stops inside epoch 0
  {
    Trainer trainer(c, make_train_data(c));
    trainer.run();
  }
  TrainConfig grown = c;
  grown.data_path = "synthetic:72";  // 4 steps an epoch too
  grown.max_steps = 3;
  const std::string text = stdout_of([&] {
    Trainer trainer(grown, make_train_data(grown));
    trainer.run();
  });
  CHECK(text.find("note: --data_path synthetic:72 has 72 training images, the checkpoint's run had 64") !=
        std::string::npos);
  CHECK(text.find("the epoch in progress may visit some images twice") != std::string::npos);
  grown.max_steps = 4;  // from a checkpoint of 72 images: nothing to say
  const std::string again = stdout_of([&] {
    Trainer trainer(grown, make_train_data(grown));
    trainer.run();
  });
  CHECK(again.find("training images, the checkpoint's run had") == std::string::npos);
  CHECK(load_checkpoint(c.output_dir + "/checkpoint.safetensors").state.num_images == 72);
}

// Epochs of another length at an epoch's end (a folder that grew by a batch): the schedules, indexed
// by epoch and step, would jump; the resume is refused, saying why (it went on, the steps skipped).
TEST_CASE("a resume whose images make epochs of another length is refused") {
  TrainConfig c = config_in("epoch_length");  // 64 images, 4 steps an epoch
  c.max_steps = 4;                            // the end of epoch 0
  {
    Trainer trainer(c, make_train_data(c));
    trainer.run();
  }
  TrainConfig grown = c;
  grown.data_path = "synthetic:80";  // 5 steps an epoch
  grown.max_steps = 8;
  Trainer trainer(grown, make_train_data(grown));
  CHECK_THROWS_WITH_AS(trainer.run(),
                       doctest::Contains("took 4 steps in 1 epoch (epochs of 4 steps), but --data_path synthetic:80 "
                                         "makes epochs of 5 steps"),
                       Error);
  CHECK(load_checkpoint(c.output_dir + "/checkpoint.safetensors").state.global_step == 4);  // untouched
}

// A run started without a fit, resumed with --fit_epochs_to_budget true: nothing is refitted, it
// says so, and its checkpoint does not claim a fit (a later resume would keep these flags as fitted).
TEST_CASE("a resume asking for a fit over a run that was not fitted goes on with its flags, saying so") {
  TrainConfig c = config_in("unfitted");  // 64 images, 4 steps an epoch
  c.max_steps = 2;
  {
    Trainer trainer(c, make_train_data(c));
    trainer.run();
  }
  TrainConfig fit = c;
  fit.max_steps = 3;
  fit.time_budget_minutes = 10;
  fit.fit_epochs_to_budget = true;
  TrainResult result;
  const std::string text = stdout_of([&] {
    Trainer trainer(fit, make_train_data(fit));
    result = trainer.run();
  });
  CHECK(text.find("the checkpoint's run was not fitted to a budget, and a schedule under way is not refitted") !=
        std::string::npos);
  CHECK(result.step_losses.size() == 1);  // --max_steps 3 as given
  const LoadedCheckpoint after = load_checkpoint(c.output_dir + "/checkpoint.safetensors");
  CHECK(!after.config.fit_epochs_to_budget);
  CHECK(after.state.global_step == 3);
}

// (In a child process: the second signal ends it.)
TEST_CASE("a second signal a second or more after the first ends the process at once, by that signal") {
  if (kUnderThreadSanitizer) {
    MESSAGE("skipped under ThreadSanitizer, which defers signals to its own points in a forked child");
    return;
  }
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    ::signal(SIGTERM, SIG_DFL);
    clear_stop_signal();
    install_stop_signal_handlers();
    ::raise(SIGTERM);
    ::usleep(1100 * 1000);
    ::raise(SIGTERM);
    ::_exit(stop_signal() == SIGTERM ? 0 : 1);  // the first one was taken as a request: not reached
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  CHECK(WIFSIGNALED(status));
  if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == SIGTERM);
}

}  // namespace bam::test
