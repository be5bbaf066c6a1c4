#!/usr/bin/env bash
# LoftUp CPU benchmark (not a test): time and peak RSS per VOC-sized image (336×500) with a
# full-size RANDOM checkpoint (dim 512, same shapes as haiwen/loftup-clip; timing does not
# depend on the values). Usage: bench/loftup.sh [checkpoint.bin] [tile_rows]
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT="${1:-${TMPDIR:-/tmp}/loftup_full_random.bin}"
TILE="${2:-16}"
if [ ! -f "$CKPT" ]; then
  python3 tests/reference/loftup_reference.py --full "$CKPT"
fi
cargo build --release -q -p segsweep-plugin-loftup --example loftup_bench
BIN=target/release/examples/loftup_bench
echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), candle 0.11.1, f32"
for c in crops-s4 crops-s2 crops-s1 whole-s4 whole-s2 whole-s1; do
  "$BIN" "$CKPT" "$c" "$TILE"
done
