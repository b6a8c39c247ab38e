// A seedable random generator so that every run (weights, dropout, batches)
// is reproducible from one integer. SplitMix64-seeded xoshiro256** with our own
// normal sampler, so streams are identical across compilers and libstdc++s.
#pragma once
#include <array>
#include <cstdint>
#include <cstring>

namespace tapelm {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) { manual_seed(seed); }
  void manual_seed(uint64_t seed);
  uint64_t next_u64();
  // Uniform in [0, 1).
  double uniform();
  // Standard normal (Box–Muller; the second value of each pair is kept).
  double normal();
  // Uniform integer in [0, n).
  uint64_t randint(uint64_t n);

  // The full state, for checkpoints that must resume bit-exactly.
  struct State {
    std::array<uint64_t, 4> s;
    bool has_spare;
    double spare;
    // As six words (the spare's bits as the last), to store or send.
    std::array<uint64_t, 6> words() const {
      uint64_t spare_bits;
      std::memcpy(&spare_bits, &spare, 8);
      return {s[0], s[1], s[2], s[3], has_spare ? 1u : 0u, spare_bits};
    }
    static State from_words(const uint64_t* w) {
      State st{{w[0], w[1], w[2], w[3]}, w[4] != 0, 0.0};
      std::memcpy(&st.spare, &w[5], 8);
      return st;
    }
  };
  State state() const { return {s_, has_spare_, spare_}; }
  void set_state(const State& st) {
    s_ = st.s;
    has_spare_ = st.has_spare;
    spare_ = st.spare;
  }

 private:
  std::array<uint64_t, 4> s_{};
  bool has_spare_ = false;
  double spare_ = 0;
};

// The process-wide default generator (like torch.manual_seed).
Generator& default_generator();
void manual_seed(uint64_t seed);

}  // namespace tapelm
