#!/usr/bin/env bash
# Pack the CUDA binaries built by `scripts/build-cuda.sh --bench` for the trip to a GPU machine:
# stripped and xz-compressed into bench/out/gpu-bin/ (ignored by git, ~11 MB each), which
# bench/gpu.sh unpacks there with Python's lzma.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out/gpu-bin
for b in segsweep bench_infer block_profile cuda_ops cuda_fused; do
    strip -o "bench/out/gpu-bin/$b" "target/$b-cuda"
    xz -T0 -6 -f "bench/out/gpu-bin/$b"
done
# The commit the binaries were built from (with "+dirty" for uncommitted changes), so a later
# session can tell whether they are stale; bench/gpu.sh prints it.
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates plugins Cargo.toml Cargo.lock || echo +dirty)" \
    > bench/out/gpu-bin/commit.txt
ls -la bench/out/gpu-bin
