# Sourced by the scripts that run on the lent GPU machine (bench/cuda_device.sh,
# bench/cuda_bench.sh): the libraries dist/cuda/ carries, and the machine's
# cuBLAS (opened at the first product) where the loader's cache does not list it.
cublas_dir=/usr/local/cuda/lib64
if ! ldconfig -p | grep -q 'libcublas.so.13'; then
  found=$(find /usr/local /usr/lib /opt -name 'libcublas.so.13*' 2>/dev/null | head -1)
  [ -n "$found" ] && cublas_dir=$(dirname "$found")
fi
export LD_LIBRARY_PATH="$PWD/dist/cuda/lib:$cublas_dir:${LD_LIBRARY_PATH:-}"
export TAPELM_SOURCE_DIR="$PWD"
