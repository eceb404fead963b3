#!/usr/bin/env bash
# Runs the README's test command (scripts/test.sh) on a fresh Debian 13
# (trixie) root made with debootstrap, and prints the result and the time.
# Optionally builds every target against Debian's CUDA LibTorch there too.
#
# Usage (as root):
#   scripts/debian13_check.sh [--cuda] [--cuda-only] [--root DIR] [--mirror URL]
#
#   --cuda       after the suite passes, install contrib's libtorch-cuda-dev
#                and non-free's nvidia-cuda-toolkit in the root, configure
#                build-cuda/ against them, build every target and run the
#                suite again (no GPU here: the CUDA LibTorch runs on the CPU)
#   --cuda-only  skip the CPU suite (the root already passed it)
#   --root DIR   where the root lives (default /var/tmp/memaudit-trixie);
#                reused when it exists, so a second run skips debootstrap
#   --mirror URL Debian mirror (default http://deb.debian.org/debian)
#
# Debian's CUDA LibTorch depends on nvidia-cudnn, an installer that downloads
# cuDNN from developer.download.nvidia.com while it configures: where that
# host is unreachable the install stops there, libtorch-cuda-2.6 stays
# unconfigured (its files are unpacked) and linking fails on libcudnn.so.9.
#
# What is tested is a clone of this repository's HEAD (committed work only),
# as CI tests a clean clone. Logs: ROOT/root/memaudit-*.log.
# npm inside the root trusts the CA bundle named by NODE_EXTRA_CA_CERTS on
# the host (machines behind a TLS-inspecting proxy need it), copied in.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
root=/var/tmp/memaudit-trixie
mirror=http://deb.debian.org/debian
cuda=0
cpu=1
while (($#)); do
  case "$1" in
    --cuda) cuda=1 ;;
    --cuda-only) cuda=1 cpu=0 ;;
    --root) root=$2; shift ;;
    --mirror) mirror=$2; shift ;;
    *) echo "debian13-check: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
if [[ $(id -u) -ne 0 ]]; then
  echo "debian13-check: needs root (debootstrap, mount, chroot)" >&2
  exit 2
fi

start=$SECONDS
elapsed() { printf '%d min %02d s' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)); }
say() { echo "debian13-check [$(elapsed)]: $*"; }

if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap on the host"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap
fi
if [[ ! -f "$root/etc/debian_version" ]]; then
  say "debootstrap trixie into $root"
  debootstrap --variant=minbase --components=main,contrib,non-free trixie "$root" "$mirror" \
    >"/var/tmp/memaudit-debootstrap.log" 2>&1 ||
    { tail -20 /var/tmp/memaudit-debootstrap.log; exit 1; }
fi
say "root: Debian $(cat "$root/etc/debian_version")"

mounts=(proc sys dev dev/pts)
unmount() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount -l "$root/${mounts[i]}" 2>/dev/null || true
  done
}
trap unmount EXIT
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
cp /etc/resolv.conf "$root/etc/resolv.conf"
extra_ca=""
if [[ -n "${NODE_EXTRA_CA_CERTS:-}" && -f "$NODE_EXTRA_CA_CERTS" ]]; then
  cp "$NODE_EXTRA_CA_CERTS" "$root/etc/memaudit-host-ca.crt"
  extra_ca=/etc/memaudit-host-ca.crt
fi

# A fresh clone of HEAD each run; the root's packages and ccache persist.
rm -rf "$root/root/memaudit"
git clone -q --no-hardlinks "$repo" "$root/root/memaudit"
say "testing $(git -C "$repo" log -1 --format='%h %s' | cut -c1-72)"

in_root() {  # command line, log file
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    NODE_EXTRA_CA_CERTS="$extra_ca" DEBIAN_FRONTEND=noninteractive \
    bash -c "cd /root/memaudit && $1" >"$root/root/$2" 2>&1
}
summary() {  # log file: CTest's verdict line, or the log's tail
  grep -E "tests passed|tests failed" "$root/root/$1" || tail -30 "$root/root/$1"
  grep -E "^\s+[0-9]+ - .*\((Failed|Timeout|Not Run|SEGFAULT|Subprocess)" "$root/root/$1" || true
}

if ((cpu)); then
  say "scripts/test.sh (setup, build, suite) in the root"
  status=0
  in_root "bash scripts/test.sh" memaudit-test.log || status=$?
  summary memaudit-test.log
  if ((status != 0)); then
    say "FAILED (exit $status); log: $root/root/memaudit-test.log"
    exit 1
  fi
  say "PASSED: the README's test command on Debian 13"
fi

if ((cuda)); then
  say "MEMAUDIT_LIBTORCH=cuda scripts/setup.sh: libtorch-cuda-dev, nvidia-cuda-toolkit"
  in_root "MEMAUDIT_LIBTORCH=cuda scripts/setup.sh" memaudit-cuda-install.log ||
    { tail -30 "$root/root/memaudit-cuda-install.log"; exit 1; }
  say "configuring and building every target against the CUDA LibTorch"
  status=0
  in_root "cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo && \
    grep -E '^(Torch_DIR|CUDA_TOOLKIT_ROOT_DIR|CUDAToolkit_NVCC_EXECUTABLE)' build-cuda/CMakeCache.txt && \
    ninja -C build-cuda -j 2" memaudit-cuda-build.log || status=$?
  grep -E "Torch_DIR|CUDA|Linking CXX executable" "$root/root/memaudit-cuda-build.log" | tail -12
  if ((status != 0)); then
    tail -30 "$root/root/memaudit-cuda-build.log"
    say "CUDA build FAILED; log: $root/root/memaudit-cuda-build.log"
    exit 1
  fi
  say "CUDA build linked; running the suite against the CUDA LibTorch (on the CPU)"
  status=0
  in_root "cd build-cuda && ctest --output-on-failure -j 2" memaudit-cuda-test.log || status=$?
  summary memaudit-cuda-test.log
  if ((status != 0)); then
    say "suite against the CUDA LibTorch FAILED; log: $root/root/memaudit-cuda-test.log"
    exit 1
  fi
  say "PASSED: every target built against libtorch-cuda-dev, suite passed on the CPU"
fi
