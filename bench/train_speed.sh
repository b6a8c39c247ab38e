# Sourced by the benchmarks: train_tokens_per_s CONTEXT THREADS [train flags...]
# trains briefly (batch 4, 8 steps) on $data and prints the tokens/s of the
# last logged interval (steps 5-8), so start-up and the first steps are excluded.
train_tokens_per_s() {
  local T=$1 threads=$2
  shift 2
  local dir
  dir=$(mktemp -d)
  build/tapelm train --data "$data" --out "$dir/r" --context "$T" --batch 4 --steps 8 --log-interval 4 \
    --eval-interval 1000 --eval-batches 1 --threads "$threads" --quiet "$@" >/dev/null
  tail -n 2 "$dir/r/log.jsonl" | head -n 1 | sed 's/.*"tokens_per_s":\([0-9.]*\).*/\1/'
  rm -rf "$dir"
}
