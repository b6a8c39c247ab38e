#!/usr/bin/env bash
# Builds the binaries the GPU machine runs, here (it has no compiler packages
# or network), and gathers them with the shared libraries they need that the
# GPU machine lacks into dist/cuda/ (git-ignored): tapelm, tapelm_tests and
# tapelm_bench for x86-64-v4 with the CUDA device, without MPI. The GPU
# machine supplies the NVIDIA driver, cuBLAS (CUDA 13.0) and glibc ≥ 2.34;
# libfmt, GoogleTest's and libgomp come from here, found through
# LD_LIBRARY_PATH=dist/cuda/lib (bench/cuda_device.sh sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-/tmp/tapelm-cuda-dist}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTAPELM_NATIVE=OFF -DTAPELM_MPI=OFF \
  -DCMAKE_CXX_FLAGS="-march=x86-64-v4 -mtune=generic" >/dev/null
ninja -C "$build" tapelm tapelm_tests tapelm_bench
rm -rf dist/cuda && mkdir -p dist/cuda/lib
cp "$build"/tapelm "$build"/tapelm_tests "$build"/tapelm_bench dist/cuda/
for bin in dist/cuda/tapelm dist/cuda/tapelm_tests dist/cuda/tapelm_bench; do
  ldd "$bin" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcublas*|libcuda.so*|libstdc++*|libgcc_s*) ;;  # the GPU machine's own (newer)
      *) cp -L -n "$lib" dist/cuda/lib/ ;;
    esac
  done
done
# The training run's corpus, from the shared folder beside the checkout (never committed).
if [ -f ../shared/data/tinyshakespeare.txt ]; then
  mkdir -p dist/cuda/data && cp ../shared/data/tinyshakespeare.txt dist/cuda/data/
fi
ls -la dist/cuda dist/cuda/lib
