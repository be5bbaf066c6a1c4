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
ls -la bench/out/gpu-bin
