#!/usr/bin/env bash
# The front door. On a fresh Debian 12 machine:
#   ./dev.sh run    install what is missing, build, run the main job: train a
#                   small GPT on the fortune cookies of Debian's 'fortunes'
#                   package (no download) and print a sample
#   ./dev.sh test   install what is missing, build, run every test (ctest)
#   ./dev.sh build  install what is missing and build only
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the build and the main job need.
PACKAGES=(cmake ninja-build g++ libeigen3-dev libfmt-dev libgtest-dev nlohmann-json3-dev libcli11-dev fortunes)

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

build() {
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j "$(nproc)"
}

case "${1:-}" in
  run)
    install_missing
    build
    ./build/tapelm train --data /usr/share/games/fortunes --out runs/fortunes \
      --steps 1000 --eval-interval 250 --log-interval 50
    echo "--- sample ---"
    ./build/tapelm sample --checkpoint runs/fortunes --tokens 500 --temperature 0.8 --seed 1
    ;;
  test)
    install_missing
    build
    cd build && ctest --output-on-failure -j "$(nproc)"
    ;;
  build)
    install_missing
    build
    ;;
  *)
    echo "usage: ./dev.sh run|test|build" >&2
    exit 2
    ;;
esac
