#!/usr/bin/env bash
# Every benchmark (`just bench`). Benchmarks are not tests and never run in CI: each prints its
# own numbers and the ratio against the reference measured in the same run, on this machine.
# Needs Python with torch + transformers (random full-size weights, PyTorch reference),
# pydensecrf2 and scikit-image. Run on an otherwise idle machine. The GPU benchmark is separate:
# `just build-gpu-bench` here, then `bash bench/gpu.sh` on the GPU machine (README, "GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-/tmp/clip-b16-random}
[ -f "$MODEL/model.safetensors" ] || python3 tests/reference/make_tiny_clip.py --full "$MODEL"

echo "== dense inference vs PyTorch (issues 3, 7)";      MODEL=$MODEL bash bench/infer_speed.sh
echo "== sweep sharing: 16 configurations vs 1 (issue 7)"; SEGSWEEP_BENCH_MODEL=$MODEL bash bench/sweep_sharing.sh
echo "== the runner on JPEGs: decoding ahead, pipelined (issue 7)"; bash bench/loading.sh
echo "== refiner cost vs the backbone pass (issue 5)"
cargo run --release -q -p segsweep-plugin-cliptrase --example refiner_cost -- "$MODEL"
cargo run --release -q -p segsweep-plugin-resclip --example refiner_bench -- "$MODEL"
echo "== DenseCRF vs pydensecrf (issue 6)";               bash bench/densecrf.sh
echo "== LoftUp time and memory (issue 8)";               bash bench/loftup.sh
