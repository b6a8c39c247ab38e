# Sourced by the benchmarks: train_tokens_per_s CONTEXT THREADS [tapelm_bench flags...]
# prints the median training tokens/s of L4 H4 d128 at batch 4 over 10 steps
# after 2 warm-up steps (tapelm_bench on random tokens; $TAPELM_BENCH names another build).
train_tokens_per_s() {
  local T=$1 threads=$2
  shift 2
  "${TAPELM_BENCH:-build/tapelm_bench}" --json --context "$T" --batch 4 --steps 10 --warmup 2 --threads "$threads" "$@" |
    sed 's/.*"tokens_per_s":\([0-9.]*\).*/\1/'
}
