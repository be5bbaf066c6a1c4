#!/usr/bin/env bash
# A short GPU recheck (~2.5 min; a benchmark, not a test; RANDOM full-size ViT-B/16 weights) after
# a change to the default CUDA path, for a lease with little time left: each kernel against its
# CPU implementation (test binary cuda_ops, with each tensor-core attention kernel) and the tiny
# model with the default kernels against the CPU (cuda_fused), `segsweep predict` parity in f32
# and f16 against the CPU, bench_infer against PyTorch in f32 and f16 on the same GPU in the same
# run (f16 also with the WMMA attention kernel, SEGSWEEP_CUDA_ATTENTION=wmma), and one block op
# by op with either attention kernel, and the runner on JPEGs (bench/loading.sh: decoding ahead
# and the pipelined prefixes). bench/gpu.sh is the full run (candle's ops too, bf16, memory).
#
#   here:              just build-gpu-bench
#   on the GPU machine: OUT=/tmp/q bash bench/gpu-quick.sh   (SKIP_OPS=1: without cuda_ops)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/segsweep-gpu-quick}
BIN=${BIN:-/tmp/segsweep-gpu-bin}
MODEL=${MODEL:-/tmp/clip-b16-random}
REPS=${REPS:-5}
CLASSES=crates/data/classnames/voc21.txt
IMGDIR=$OUT/images
mkdir -p "$OUT" "$BIN" "$IMGDIR"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONUNBUFFERED=1
unset SEGSWEEP_CUDA_KERNELS SEGSWEEP_CUDA_ATTENTION  # the defaults are what this checks
step() { echo "== $(date +%T) $*"; }
for b in segsweep bench_infer block_profile cuda_ops cuda_fused; do
    python3 -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" \
        "bench/out/gpu-bin/$b.xz" "$BIN/$b" && chmod +x "$BIN/$b"
done
# CUDA libraries: /usr/local/cuda/lib64, else the ones PyTorch's wheels bring (as bench/gpu.sh).
if ! ldd "$BIN/segsweep" 2>/dev/null | grep -q "libcublas.so.13 => /"; then
    extra=$(python3 -c "import glob, os, site; print(':'.join(sorted({os.path.dirname(l) for sp in site.getsitepackages() for l in glob.glob(os.path.join(sp, 'nvidia', '**', 'lib*.so*'), recursive=True)})))")
    export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$extra
fi
if ! python3 -c "import open_clip" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
step "machine: $(nvidia-smi --query-gpu=name --format=csv,noheader), binaries of $(cat bench/out/gpu-bin/commit.txt)"
[ -f "$MODEL/model.safetensors" ] || python3 tests/reference/make_tiny_clip.py --full "$MODEL" >"$OUT/model.log" 2>&1 &
model=$!
step "each kernel vs its CPU implementation (attention: mma.sync, then WMMA), tiny model vs the CPU"
# SKIP_OPS=1 skips cuda_ops (~75 s) when no kernel changed since a run that passed it.
if [ "${SKIP_OPS:-0}" != 1 ]; then
    timeout 120 "$BIN/cuda_ops" --test-threads=1 2>&1 | grep -E "^test |test result|panicked|error"
    SEGSWEEP_CUDA_ATTENTION=wmma timeout 60 "$BIN/cuda_ops" --test-threads=1 attention 2>&1 \
        | grep -E "^test |test result|panicked" | sed 's/^/wmma: /'
fi
timeout 60 "$BIN/cuda_fused" --test-threads=1 2>&1 | grep -E "^test |test result"
wait $model
python3 bench/photos.py "$IMGDIR" --png
step "predict parity"
P="$BIN/segsweep predict --model $MODEL --classes $CLASSES --logit-scale 65 --prob-thd 0.1 --area-thd 0.1"
$P --device cpu --out "$OUT/pred-cpu" "$IMGDIR/chelsea.png" "$IMGDIR/coffee.png" >"$OUT/pred-cpu.log" 2>&1
for dt in f32 f16; do
    timeout 60 $P --device cuda:0 --dtype $dt --out "$OUT/pred-$dt" "$IMGDIR/chelsea.png" "$IMGDIR/coffee.png" \
        >"$OUT/pred-$dt.log" 2>&1 || tail -3 "$OUT/pred-$dt.log"
done
python3 - "$OUT" <<'PY'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
out = Path(sys.argv[1])
for dt in ("f32", "f16"):
    errs, agree, total = [], 0, 0
    try:
        for stem in ("chelsea", "coffee"):
            c = np.load(out / "pred-cpu" / f"{stem}.probs.npy")
            g = np.load(out / f"pred-{dt}" / f"{stem}.probs.npy")
            errs.append(float(np.abs(g - c).max() / np.abs(c).max()))
            lc = np.asarray(Image.open(out / "pred-cpu" / f"{stem}.pred.png"))
            lg = np.asarray(Image.open(out / f"pred-{dt}" / f"{stem}.pred.png"))
            agree, total = agree + int((lc == lg).sum()), total + lc.size
    except Exception as e:  # a failed run: report it, keep going
        print(f"parity {dt} vs cpu: missing: {e}")
        continue
    print(f"parity {dt} vs cpu: probs max rel err {max(errs):.3g}, labels {agree / total:.5f}")
PY
step "speed"
MANY=()
# COPIES pairs of VOC-sized images per pass (default 4: 8 images, one batch of 64 crops).
for _ in $(seq "${COPIES:-4}"); do MANY+=("$IMGDIR/chelsea.ppm" "$IMGDIR/coffee.ppm"); done
SEGSWEEP_CUDA_ATTENTION=wmma timeout 60 "$BIN/bench_infer" --model "$MODEL" --classes "$CLASSES" \
    --reps "$REPS" --device cuda:0 --dtype f16 --across-batch 64 "${MANY[@]}" >"$OUT/rust-f16-wmma.json" \
    2>"$OUT/rust-f16-wmma.log" || tail -3 "$OUT/rust-f16-wmma.log"
# cuBLAS's fixed workspaces (reproducible with concurrent streams; what segsweep sets with
# SEGSWEEP_PIPELINE=1): their cost, and the pipelined labels with them.
CUBLAS_WORKSPACE_CONFIG=:4096:8 timeout 60 "$BIN/bench_infer" --model "$MODEL" --classes "$CLASSES" \
    --reps "$REPS" --device cuda:0 --dtype f16 --across-batch 64 "${MANY[@]}" >"$OUT/rust-f16-cublasws.json" \
    2>"$OUT/rust-f16-cublasws.log" || tail -3 "$OUT/rust-f16-cublasws.log"
for dt in f32 f16; do
    timeout 60 "$BIN/bench_infer" --model "$MODEL" --classes "$CLASSES" --reps "$REPS" --device cuda:0 \
        --dtype $dt --across-batch 64 "${MANY[@]}" >"$OUT/rust-$dt.json" 2>"$OUT/rust-$dt.log" || tail -3 "$OUT/rust-$dt.log"
    timeout 90 python3 bench/infer_reference.py --model "$MODEL" --classes "$CLASSES" --reps "$REPS" \
        --device cuda --dtype $dt "${MANY[@]}" >"$OUT/torch-$dt.json" 2>"$OUT/torch-$dt.log" || tail -3 "$OUT/torch-$dt.log"
done
python3 - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for dt, rs in (("f32", "f32"), ("f16", "f16"), ("f16", "f16-wmma"), ("f16", "f16-cublasws")):
    try:
        r = json.loads((out / f"rust-{rs}.json").read_text())
        t = json.loads((out / f"torch-{dt}.json").read_text())
    except Exception as e:
        print(dt, "missing:", e)
        continue
    ms = lambda v: f"{1000 * v:.2f} ms"
    best = min(r["s_per_image_bs1"], r["s_per_image_bs8"], r["s_per_image_across_images"])
    one = r["prepare_s"] + r["finish_s"]
    print(f"{rs}: segsweep bs1 {ms(r['s_per_image_bs1'])}, bs8 {ms(r['s_per_image_bs8'])}, "
          f"64 across images {ms(r['s_per_image_across_images'])} "
          f"(finish per image: {ms(r.get('s_per_image_across_images_finish_each', float('nan')))}); PyTorch bs1 {ms(t['s_per_image_bs1'])}, "
          f"batched {ms(t['s_per_image_batched'])}; best vs batched PyTorch {t['s_per_image_batched'] / best:.2f}x; "
          f"split bs8 stage (of it the CPU resize {ms(r.get('split_bs8_stage_resize_s', float('nan')))})/prefix/dense/post "
          f"{ms(r['split_bs8_stage_s'])}/{ms(r['split_bs8_prefix_s'])}/"
          f"{ms(r['split_bs8_dense_s'])}/{ms(r['split_bs8_post_s'])}; "
          f"16-config sweep / one {r['sweep16_post_only_s'] / one:.2f}x "
          f"(probabilities shared per logit scale: {r.get('sweep16_shared_probs_s', float('nan')) / one:.2f}x); "
          f"across 64: prepare {ms(r['prepare_s_per_image_across_images'])} per image; "
          f"prefix on device crops per 8: bs8 {ms(r['prefix_on_device_crops_bs8_s'])}, "
          f"bs64 {ms(r['prefix_on_device_crops_bs64_s_per_8'])}")
    if "s_per_image_across_pipelined" in r:
        print(f"{rs}: {r['across_chunks']} chunks of 64 crops, one after the other "
              f"{ms(r['s_per_image_across_chunked'])}, pipelined on two threads "
              f"{ms(r['s_per_image_across_pipelined'])} per image "
              f"({t['s_per_image_batched'] / r['s_per_image_across_pipelined']:.2f}x batched PyTorch); "
              f"labels identical: {r['across_pipelined_labels_identical']}")
    if "across_many_vs_each_labels_total" in r:
        print(f"{rs}: labels of the dense logits across images vs one image at a time (the runner "
              f"picks by the memory budget): {r['across_many_vs_each_labels_equal']} of "
              f"{r['across_many_vs_each_labels_total']} pixels equal")
PY
step "the runner on $((${COPIES:-4} * 6)) VOC-sized JPEGs, f16: decoding on its thread / ahead / and pipelined"
N=$((${COPIES:-4} * 6)) MODEL="$MODEL" DEVICE=cuda:0 DTYPE=f16 SEGSWEEP="$BIN/segsweep" timeout 120 \
    bash bench/loading.sh 2>&1 | grep -vE "INFO|WARN" | tail -6
step "one block of 64 crops, f16, op by op: attention mma.sync (the default), then WMMA"
timeout 60 "$BIN/block_profile" 64 cuda:0 f16 2>&1 | grep -iE "attention|block|fused" | head -12
SEGSWEEP_CUDA_ATTENTION=wmma timeout 60 "$BIN/block_profile" 64 cuda:0 f16 2>&1 \
    | grep -iE "attention|block|fused" | head -12 | sed 's/^/wmma: /'
step "done"
