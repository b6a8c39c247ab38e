#!/usr/bin/env bash
# Data-parallel scaling on a many-core machine without Debian's packages: the
# same global batch on 1 rank × 16 threads, 2 × 8, 4 × 4, 8 × 2 and 16 × 1,
# for the small and mid shapes, tokens/s and the all-reduce's share of the
# step (from each run's log.jsonl summary). JSON lines go to $OUT/dp.jsonl.
#
# Put beside this script (the folder is what the device call carries):
#   tapelm       cmake -S . -B /tmp/b-mpi -G Ninja -DTAPELM_NATIVE=OFF -DTAPELM_BUILD_TESTS=OFF \
#                  -DCMAKE_CXX_FLAGS=-march=x86-64-v4 && cmake --build /tmp/b-mpi --target tapelm
#                (dynamic: it links Open MPI's libmpi.so)
#   debs/        apt-get download openmpi-bin openmpi-common libopenmpi3 and the libraries they and
#                tapelm load (bench/dp_device.sh lists them: DEBS below), unpacked here with dpkg -x
#                into a folder of their own, never into /
#   corpus.txt   any text of a megabyte or so (../shared/data/tinyshakespeare.txt)
#
# DEBS: openmpi-bin openmpi-common libopenmpi3 libpmix2 libevent-core-2.1-7 libevent-pthreads-2.1-7
#   libfabric1 libhwloc15 libibverbs1 ibverbs-providers libmunge2 libnl-3-200 libnl-route-3-200 libnuma1
#   libpsm-infinipath1 libpsm2-2 librdmacm1 libucx0 libudev1 libuuid1 libatomic1 libfmt9 libgomp1
#   libstdc++6 libgcc-s1 libc6 zlib1g libltdl7
set -u
cd "$(dirname "$0")"
OUT=${OUT:-.}
HERE=$PWD
ROOT=$HERE/mpi-root
REPEAT=${REPEAT:-2}
SHAPES=${SHAPES:-"small mid"}
LAYOUTS=${LAYOUTS:-"1x16 2x8 4x4 8x2 16x1"}
BINDS=${BINDS:-"none core"}  # none: --bind-to none; core: --map-by slot:PE=threads --bind-to core
MPI_EXTRA=${MPI_EXTRA:-}     # more mpirun flags (e.g. --mca coll_tuned_allreduce_algorithm 4), in the label

# Unpack with dpkg -x; where there is no dpkg, with Python (a .deb is an ar
# archive holding data.tar.*). libc6 goes to a folder of its own: it is only
# used (with its own loader) where this machine's C library is older.
unpack() {  # DEB DIR
  dpkg -x "$1" "$2" 2>/dev/null && return 0
  python3 - "$1" "$2" <<'PY'
import io, sys, tarfile
data = open(sys.argv[1], 'rb').read()
pos = 8
while pos < len(data):
    name = data[pos:pos + 16].decode().strip().rstrip('/')
    size = int(data[pos + 48:pos + 58].decode().strip())
    body = data[pos + 60:pos + 60 + size]
    if name.startswith('data.tar'):
        tarfile.open(fileobj=io.BytesIO(body)).extractall(sys.argv[2])
    pos += 60 + size + (size & 1)
PY
}
rm -rf "$ROOT" "$HERE/libc-root" "$HERE/runs"
mkdir -p "$HERE/runs"
mkdir -p "$ROOT" "$HERE/libc-root"
for deb in debs/*.deb; do
  case $(basename "$deb") in
    libc6_*) unpack "$deb" "$HERE/libc-root" ;;
    *) unpack "$deb" "$ROOT" ;;
  esac
done
export OPAL_PREFIX=$ROOT/usr PATH=$ROOT/usr/bin:$PATH
LIBS=$ROOT/usr/lib/x86_64-linux-gnu:$ROOT/usr/lib/x86_64-linux-gnu/openmpi/lib:$ROOT/lib/x86_64-linux-gnu
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_plm_rsh_agent=false
# Containers: /dev/shm may be too small for 16 ranks' shared-memory segments,
# and process_vm_readv (the single-copy path) may be forbidden.
# SINGLE_COPY=cma tries the single-copy path.
export OMPI_MCA_btl_vader_backing_directory=/tmp OMPI_MCA_btl_vader_single_copy_mechanism=${SINGLE_COPY:-none}
# Set here so that tapelm does not re-execute itself to set it (it would
# choose "active" anyway: the threads fit the CPUs).
export OMP_WAIT_POLICY=active

{
  lscpu | grep -E "Model name|^CPU\(s\)|Thread|Socket|L2|L3"
  ldd --version 2>&1 | head -1
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# How to start programs: with this machine's C library, or with Debian's
# (its loader in front of every program) where that one is too old.
LAUNCH=()
TOOL=("$HERE/tapelm")
if ! LD_LIBRARY_PATH=$LIBS "$HERE/tapelm" --help > /dev/null 2> "$OUT/probe.txt"; then
  echo "this machine's C library does not run the Debian build ($(head -c 300 "$OUT/probe.txt")); using Debian's loader"
  LIBS=$LIBS:$HERE/libc-root/lib/x86_64-linux-gnu
  LOADER=$HERE/libc-root/lib64/ld-linux-x86-64.so.2
  LAUNCH=("$LOADER" --library-path "$LIBS")
  TOOL=("$LOADER" --library-path "$LIBS" "$HERE/tapelm")
fi
export LD_LIBRARY_PATH=$LIBS
MPIRUN=("${LAUNCH[@]}" "$ROOT/usr/bin/orterun")
"${MPIRUN[@]}" --version 2>&1 | head -1

SMALL="--n-layer 4 --n-head 4 --n-embd 128 --context 64 --batch 16 --steps 80 --warmup 10"
MID="--n-layer 6 --n-head 6 --n-embd 384 --context 256 --batch 16 --steps 10 --warmup 2"
flags() { case $1 in small) echo "$SMALL" ;; mid) echo "$MID" ;; esac; }

for rep in $(seq "$REPEAT"); do
  for shape in $SHAPES; do
    for layout in $LAYOUTS; do
      ranks=${layout%x*}
      threads=${layout#*x}
      for bind in $BINDS; do
        out=$HERE/runs/$shape-$layout-$bind-$rep
        rm -rf "$out"
        if [[ $bind == none ]]; then
          place=(--bind-to none)
        else
          place=(--map-by "slot:PE=$threads" --bind-to core)
        fi
        timeout 300 "${MPIRUN[@]}" --oversubscribe "${place[@]}" $MPI_EXTRA -np "$ranks" "${TOOL[@]}" train \
          --data corpus.txt --out "$out" $(flags "$shape") --threads "$threads" --eval-interval 100000 \
          --eval-batches 1 --log-interval 100000 --quiet > "$out.txt" 2>&1
        code=$?
        python3 - "$out/log.jsonl" "$shape" "$layout" "$bind" "$code" "$MPI_EXTRA ${OMPI_MCA_btl_vader_single_copy_mechanism:+single_copy=$OMPI_MCA_btl_vader_single_copy_mechanism}" <<'PY' | tee -a "$OUT/dp.jsonl"
import json, sys
path, shape, layout, bind, code, mpi = sys.argv[1:]
summary = {}
try:
    for line in open(path):
        j = json.loads(line)
        if j.get('summary'):
            summary = j
except OSError:
    pass
print(json.dumps({'shape': shape, 'layout': layout, 'bind': bind, 'mpi': mpi.strip(), 'exit': int(code),
                  'tokens_per_s': summary.get('tokens_per_s'), 'allreduce_share': summary.get('allreduce_share'),
                  'allreduce_ms': 1e3 * summary['allreduce_s_per_step'] if 'allreduce_s_per_step' in summary else None,
                  'gflops_per_s': summary.get('gflops_per_s'), 'N': summary.get('N')}))
PY
        [[ $code -ne 0 ]] && tail -n 20 "$out.txt"
      done
    done
  done
done
exit 0
