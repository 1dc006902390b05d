// Ctrl-C (SIGINT), SIGTERM and SIGHUP (a closed terminal) as a request to stop training, not a
// kill: bamtrain finishes the step in progress, saves its checkpoint and exits by the same signal,
// so that the same command resumes where it stopped and a calling shell or launcher still sees the
// signal. A second signal ends the process at once, without saving. The same request delivered
// twice within a second counts once: Ctrl-C reaches a rank both from the terminal and through the
// --nproc_per_node launcher (or torchrun), which passes it on.
#pragma once

namespace bam {

// Installs the handlers for SIGINT, SIGTERM and SIGHUP, except for one the process was started
// ignoring (nohup ignores SIGHUP; a shell starts a script's background commands ignoring SIGINT).
// bamtrain calls it once its run is about to start; before that, a signal ends the process as usual.
void install_stop_signal_handlers();
// Whether this process was started with `signal` ignored (nohup's SIGHUP, a script's background
// command's SIGINT): such a signal is left ignored, here and in the processes it starts.
bool started_ignoring(int signal);
// The first stop signal received since the handlers were installed (SIGINT, SIGTERM or SIGHUP), or 0.
// Any thread may ask; the trainer asks between steps and between epochs.
int stop_signal();
// Forgets a received signal (for tests, which raise one in-process).
void clear_stop_signal();
// "SIGINT", "SIGTERM", "SIGHUP" or "signal N".
const char* stop_signal_name(int signal);
// Ends the process by `signal`, with its default action, as if the handlers were never installed.
[[noreturn]] void exit_by_signal(int signal);

}  // namespace bam
