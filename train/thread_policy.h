// How OpenMP's idle workers wait, chosen before the runtime starts.
//
// Between two parallel regions of a training step a worker either spins
// (OMP_WAIT_POLICY=active) or sleeps in the kernel (passive). Measured with
// tapelm_bench (docs/performance.md): on the 16-core machine spinning was the
// fastest at 4 and 16 threads (small config at 16 threads: 42.8k tokens/s
// active, 39.5k libgomp's default, 31.6k passive), and on the 2-core VM too,
// idle (30.7k active vs 27.5k passive) and with the other core busy (19.2k vs
// 5.6k), because a sleeping worker pays a wake-up for each of the step's
// hundreds of regions. Spinning only loses when there are more threads than
// CPUs to spin on, so: active when the thread count fits the CPUs this process
// may run on, passive when it does not. `tapelm tokenize` is the exception:
// between its few large regions the main thread reads and writes files, and
// a spinning worker slows it (2-core machine, 44.6 MB: 33.5 MB/s passive,
// 28.5 active), so it waits passively. A policy set by the user is kept.
// Placement (OMP_PROC_BIND, OMP_PLACES) is the user's: the re-execution hands
// on the CPUs of libgomp's places, not the one CPU it pinned this thread to.
#pragma once
#include <string>

namespace tapelm::train {

// The thread count when none is asked for: OMP_NUM_THREADS if set, else the
// CPUs this process may run on, shared out among the ranks of an mpirun job
// on this machine when the launcher left each of them every CPU
// (`mpirun --bind-to none`): 2 ranks on 16 CPUs take 8 threads each.
int default_threads();

// Sets the OpenMP and Eigen thread count (n <= 0: leave the default). More
// threads than the CPUs this process may use run (under the passive wait
// policy, below) but share the CPUs, so each step is slower than at the CPU
// count: that prints one warning line on stderr.
void set_threads(int n);

// The thread count a run will use: the value of a `--threads N` flag in argv
// if positive, else default_threads().
int requested_threads(int argc, char** argv);

// A warning (empty if none) when an mpirun launcher bound this rank to fewer
// CPUs than its share of the machine: Open MPI binds each of 2 ranks to one
// core by default, which leaves the rest of a many-core machine idle.
std::string binding_warning();

// Unless OMP_WAIT_POLICY is set, sets it as above and re-executes the program
// (libgomp reads it once, when it loads); returns only if nothing changed or
// the re-execution failed.
void choose_wait_policy(int argc, char** argv);

}  // namespace tapelm::train
