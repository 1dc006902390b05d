// tune_host_allocator (engine/host_allocator.h): a worker thread that decodes JPEGs over and over
// reuses its heap instead of taking fresh, zero-filled pages from the kernel for every image.
// Page faults are counted with getrusage(RUSAGE_THREAD): without the tuning each 500x375 decode
// maps its ~1.5 MB of buffers afresh, about 350 minor faults per image.
#include <sys/resource.h>

#include <thread>

#include "data/image_decode.h"
#include "engine/host_allocator.h"
#include "tests/doctest_text.h"
#include "tests/gpu_batch_support.h"
#include "tests/jpeg_test_support.h"

namespace bam::test {
namespace {

TEST_CASE("after tune_host_allocator, repeated JPEG decodes on a worker thread stop faulting in fresh pages") {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  MESSAGE("skipped: the sanitizer replaces glibc's malloc, which tune_host_allocator tunes");
#elif defined(__GLIBC__) && defined(RUSAGE_THREAD)
  tune_host_allocator();
  const ImageFile photo = gpu_test_corpus(test_seed())[0];
  REQUIRE(photo.name.find("500x375") != std::string::npos);
  constexpr int kImages = 40;
  long faults = -1;
  std::thread worker([&] {
    auto decode = [&] { (void)data::decode_image(photo.bytes.data(), photo.bytes.size(), photo.name); };
    for (int i = 0; i < 3; ++i) decode();  // the thread's heap grows once
    rusage before{}, after{};
    getrusage(RUSAGE_THREAD, &before);
    for (int i = 0; i < kImages; ++i) decode();
    getrusage(RUSAGE_THREAD, &after);
    faults = after.ru_minflt - before.ru_minflt;
  });
  worker.join();
  MESSAGE("minor page faults over " << kImages << " decodes: " << faults);
  CHECK(faults < kImages * 20);
#else
  MESSAGE("not glibc on Linux: tune_host_allocator does nothing here");
#endif
}

}  // namespace
}  // namespace bam::test
