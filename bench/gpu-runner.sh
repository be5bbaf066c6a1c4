#!/usr/bin/env bash
# The runner and every plugin on the GPU (a check, not a benchmark; random weights, synthetic
# data): the shipped phase specs (phase2a: cliptrase + clip-rc; phase1: resclip + loftup +
# densecrf; full: all of them) on the built-in tiny random CLIP and the tiny LoftUp fixture,
# run three ways with the same binary, then compared:
#   cpu        — model.device = "cpu"
#   cuda       — model.device = "cuda:0" (f32, candle's ops: SEGSWEEP_CUDA_KERNELS=candle)
#   cuda-spill — the same with memory_budget_mb = 0 and spill = "f32" (prefixes leave the GPU
#                for a scratch file and come back)
#   cuda-fused — cuda with segsweep's own kernels (SEGSWEEP_CUDA_KERNELS=fused: block ops,
#                attention, post-processing)
#   cuda-piped — cuda-fused with the next image batch's prefixes on a second thread (its own
#                stream; SEGSWEEP_PIPELINE=1), in batches of 2 crops (one image each: 2 batches)
# cuda-spill must equal cuda exactly; cuda, cuda-fused and cuda-piped must agree with cpu within
# float noise.
#
#   bash bench/gpu-runner.sh      # on the GPU machine, after bench/gpu.sh unpacked $BIN
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/segsweep-gpu-runner}
BIN=${BIN:-/tmp/segsweep-gpu-bin}
DEVICE=${DEVICE:-cuda:0}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
mkdir -p "$OUT"
LOFTUP=tests/fixtures/loftup/tiny_loftup.bin

for spec in phase2a phase1 full; do
    for mode in cpu cuda cuda-spill cuda-fused cuda-piped; do
        dev=$DEVICE
        extra=()
        kernels=candle
        piped=0
        [ "$mode" = cuda-fused ] && kernels=fused
        [ "$mode" = cuda-piped ] && kernels=fused && piped=1 && extra=(--set inference.batch_size=2)
        [ "$mode" = cpu ] && dev=cpu
        [ "$mode" = cuda-spill ] && extra=(--set experiment.memory_budget_mb=0 --set experiment.spill=f32)
        [ "$spec" != phase2a ] && extra+=(--set "loftup.checkpoint=$LOFTUP")
        SEGSWEEP_PIPELINE=$piped SEGSWEEP_CUDA_KERNELS=$kernels timeout 120 "$BIN/segsweep" sweep "experiments/$spec.toml" --quiet \
            --set model.source=builtin:tiny-random --set "model.device=$dev" \
            --set dataset.name=synthetic --set dataset.synthetic_images=2 \
            --set "experiment.output_dir=$OUT/$mode" "${extra[@]}" \
            >"$OUT/$spec-$mode.log" 2>&1 || { echo "FAILED: $spec $mode"; tail -5 "$OUT/$spec-$mode.log"; }
    done
done

python3 - "$OUT" <<'PY'
import csv, glob, json, sys
out = sys.argv[1]
def table(mode):
    # Keyed by spec and variant: the device is part of a configuration's hash.
    rows = {}
    for f in glob.glob(f"{out}/{mode}/*/*/summary.csv"):
        for r in csv.DictReader(open(f)):
            rows[(f.split("/")[-3], r["variant"])] = r
    return rows
cpu, cuda, spill, fused = table("cpu"), table("cuda"), table("cuda-spill"), table("cuda-fused")
piped = table("cuda-piped")
res = {"configurations": {"cpu": len(cpu), "cuda": len(cuda), "cuda-spill": len(spill), "cuda-fused": len(fused), "cuda-piped": len(piped)}}
keys = ("miou_pct", "person_iou_pct", "aacc_pct")
def maxdiff(a, b):
    common = set(a) & set(b)
    return len(common), max((abs(float(a[k][c]) - float(b[k][c])) for k in common for c in keys), default=None)
res["cuda_vs_cpu"] = dict(zip(("compared", "max_abs_diff_points"), maxdiff(cuda, cpu)))
res["spill_vs_cuda"] = dict(zip(("compared", "max_abs_diff_points"), maxdiff(spill, cuda)))
res["fused_vs_cpu"] = dict(zip(("compared", "max_abs_diff_points"), maxdiff(fused, cpu)))
res["piped_vs_cpu"] = dict(zip(("compared", "max_abs_diff_points"), maxdiff(piped, cpu)))
mem = glob.glob(f"{out}/cuda-spill/*/*/memory.json")
res["spill_memory"] = [{k: json.load(open(m)).get(k) for k in ("prefix_spills", "prefix_reloads", "spilled_bytes")} for m in mem]
res["dense_batched_images"] = {
    mode: sum(json.load(open(m)).get("dense_batched_images", 0) for m in glob.glob(f"{out}/{mode}/*/*/memory.json"))
    for mode in ("cpu", "cuda", "cuda-spill", "cuda-fused", "cuda-piped")}
print(json.dumps(res, indent=1))
PY
