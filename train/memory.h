// The process's memory, as the benchmarks and `sample --stats` report it.
#pragma once

namespace tapelm::train {

double resident_mb();       // resident set now (/proc/self/statm), MiB
double peak_resident_mb();  // the largest resident set so far (getrusage), MiB

}  // namespace tapelm::train
