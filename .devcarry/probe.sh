#!/usr/bin/env bash
# One device call: vCPU topology, thread binding, 1- and 4-thread mid shape.
set -u
cd "$(dirname "$0")"
B=./tapelm_bench_v4; G=./tapelm_gemm_bench_v4
MID="--n-layer 6 --n-head 6 --n-embd 384 --context 256 --batch 8"
lscpu | grep -E "Model name|^CPU\(s\)|NUMA|Thread|MHz"
echo "siblings of cpu0: $(cat /sys/devices/system/cpu/cpu0/topology/thread_siblings_list 2>/dev/null)"
./fma_probe 0 1 0,1 0,2 0,8 0,15 0,1,2,3 0,4,8,12 0,1,2,3,4,5,6,7 0,2,4,6,8,10,12,14 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
echo "== mid, 4 threads, binding"
for r in 1 2; do
  for bind in none close spread; do
    if [[ $bind == none ]]; then e="env -u OMP_PROC_BIND"; else e="env OMP_PROC_BIND=$bind OMP_PLACES=cores"; fi
    echo "-- tapelm $bind"; $e $B --threads 4 --steps 6 --warmup 2 $MID | sed -n 2p
    echo "-- torch $bind"; $e python3 torch_reference.py --threads 4 --steps 6 --warmup 2 $MID
  done
done
echo "== mid, 1 thread"
for r in 1 2; do
  $B --threads 1 --steps 4 --warmup 1 $MID | sed -n 2p
  python3 torch_reference.py --threads 1 --steps 4 --warmup 1 $MID
done
$B --threads 1 --steps 3 --warmup 1 $MID --profile | head -12
OMP_PROC_BIND=close OMP_PLACES=cores $B --threads 4 --steps 4 --warmup 2 $MID --profile | head -12
echo "== gemm 1 thread warm / cold"
$G --threads 1 --repeats 3 | grep -E "shape|mid"
$G --threads 1 --repeats 3 --cold | grep -E "mid"
