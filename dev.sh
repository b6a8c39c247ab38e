#!/usr/bin/env bash
# The front door. On a fresh Debian 12 machine:
#   ./dev.sh run    install what is missing, build, run the main job: train a
#                   small GPT on the fortune cookies of Debian's 'fortunes'
#                   package (no download) and print a sample
#   ./dev.sh test   install what is missing, build, run every test (ctest)
#   ./dev.sh build  install what is missing and build only
#   ./dev.sh sanitize  build with AddressSanitizer and UndefinedBehaviorSanitizer (GCC's
#                   "undefined" plus float-cast-overflow, which it leaves out)
#                   (build-sanitize/) and run every test under them
#   ./dev.sh fuzz [SECONDS]  build the libFuzzer harnesses with clang (build-fuzz/)
#                   and run each for SECONDS (default 600) from fuzz/corpus/
#   ./dev.sh check  the habits: clang-format would change nothing (.clang-format),
#                   the build has no warning (-Werror), each layer includes
#                   only the layers below it (autograd < nn, data < optim < train),
#                   and inside a layer no file includes one that includes it back
#   ./dev.sh format apply clang-format to every C++ file
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the build and the main job need.
PACKAGES=(cmake ninja-build g++ libeigen3-dev libfmt-dev libgtest-dev nlohmann-json3-dev libcli11-dev fortunes
  libopenmpi-dev openmpi-bin)  # Open MPI: data-parallel training (mpirun -np R build/tapelm train ...)

install_missing() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    local sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    echo "dev.sh: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# llama.cpp for tests/test_gguf.cpp: node-llama-cpp's prebuilt CPU build, the
# version pinned in tests/llama_cpp/package-lock.json, from the npm registry.
# Without Node.js or the registry the test says so and skips.
install_llama_cpp() {
  [[ -d tests/llama_cpp/node_modules/node-llama-cpp ]] && return
  if ! command -v npm >/dev/null; then
    echo "dev.sh: no npm here: the llama.cpp test will skip"
    return
  fi
  (cd tests/llama_cpp && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error) ||
    echo "dev.sh: could not install node-llama-cpp: the llama.cpp test will skip"
}

build() {  # [DIR [CMAKE OPTIONS...]]; $TARGETS (optional): build only these
  local dir=${1:-build}
  shift || true
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTAPELM_WERROR=ON "$@" >/dev/null
  # shellcheck disable=SC2086  # TARGETS is a word list
  cmake --build "$dir" -j "$(nproc)" ${TARGETS:+--target $TARGETS}
}

case "${1:-}" in
  run)
    install_missing
    build
    ./build/tapelm train --data /usr/share/games/fortunes --out runs/fortunes --overwrite \
      --steps 1000 --eval-interval 250 --log-interval 50
    echo "--- sample ---"
    ./build/tapelm sample --checkpoint runs/fortunes --tokens 500 --temperature 0.8 --seed 1
    ;;
  test)
    install_missing
    build
    install_llama_cpp
    cd build && ctest --output-on-failure -j "$(nproc)"
    ;;
  build)
    install_missing
    build
    ;;
  sanitize)
    install_missing
    # What the tests run (the tool and the suite), not the benchmarks.
    TARGETS="tapelm tapelm_tests" build build-sanitize -DTAPELM_SANITIZE=address,undefined,float-cast-overflow
    # detect_leaks: a leak is a failure too. MALLOC_PERTURB_ and the malloc
    # tuning do nothing under ASan, which has its own allocator.
    cd build-sanitize && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
      UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j "$(nproc)"
    ;;
  fuzz)
    PACKAGES+=(clang libomp-dev)
    install_missing
    CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Release -DTAPELM_FUZZ=ON \
      -DTAPELM_SANITIZE=address,undefined -DTAPELM_BUILD_TESTS=OFF >/dev/null
    cmake --build build-fuzz -j "$(nproc)" --target safetensors_fuzzer config_fuzzer tokenizer_fuzzer
    # Each harness explores from a copy of its seeds (findings: build-fuzz/crash-*).
    for f in safetensors config tokenizer; do
      mkdir -p "build-fuzz/corpus/$f"
      cp -n fuzz/corpus/$f/* "build-fuzz/corpus/$f/"
      (cd build-fuzz && ./${f}_fuzzer -max_total_time="${2:-600}" -max_len=65536 -rss_limit_mb=4096 \
        -print_final_stats=1 "corpus/$f" > "fuzz-$f.log" 2>&1; echo "$f: exit $?, $(ls "corpus/$f" | wc -l) inputs in its corpus") &
    done
    wait
    tail -n 12 build-fuzz/fuzz-*.log
    ;;
  check)
    PACKAGES+=(clang-format)
    install_missing
    status=0
    git ls-files '*.cpp' '*.h' | grep -v '^tests/golden' | xargs clang-format --dry-run -Werror || status=1
    build || status=1
    # The folder layout is the architecture: a layer includes itself and the
    # layers it is built on (CMakeLists.txt), never one above.
    for rule in "autograd:nn|optim|data|train" "nn:optim|data|train" "data:nn|optim|train" "optim:data|train"; do
      layer=${rule%%:*}
      if grep -rnE "#include \"(${rule#*:})/" "$layer"; then
        echo "dev.sh check: $layer/ includes a layer above it (above)" >&2
        status=1
      fi
    done
    # Inside a layer the files stack too: a module (foo.h with foo.cpp) never
    # includes, directly or through others, a module that includes it back.
    # tsort orders the include graph and names a loop if there is one.
    for layer in autograd nn data optim train; do
      edges=$(find "$layer" -name '*.h' -o -name '*.cpp' | while read -r file; do
        { grep -oE "^#include \"$layer/[^\"]+\\.h\"" "$file" || true; } | sed -E 's/#include "(.*)\.h"/\1/' |
          while read -r to; do if [[ $to != "${file%.*}" ]]; then echo "${file%.*} $to"; fi; done
      done)
      if ! loop=$(tsort <<<"$edges" 2>&1 >/dev/null); then
        echo "dev.sh check: in $layer/ these files include each other (a lower one includes a higher one):" >&2
        echo "$loop" >&2
        status=1
      fi
    done
    ((status == 0)) && echo "dev.sh check: format, warnings and include directions are clean"
    exit $status
    ;;
  format)
    PACKAGES+=(clang-format)
    install_missing
    git ls-files '*.cpp' '*.h' | grep -v '^tests/golden' | xargs clang-format -i
    ;;
  *)
    echo "usage: ./dev.sh run|test|build|sanitize|fuzz [SECONDS]|check|format" >&2
    exit 2
    ;;
esac
