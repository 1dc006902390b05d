// Errors that kernels find in their input, such as an out-of-range index, reported at the host's
// next wait for the device instead of by a wait of their own. A launch takes a slot, a device
// int64[2] that its kernel sets to {nonzero, offending value}, with a function that words the error
// from that value. The slots are page-locked host memory that the device writes through, so after
// each wait on the current stream (cuda::synchronize, a copy to the host) the host reads them at
// no cost, and throws the first error found. A kernel skips what it cannot do (a bad index reads
// and writes nothing), and no result reaches the host before its error does.
// Engine ops are queued from one host thread at a time: a slot is taken just before its kernel is
// queued, and a wait on another thread in between would free it unread.
// Only with the CUDA backend (engine/cuda_error_slots.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace bam::cuda {

// The slot for the next launch on the current stream (zeroed). With every slot still pending,
// waits for the device first (a rare extra wait: a slot per launch, a thousand between waits),
// which throws an earlier launch's error, if one was found, from here.
int64_t* error_slot(std::function<std::string(int64_t value)> describe);

// How many slots have been taken so far: read before a wait, and passed to throw_reported_errors
// after it, so that only the launches the wait covers are looked at.
int64_t error_slots_taken();
// Frees the slots of the launches before `launches_before_wait` and throws the first error among
// them, if any (bam::Error, the message from its describe function).
void throw_reported_errors(int64_t launches_before_wait);

}  // namespace bam::cuda
