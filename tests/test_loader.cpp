// The loader: every image of an epoch seen once,
// identical batches whatever the thread count, batches numbered across epochs and prepared ahead
// into the next one, ContrastiveCrop's boxes placing the crops and holding the run-ahead at an
// epoch whose boxes are not known yet, damaged files reported, skipped and counted, a failed
// allocation in a worker spoiling its batch only, and
// the probe on a tiny separable dataset reaching high accuracy with both kNN and linear; the
// arena reservations the GPU loader's decode threads share.

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "bam/features.h"
#include "bam/linear_probe.h"
#include "data/batch_sequence.h"
#include "data/loader.h"
#include "data/loader_support.h"
#include "data/unreadable_files.h"
#include "engine/random.h"
#include "tests/refused_allocations.h"
#include "tests/support.h"
#include "tests/train_test_support.h"

namespace bam::test {
namespace fs = std::filesystem;
namespace {

std::string make_folder(const std::string& name, int classes, int per_class, uint64_t seed) {
  return write_colour_folder("loader/" + name, classes, per_class, seed);
}

// The loader's decoded-image count once the workers have reached `at_least` (settled_count).
int64_t settled_images(const data::CropLoader& loader, int64_t at_least) {
  return settled_count([&] { return loader.images_decoded(); }, at_least);
}

// The indices and pixels of the loader's next `steps` batches.
using Batches = std::vector<std::pair<std::vector<int64_t>, std::vector<float>>>;
Batches take(data::CropLoader& loader, int64_t steps) {
  Batches out;
  for (int64_t s = 0; s < steps; ++s) {
    auto batch = loader.next();
    std::vector<float> pixels;
    for (auto& g : batch.groups) {
      auto v = g.to_vector<float>();
      pixels.insert(pixels.end(), v.begin(), v.end());
    }
    out.push_back({batch.indices, pixels});
  }
  return out;
}

data::AugmentRecipe small_recipe() {
  data::AugmentRecipe r;
  r.global_size = 16;
  r.local_crops = 2;
  r.local_size = 8;
  return r;
}

}  // namespace

TEST_CASE("every image once per epoch, identical batches for any thread count") {
  std::string root = make_folder("epoch", 2, 11, 2);
  data::Dataset d = data::open_dataset(root);
  auto run = [&](int threads, int64_t epoch) {
    data::MultiCropLoader loader(d, small_recipe(), 5, 9, {threads, 2});
    loader.start_epoch(epoch);
    CHECK(loader.steps_per_epoch() == 4);  // 22 images, drop_last
    std::vector<int64_t> seen;
    std::vector<float> pixels;
    for (int s = 0; s < 4; ++s) {
      auto batch = loader.next();
      REQUIRE(batch.groups.size() == 2);
      CHECK(batch.groups[0].shape() == Shape{10, 3, 16, 16});
      CHECK(batch.groups[1].shape() == Shape{10, 3, 8, 8});
      seen.insert(seen.end(), batch.indices.begin(), batch.indices.end());
      for (auto& g : batch.groups) {
        auto v = g.to_vector<float>();
        pixels.insert(pixels.end(), v.begin(), v.end());
      }
    }
    CHECK_THROWS_AS(loader.next(), Error);
    return std::make_pair(seen, pixels);
  };
  auto [seen1, pixels1] = run(1, 0);
  auto [seen3, pixels3] = run(3, 0);
  CHECK(seen1 == seen3);
  CHECK(pixels1 == pixels3);
  std::set<int64_t> unique(seen1.begin(), seen1.end());
  CHECK(unique.size() == 20);
  auto [seen_next, pixels_next] = run(2, 1);
  CHECK(seen_next != seen1);
  // Resuming mid-epoch gives the same later batches.
  data::MultiCropLoader loader(d, small_recipe(), 5, 9, {2, 2});
  loader.start_epoch(0, 2);
  auto batch = loader.next();
  CHECK(std::vector<int64_t>(seen1.begin() + 10, seen1.begin() + 15) == batch.indices);
}

TEST_CASE("batch numbers across epochs, their orders, and the batch a failure spoils") {
  data::Dataset d;
  d.root = "twenty-two";
  for (int i = 0; i < 22; ++i) {
    d.files.push_back("image_" + std::to_string(i) + ".jpg");
    d.labels.push_back(-1);
  }
  data::BatchSequence kept(d, 5, false, true, 9);
  CHECK(kept.steps_per_epoch() == 5);
  CHECK(kept.number(2, 3) == 13);
  CHECK(kept.epoch(13) == 2);
  CHECK(kept.step(13) == 3);
  CHECK(kept.first_position(13) == 15);
  CHECK(kept.rows(13) == 5);
  CHECK(kept.rows(14) == 2);  // the short last batch, in every epoch
  CHECK(kept.rows(9) == 2);
  CHECK(kept.rows(10) == 5);
  data::BatchSequence dropped(d, 5, true, true, 9);
  CHECK(dropped.steps_per_epoch() == 4);
  CHECK(dropped.rows(3) == 5);
  CHECK(dropped.epoch(4) == 1);
  // Orders are the loaders' epoch orders, computed once while kept; an older one stays valid.
  auto first = kept.order(0);
  CHECK(*first == data::loader_visit_order(22, 9, 0, true));
  CHECK(kept.order(0) == first);
  CHECK(*kept.order(1) == data::loader_visit_order(22, 9, 1, true));
  CHECK(*kept.order(2) == data::loader_visit_order(22, 9, 2, true));
  CHECK(*first == data::loader_visit_order(22, 9, 0, true));
  CHECK(*data::BatchSequence(d, 5, false, false, 9).order(3) == data::loader_visit_order(22, 9, 0, false));
  CHECK_THROWS_WITH_AS(data::BatchSequence(d, 23, true, true, 9), doctest::Contains("twenty-two"), Error);
  CHECK_THROWS_AS(data::BatchSequence(d, 0, false, true, 9), Error);

  data::BatchFailure failure;
  CHECK_FALSE(failure.any());
  failure.note(7, std::make_exception_ptr(Error("at seven")));
  CHECK(failure.any());
  CHECK_FALSE(failure.spoils(6));  // the batches before it are whole
  CHECK(failure.spoils(7));
  CHECK(failure.spoils(12));
  failure.note(9, std::make_exception_ptr(Error("at nine")));  // a later one changes nothing
  CHECK_THROWS_WITH(failure.rethrow(), "at seven");
  failure.note(3, std::make_exception_ptr(Error("at three")));  // an earlier one is the one reported
  CHECK(failure.spoils(3));
  CHECK_THROWS_WITH(failure.rethrow(), "at three");
  failure.clear();
  CHECK_FALSE(failure.spoils(100));
}

// The workers go on from the end of one epoch into the next one's first batches (up to
// LoaderOptions::epochs), start_epoch(e + 1) keeps them, and the batches are the ones a loader
// started at e + 1 gives; starting anywhere else drops them and gives that place's batches.
TEST_CASE("the loader runs on into the next epoch, and start_epoch keeps what it prepared") {
  std::string root = make_folder("run_on", 2, 11, 7);
  data::Dataset d = data::open_dataset(root);
  for (bool drop_last : {true, false}) {
    INFO("drop_last " << drop_last);
    data::LoaderOptions o{2, 2};
    o.drop_last = drop_last;
    const int64_t steps = drop_last ? 4 : 5, per_epoch = drop_last ? 20 : 22;
    // Each epoch from a loader of its own, started there.
    std::vector<Batches> expected;
    for (int64_t epoch = 0; epoch < 3; ++epoch) {
      data::MultiCropLoader alone(d, small_recipe(), 5, 9, o);
      alone.start_epoch(epoch);
      expected.push_back(take(alone, steps));
    }
    const int64_t ahead = 10;  // two batches (three slots, one of them lent)
    // By default the loader stops at the end of the epoch started; set_epochs (a trainer refitting
    // its schedule) lets it run on from there.
    {
      data::MultiCropLoader single(d, small_recipe(), 5, 9, o);
      single.start_epoch(0);
      take(single, steps);
      CHECK(settled_images(single, per_epoch) == per_epoch);
      single.set_epochs(2);
      CHECK(settled_images(single, per_epoch + ahead) == per_epoch + ahead);
      single.start_epoch(1);
      CHECK(take(single, steps) == expected[1]);
      CHECK(settled_images(single, 2 * per_epoch) == 2 * per_epoch);
    }
    o.epochs = 3;
    data::MultiCropLoader loader(d, small_recipe(), 5, 9, o);
    loader.start_epoch(0);
    CHECK(take(loader, steps) == expected[0]);
    // The first two batches of epoch 1, and no more.
    CHECK(settled_images(loader, per_epoch + ahead) == per_epoch + ahead);
    CHECK_THROWS_AS(loader.next(), Error);  // they are not handed out before start_epoch
    loader.start_epoch(1);
    CHECK(take(loader, steps) == expected[1]);
    // Nothing was prepared twice: the batches kept were not made again.
    CHECK(settled_images(loader, 2 * per_epoch + ahead) == 2 * per_epoch + ahead);
    loader.start_epoch(2);
    CHECK(take(loader, steps) == expected[2]);
    CHECK(settled_images(loader, 3 * per_epoch) == 3 * per_epoch);  // and nothing after the run's last epoch
    // Anywhere else: a restart there.
    loader.start_epoch(1, 2);
    CHECK(take(loader, steps - 2) == Batches(expected[1].begin() + 2, expected[1].end()));
    // A run shortened while its loader runs on (a refitted schedule): what is prepared is kept,
    // and the workers stop at the end of the epoch in progress.
    data::MultiCropLoader shortened(d, small_recipe(), 5, 9, o);
    shortened.start_epoch(0);
    take(shortened, steps);
    CHECK(settled_images(shortened, per_epoch + ahead) == per_epoch + ahead);
    shortened.set_epochs(1);
    shortened.start_epoch(1);
    CHECK(take(shortened, steps) == expected[1]);
    CHECK(settled_images(shortened, 2 * per_epoch) == 2 * per_epoch);  // nothing of epoch 2
  }
}

// The workers fail on a batch prepared ahead (here every file is gone by then): the batches in
// front of it are still handed out, next() throws at it, and start_epoch drops what was prepared
// and tries again.
TEST_CASE("a worker's failure spoils its batch only, and the next start_epoch tries again") {
  std::string root = make_folder("spoiled", 2, 11, 8);
  data::Dataset d = data::open_dataset(root);
  data::LoaderOptions o{2, 2};
  o.epochs = 2;
  Batches expected;
  {
    data::MultiCropLoader alone(d, small_recipe(), 5, 9, o);
    alone.start_epoch(1);
    expected = take(alone, 4);
  }
  data::MultiCropLoader loader(d, small_recipe(), 5, 9, o);
  loader.start_epoch(0);
  take(loader, 4);
  REQUIRE(settled_images(loader, 30) == 30);  // epoch 1's first two batches are ready; the workers wait
  std::optional<MovedFolder> away(std::in_place, root, root + "_away");
  loader.start_epoch(1);
  CHECK(take(loader, 1) == Batches(expected.begin(), expected.begin() + 1));
  // The workers go on to the third batch and fail on it: every file is reported missing first.
  REQUIRE(settled_count([&] { return loader.skipped_files(); }, 22) == 22);
  CHECK(take(loader, 1) == Batches(expected.begin() + 1, expected.begin() + 2));  // the batch before it
  CHECK_THROWS_WITH_AS(loader.next(), doctest::Contains("none of the 22 images could be decoded"), Error);
  CHECK_THROWS_WITH_AS(loader.next(), doctest::Contains("none of the 22 images could be decoded"), Error);
  away.reset();  // the files are back
  loader.start_epoch(1);
  CHECK(take(loader, 4) == expected);
}

// Out of memory where a worker takes a slot for a new batch (the epoch's visiting order, 22 x 8
// bytes): the batch is spoiled as by a damaged folder, and the next start_epoch tries again. (The
// error escaped the worker thread and ended the process.)
TEST_CASE("a worker that cannot allocate a batch's order spoils the batch, not the process") {
  const data::Dataset d = data::open_dataset(make_folder("order_alloc", 2, 11, 8));
  data::LoaderOptions o{2, 2};
  Batches expected;
  {
    data::MultiCropLoader alone(d, small_recipe(), 5, 9, o);
    alone.start_epoch(0);
    expected = take(alone, 4);
  }
  data::MultiCropLoader loader(d, small_recipe(), 5, 9, o);
  {
    RefuseAllocations refuse(22 * sizeof(int64_t));
    loader.start_epoch(0);
    CHECK_THROWS_AS(loader.next(), std::bad_alloc);
    CHECK(RefuseAllocations::refused() > 0);
  }
  loader.start_epoch(0);
  CHECK(take(loader, 4) == expected);
}

namespace {

// Boxes for every image of a dataset of n: random, at least 10% of each side.
std::shared_ptr<data::ObjectBoxes> random_boxes(int64_t n, uint64_t seed, int64_t first_epoch, int64_t until_epoch) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0, 0.9f);
  auto b = std::make_shared<data::ObjectBoxes>();
  b->first_epoch = first_epoch;
  b->until_epoch = until_epoch;
  for (int64_t i = 0; i < n; ++i) {
    const float top = u(rng), left = u(rng);
    b->boxes.push_back({top, left, std::min(1.0f, top + 0.1f + u(rng)), std::min(1.0f, left + 0.1f + u(rng))});
  }
  return b;
}

}  // namespace

// A trainer renews the boxes after an epoch and gives them to the loader before the next one
// starts: the loader must not prepare the next epoch ahead with the old ones. It runs on up to
// the end of the epoch whose boxes it has, and batches prepared ahead with other boxes are made
// again when new ones arrive.
TEST_CASE("ContrastiveCrop: the loader crops by the boxes it is given and waits for boxes not known yet") {
  std::string root = make_folder("ccrop", 2, 11, 5);
  data::Dataset d = data::open_dataset(root);
  data::LoaderOptions o{2, 2};
  o.epochs = 3;
  const int64_t steps = 4, per_epoch = 20, ahead = 10;
  const uint64_t seed = 9;
  auto b0 = random_boxes(d.size(), 1, /*first_epoch=*/1, /*until_epoch=*/1);
  auto b1 = random_boxes(d.size(), 2, 1, std::numeric_limits<int64_t>::max());
  auto epoch_alone = [&](int64_t epoch, std::shared_ptr<const data::ObjectBoxes> boxes) {
    data::MultiCropLoader alone(d, small_recipe(), 5, seed, o);
    alone.set_object_boxes(boxes);
    alone.start_epoch(epoch);
    return take(alone, steps);
  };
  // Epoch 0 is before first_epoch: RandomResizedCrop, boxes or not. Epoch 1 is placed by them.
  CHECK(epoch_alone(0, b0) == epoch_alone(0, nullptr));
  const Batches placed = epoch_alone(1, b1);
  CHECK(placed != epoch_alone(1, nullptr));
  {
    // One crop of it against render_crop of sample_crop with the image's placement.
    const int64_t index = placed[0].first[0];
    const data::DecodedImage image = data::decode_image_file(d.files[index]);
    const data::CropPlacement placement = *b1->placement(1, index);
    const data::CropParams p = data::sample_crop(small_recipe(), image.width, image.height, seed, 1,
                                                 static_cast<uint32_t>(index), 0, &placement);
    std::vector<float> crop(3 * 16 * 16);
    data::render_crop(image, p, small_recipe(), crop.data());
    CHECK(std::vector<float>(placed[0].second.begin(), placed[0].second.begin() + crop.size()) == crop);
  }

  // Boxes known before epoch 1 only: nothing of epoch 1 is prepared, however far the run goes.
  data::MultiCropLoader loader(d, small_recipe(), 5, seed, o);
  loader.set_object_boxes(b0);
  loader.start_epoch(0);
  CHECK(take(loader, steps) == epoch_alone(0, nullptr));
  CHECK(settled_images(loader, per_epoch) == per_epoch);
  CHECK_THROWS_WITH_AS(loader.start_epoch(1), doctest::Contains("boxes that are not known yet"), Error);
  loader.set_object_boxes(b1);  // renewed: the workers go on into epoch 1 with these
  CHECK(settled_images(loader, per_epoch + ahead) == per_epoch + ahead);
  loader.start_epoch(1);
  CHECK(take(loader, steps) == placed);

  // Boxes replaced while batches were prepared ahead with the old ones: those are made again.
  data::MultiCropLoader ran_ahead(d, small_recipe(), 5, seed, o);
  ran_ahead.set_object_boxes(random_boxes(d.size(), 3, 1, std::numeric_limits<int64_t>::max()));
  ran_ahead.start_epoch(0);
  take(ran_ahead, steps);
  CHECK(settled_images(ran_ahead, per_epoch + ahead) == per_epoch + ahead);
  ran_ahead.set_object_boxes(b1);
  ran_ahead.start_epoch(1);
  CHECK(take(ran_ahead, steps) == placed);
  // Epoch 1's first two batches twice (with the old boxes, then the new), and epoch 2's two.
  CHECK(settled_images(ran_ahead, 2 * per_epoch + 2 * ahead) == 2 * per_epoch + 2 * ahead);

  // The box update's input: each image resized whole to a square.
  data::LoaderOptions whole;
  whole.eval_transform = whole.eval_whole_image = true;
  whole.eval_size = 16;
  whole.shuffle = whole.drop_last = false;
  data::MultiCropLoader squares(d, small_recipe(), 5, seed, whole);
  squares.start_epoch(0);
  const Batches first = take(squares, 1);
  for (int b = 0; b < 5; ++b) {
    const data::DecodedImage image = data::decode_image_file(d.files[first[0].first[b]]);
    std::vector<float> want(3 * 16 * 16);
    data::render_crop(image, data::whole_image_params(image.width, image.height, 16), small_recipe(), want.data());
    CHECK(std::vector<float>(first[0].second.begin() + b * want.size(),
                             first[0].second.begin() + (b + 1) * want.size()) == want);
  }
}

TEST_CASE("damaged files are reported once, skipped and counted") {
  std::string root = make_folder("damaged", 2, 6, 3);
  std::ofstream(root + "/class_0/bad_text.jpg") << "this is not a jpeg";
  std::ofstream(root + "/class_1/empty.jpg");
  {
    std::ifstream good(root + "/class_1/0.jpg", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(good)), {});
    std::ofstream(root + "/class_1/truncated.jpg", std::ios::binary) << bytes.substr(0, 40);
    // Cut inside the entropy-coded data: the headers whole, half the scan gone. Decoded as djpeg
    // does (the rest grey, with a warning), but the loaders refuse it, as PIL does.
    const size_t sos = bytes.find("\xFF\xDA");
    REQUIRE(sos != std::string::npos);
    const size_t scan = sos + 2 + (static_cast<uint8_t>(bytes[sos + 2]) << 8 | static_cast<uint8_t>(bytes[sos + 3]));
    REQUIRE(scan + 8 < bytes.size());
    std::ofstream(root + "/class_0/cut_in_scan.jpg", std::ios::binary)
        << bytes.substr(0, scan + (bytes.size() - scan) / 2);
  }
  const data::DecodedImage padded = data::decode_image_file(root + "/class_0/cut_in_scan.jpg");
  CHECK(padded.width > 0);
  CHECK(!padded.warnings.empty());
  data::ImageDecodeOptions refuse;
  refuse.refuse_truncated = true;
  CHECK_THROWS_WITH_AS(data::decode_image_file(root + "/class_0/cut_in_scan.jpg", refuse),
                       doctest::Contains("cut_in_scan.jpg: incomplete image data (scan data ends early"),
                       data::ImageDecodeError);
  data::Dataset d = data::open_dataset(root);
  CHECK(d.size() == 16);
  data::MultiCropLoader loader(d, small_recipe(), 5, 1, {2, 2});
  int64_t repeats = 0;
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    loader.start_epoch(epoch);
    for (int s = 0; s < 3; ++s) {
      auto batch = loader.next();
      CHECK(batch.indices.size() == 5);
      for (int64_t i : batch.indices) {
        CHECK(d.files[i].find("/bad_") == std::string::npos);
        CHECK(d.files[i].find("/cut_in_scan") == std::string::npos);
      }
      // An image standing in for a damaged one beside itself in a batch: its crops are keyed by
      // the image asked for, so the two rows differ (they were the same crops, a "negative" pair
      // of identical views).
      const Tensor crops = batch.groups[0].narrow(0, 0, 5).reshape({5, -1}).contiguous();
      for (int64_t a = 0; a < 5; ++a)
        for (int64_t b = a + 1; b < 5; ++b)
          if (batch.indices[a] == batch.indices[b]) {
            ++repeats;
            CHECK(crops.select(0, a).to_vector<float>() != crops.select(0, b).to_vector<float>());
          }
    }
  }
  CHECK(loader.skipped_files() == 4);  // each damaged file counted once over both epochs
  MESSAGE(repeats << " substitutes beside the image they stand for");
  CHECK(repeats > 0);  // the loader's default seed fixes the order, which has 7: the check above ran
}

TEST_CASE("a loader whose buffers cannot be allocated says so, and frees what it had") {
  const data::Dataset d = data::open_dataset(make_folder("huge_batch", 2, 3, 8));
  data::LoaderOptions options;
  options.threads = 2;
  options.drop_last = false;
  // 2^36 images a batch: far more memory than any machine has (it returned a null buffer that the
  // workers then wrote to). ("out of host memory" without CUDA, CUDA's "out of memory" with it.)
  CHECK_THROWS_WITH_AS(data::MultiCropLoader(d, small_recipe(), int64_t{1} << 36, 1, options),
                       doctest::Contains("memory"), Error);
}

TEST_CASE("a dataset whose files all fail stops the loader after a few hundred tries, not after all of them") {
  data::UnreadableFiles unreadable;
  std::vector<int64_t> order(100000);
  for (int64_t i = 0; i < static_cast<int64_t>(order.size()); ++i) order[static_cast<size_t>(i)] = i;
  int64_t tries = 0;
  const auto gone = [&](int64_t index) {
    ++tries;
    throw data::ImageDecodeError("/mnt/share/" + std::to_string(index) + ".jpg: cannot open (no such file)");
  };
  CHECK_THROWS_WITH_AS(unreadable.first_decodable(order, 5, "/mnt/share", gone),
                       doctest::Contains("256 images in a row could not be read or decoded (the last: "
                                         "/mnt/share/260.jpg: cannot open"),
                       Error);
  CHECK(tries == 256);
  // With the folder still there, a long run of damaged files (AppleDouble copies sorted before the
  // images, in the evaluation's file order) is skipped, however long.
  const std::string present = scratch_dir("loader/present").string();
  std::ofstream(present + "/0.jpg") << "x";
  tries = 0;
  const auto damaged_first = [&](int64_t index) {
    ++tries;
    if (index < 1000) throw data::ImageDecodeError(std::to_string(index) + ".jpg: not a JPEG");
  };
  CHECK(unreadable.first_decodable(order, 0, present, damaged_first) == 1000);
  CHECK(tries == 1001 - 256);  // 5 .. 260 failed above: not tried again
  // The next position in the run tries none of the known failures again (each position of a run
  // of r bad files decoded all the later ones: r^2/2 decodes).
  tries = 0;
  CHECK(unreadable.first_decodable(order, 1, present, damaged_first) == 1000);
  CHECK(tries == 1);
  // retry_all (a loader's start_epoch) tries them again: a share that was gone may be back.
  unreadable.retry_all();
  tries = 0;
  CHECK(unreadable.first_decodable(order, 1, present, damaged_first) == 1000);
  CHECK(tries == 1000);
  // A small dataset that is entirely bad says so.
  std::vector<int64_t> few{0, 1, 2};
  CHECK_THROWS_WITH_AS(unreadable.first_decodable(few, 0, "/tiny", gone),
                       doctest::Contains("/tiny: none of the 3 images could be decoded"), Error);
}

// An evaluation set with a damaged file: its row is left out, where the image standing in for it
// (the next decodable one, with that image's label) was counted twice.
TEST_CASE("features leave out an image that cannot be decoded instead of counting its stand-in") {
  const std::string root = make_folder("features_damaged", 2, 5, 3);
  std::ofstream(root + "/class_0/2.jpg", std::ios::binary | std::ios::trunc) << "not a JPEG";
  const data::Dataset d = data::open_dataset(root);
  REQUIRE(d.size() == 10);
  FeatureOptions f;
  f.img_size = 16;
  f.batch_size = 4;
  f.threads = 2;
  const FeatureSet set = extract_features(nullptr, d, f);
  CHECK(set.features.size(0) == 9);
  CHECK(set.labels.to_vector<int64_t>() == std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1, 1, 1});
  // The rows are the decodable images' own: row 2 is image 3, as extracted alone.
  data::Dataset three = d;
  three.files = {d.files[3]};
  three.labels = {d.labels[3]};
  CHECK(extract_features(nullptr, three, f).features.to_vector<float>() ==
        set.features.narrow(0, 2, 1).contiguous().to_vector<float>());
}

TEST_CASE("the probe separates a tiny dataset with kNN and linear") {
  std::string train_root = make_folder("probe_train", 3, 24, 4), val_root = make_folder("probe_val", 3, 8, 5);
  data::Dataset train = data::open_dataset(train_root), val = data::open_dataset(val_root);
  FeatureOptions f;
  f.img_size = 16;
  f.batch_size = 16;
  f.threads = 2;
  // Raw pixels.
  FeatureSet tr = extract_features(nullptr, train, f), va = extract_features(nullptr, val, f);
  CHECK(tr.features.shape() == Shape{72, 3 * 16 * 16});
  KnnResult knn = knn_classify(tr.features, tr.labels, va.features, va.labels, 3, 5, 0.07);
  CHECK(knn.top1 > 95);
  LinearProbeOptions lo;
  lo.epochs = 20;
  lo.lr = 0.5;
  lo.batch_size = 16;
  lo.bn_head = true;
  lo.verbose = false;
  CHECK(train_linear_probe(tr, va, lo).top1 > 95);
  // Validated every 3 epochs (after epochs 1, 4, ... 19, and the last, 20): the best of the
  // validations, DINO's figure, is at least the last epoch's; the last is the same either way.
  // With val_freq 0, one validation, after the last epoch.
  LinearProbeBest best, once;
  const KnnResult without = train_linear_probe(tr, va, lo, {}, &once);
  lo.val_freq = 3;
  const KnnResult with = train_linear_probe(tr, va, lo, {}, &best);
  CHECK(with.correct1 == without.correct1);
  CHECK(once.validations == 1);
  CHECK(once.epoch == 20);
  CHECK(once.result.correct1 == without.correct1);
  CHECK(best.validations == 8);
  CHECK(best.result.top1 >= with.top1);
  CHECK((best.epoch >= 1 && best.epoch <= 20 && (best.epoch == 20 || best.epoch % 3 == 1)));
  lo.val_freq = 0;
  // Through a random-init ViT the colours stay separable.
  Generator gen(6);
  VisionTransformer vit(tiny_vit_config(4, 16, 24), &gen);
  vit.train(false);
  f.n_last_blocks = 2;
  FeatureSet vtr = extract_features(&vit, train, f), vva = extract_features(&vit, val, f);
  CHECK(vtr.features.shape() == Shape{72, 48});
  // An empty dataset (a rank's part of a small folder): no rows, of the same width.
  data::Dataset none;
  none.root = train.root;
  none.classes = train.classes;
  CHECK(extract_features(nullptr, none, f).features.shape() == Shape{0, 3 * 16 * 16});
  CHECK(extract_features(&vit, none, f).features.shape() == Shape{0, 48});
  f.avgpool_patchtokens = true;
  const int64_t pooled_width = extract_features(&vit, val, f).features.size(1);
  CHECK(extract_features(&vit, none, f).features.shape() == Shape{0, pooled_width});
  CHECK(extract_features(&vit, none, f).labels.numel() == 0);
  f.avgpool_patchtokens = false;
  CHECK(train_linear_probe(vtr, vva, lo).top1 > 90);
}

TEST_CASE("the kNN vote: a small temperature does not overflow; top-5 counts only classes a neighbour voted for") {
  // Six classes, two training rows each along its own axis; each test row is a copy of a training
  // row of the next class (so every vote is wrong).
  const int64_t classes = 6;
  std::vector<float> train(12 * classes, 0.f), test(classes * classes, 0.f);
  std::vector<int64_t> train_labels, test_labels;
  for (int64_t c = 0; c < classes; ++c) {
    for (int64_t copy = 0; copy < 2; ++copy) {
      train[(2 * c + copy) * classes + c] = 1.f;
      train_labels.push_back(c);
    }
    test[c * classes + c] = 1.f;
    test_labels.push_back((c + 1) % classes);
  }
  const Tensor tr = from_vector(train, {2 * classes, classes}), te = from_vector(test, {classes, classes});
  const Tensor trl = from_vector(train_labels, {2 * classes}), tel = from_vector(test_labels, {classes});
  // One neighbour: the true class got no vote, so it is not among the "first five" whatever its
  // number (a tie at zero among unvoted classes used to count the lower-numbered ones).
  KnnResult one = knn_classify(tr, trl, te, tel, classes, 1, 0.07);
  CHECK(one.top1 == 0);
  CHECK(one.top5 == 0);
  // Three neighbours: the two copies (similarity 1) and the lowest row of the rest (similarity 0:
  // row 0, of class 0, or row 2, of class 1, for the test row that copies row 0). Top-5 is right
  // where that row is of the true class: for the test rows of truth 1 and 0.
  KnnResult three = knn_classify(tr, trl, te, tel, classes, 3, 0.07);
  CHECK(three.top1 == 0);
  CHECK(three.correct5 == 2);
  // T = 0.001: exp(1 / T) is inf in f64; each row is then classified by its nearest neighbours,
  // not by a tie of infinities (won by class 0).
  const Tensor own = from_vector(train_labels, {2 * classes}).narrow(0, 0, 2 * classes);
  KnnResult cold = knn_classify(tr, trl, tr, own, classes, 4, 0.001);
  CHECK(cold.top1 == 100);
}

TEST_CASE("the linear probe sees every row each epoch, the last batch partial (but not of one row with BatchNorm)") {
  CHECK(linear_probe_steps(48, 24, false) == 2);
  CHECK(linear_probe_steps(25, 24, false) == 2);  // DINO's loader keeps the last, partial batch
  CHECK(linear_probe_steps(26, 24, true) == 2);
  CHECK(linear_probe_steps(25, 24, true) == 1);  // a batch of one row has no batch variance
  CHECK(linear_probe_steps(1, 24, true) == 1);
  CHECK(linear_probe_steps(10, 24, false) == 1);
  // Classes 0 and 1 in the first 24 rows; row 24 alone is class 2, and the validation rows are
  // class 2, next to it: the probe learns it.
  auto row = [](float a, float b, float c) { return std::vector<float>{a, b, c}; };
  std::vector<float> x;
  std::vector<int64_t> y;
  for (int i = 0; i < 24; ++i) {
    const std::vector<float> r = i % 2 ? row(0, 4, 0) : row(4, 0, 0);
    x.insert(x.end(), r.begin(), r.end());
    y.push_back(i % 2);
  }
  for (float v : row(0, 0, 4)) x.push_back(v);
  y.push_back(2);
  const FeatureSet train{from_vector(x, {25, 3}), from_vector(y, {25}), 3};
  const FeatureSet val{from_vector(std::vector<float>{0, 0, 4, 0.2f, 0, 4}, {2, 3}),
                       from_vector(std::vector<int64_t>{2, 2}, {2}), 3};
  LinearProbeOptions o;
  o.epochs = 40;
  o.lr = 20;
  o.batch_size = 24;
  o.verbose = false;
  CHECK(train_linear_probe(train, val, o).top1 == 100);
  // With the BatchNorm head the batch of one row is left out: the running statistics stay finite
  // (its variance, over n - 1 = 0, would make them NaN, and every prediction with them).
  o.bn_head = true;
  const FeatureSet val01{from_vector(std::vector<float>{4, 0, 0, 0, 4, 0}, {2, 3}),
                         from_vector(std::vector<int64_t>{0, 1}, {2}), 3};
  CHECK(train_linear_probe(train, val01, o).top1 == 100);
  // A learning rate that makes the classifier diverge is an error, not a NaN classifier's accuracy.
  o.bn_head = false;
  o.lr = 1e38;
  CHECK_THROWS_WITH_AS(train_linear_probe(train, val01, o),
                       doctest::Contains("linear probe: non-finite loss (nan) in epoch "), Error);
}

TEST_CASE("a contiguous part's augmented crops are the whole folder's crops of the same images") {
  // The probe's --linear_aug views (RandomResizedCrop + flip), keyed by each image's index in the
  // whole folder: the ranks of a data-parallel bamprobe make one process's features between them.
  const data::Dataset whole = data::open_dataset(make_folder("part_crops", 3, 7, 4));
  FeatureOptions f;
  f.img_size = 12;
  f.batch_size = 4;
  f.threads = 2;
  f.augment = true;
  f.epoch = 3;
  f.seed = 9;
  const Tensor all = extract_features(nullptr, whole, f).features;
  std::vector<Tensor> parts;
  for (int64_t r = 0; r < 3; ++r) {
    const data::Dataset part = data::contiguous_part(whole, r, 3);
    CHECK(part.first_index == r * 21 / 3);
    parts.push_back(extract_features(nullptr, part, f).features);
  }
  CHECK(max(abs(sub(cat(parts, 0), all))).item() == 0);
  // Another epoch draws other crops (so the comparison above can fail).
  f.epoch = 4;
  CHECK(max(abs(sub(extract_features(nullptr, whole, f).features, all))).item() > 0);
}

TEST_CASE(
    "arena reservations: what does not fit takes nothing, the last range can be given back, and threads get disjoint "
    "ranges") {
  std::atomic<int64_t> used{0};
  CHECK(data::reserve_in_arena(used, 60, 100) == 0);
  CHECK(data::reserve_in_arena(used, 50, 100) == -1);  // does not fit ...
  CHECK(used.load() == 60);                      // ... and takes nothing
  CHECK(data::reserve_in_arena(used, 40, 100) == 60);  // so a smaller one after it still fits
  CHECK(data::reserve_in_arena(used, 1, 100) == -1);
  // An image that did not use its range gives it back when it is the last one taken ...
  CHECK(data::release_in_arena(used, 60, 40));
  CHECK(used.load() == 60);
  CHECK(data::reserve_in_arena(used, 30, 100) == 60);
  // ... and not otherwise: a range reserved after it stays where it is.
  CHECK(!data::release_in_arena(used, 0, 60));
  CHECK(used.load() == 90);

  // Four threads reserving sizes 1..37 at random: the ranges they get never overlap, stay inside
  // the arena, and together account for exactly what `used` says.
  constexpr int64_t capacity = 20000;
  std::atomic<int64_t> shared{0};
  std::vector<std::vector<std::pair<int64_t, int64_t>>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 gen(100 + t);
      for (int i = 0; i < 1000; ++i) {
        const int64_t bytes = 1 + static_cast<int64_t>(gen() % 37);
        const int64_t at = data::reserve_in_arena(shared, bytes, capacity);
        if (at >= 0) got[t].push_back({at, bytes});
      }
    });
  for (auto& th : threads) th.join();
  std::vector<std::pair<int64_t, int64_t>> all;
  for (auto& g : got) all.insert(all.end(), g.begin(), g.end());
  std::sort(all.begin(), all.end());
  int64_t total = 0, end = 0;
  for (auto [at, bytes] : all) {
    CHECK(at >= end);  // no overlap with the range before
    end = at + bytes;
    total += bytes;
  }
  CHECK(end <= capacity);
  CHECK(total == shared.load());
  CHECK(shared.load() > capacity - 37);  // the arena filled up to within one reservation
}

}  // namespace bam::test
