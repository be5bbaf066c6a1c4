#!/usr/bin/env bash
# GPU benchmark and GPU parity of segsweep (a benchmark, not a test; numbers come from seeded
# RANDOM full-size ViT-B/16 weights). Runs on the GPU machine and builds nothing there:
#
#   here (no GPU needed):  scripts/build-cuda.sh --bench && bench/gpu-pack.sh
#   on the GPU machine:    bench/gpu.sh            # OUT, REPS, COPIES, DEVICE may be overridden
#
# Needs there: an NVIDIA driver (580+), CUDA 13 libraries, python3 with torch (CUDA), transformers,
# numpy, scikit-image and pillow. The open_clip tokenizer (for the PyTorch text classifier) comes
# as wheels in .whl/ when the machine has none. Steps, each logged to $OUT/<step>.log and never
# stopping the others:
#   1. seeded random full-size ViT-B/16 (tests/reference/make_tiny_clip.py --full);
#   2. VOC-sized photos from scikit-image (chelsea 300×451, coffee 400×600; 8 crops each);
#   3. segsweep's kernels (SEGSWEEP_CUDA_KERNELS=fused: block ops and post-processing) against
#      their CPU implementations (test binaries cuda_ops, cuda_fused); parity: `segsweep
#      predict` on cuda:0 in f32 (and f16, bf16)
#      against `--device cpu`, with candle's composed ops and with the fused kernels;
#   4. speed: bench_infer (segsweep, both kernel sets) and bench/infer_reference.py (PyTorch) in
#      f32 and f16, batch 1 and batched, on the same GPU in the same run; then block_profile
#      (one block op by op, 64 crops, composed and fused) in f16 and f32;
#   5. a table (stdout and $OUT/table.md).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/segsweep-gpu}
REPS=${REPS:-5}
COPIES=${COPIES:-4}       # each photo is listed COPIES times, so a timed pass has 2×COPIES images
DEVICE=${DEVICE:-cuda:0}
TORCH_DEVICE=${DEVICE%%:*}
[ "$TORCH_DEVICE" = cuda ] && TORCH_DEVICE=cuda
BIN=${BIN:-/tmp/segsweep-gpu-bin}
MODEL=${MODEL:-/tmp/clip-b16-random}
IMGDIR=$OUT/images
CLASSES=crates/data/classnames/voc21.txt
mkdir -p "$OUT" "$IMGDIR" "$BIN"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PYTHONUNBUFFERED=1
step() { echo "== $(date +%T) $*" | tee -a "$OUT/steps.log"; }

# 0. Binaries: packed by bench/gpu-pack.sh (xz), else target/*-cuda as built.
for b in segsweep bench_infer block_profile cuda_ops cuda_fused; do
    if [ -f "bench/out/gpu-bin/$b.xz" ]; then
        python3 -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" \
            "bench/out/gpu-bin/$b.xz" "$BIN/$b"
    elif [ -f "target/$b-cuda" ]; then
        cp "target/$b-cuda" "$BIN/$b"
    fi
    chmod +x "$BIN/$b" 2>/dev/null || true
done
# CUDA libraries: /usr/local/cuda/lib64, else the ones PyTorch's wheels bring.
if ! ldd "$BIN/segsweep" 2>/dev/null | grep -q "libcublas.so.13 => /"; then
    extra=$(python3 - <<'PY'
import glob, os, site
dirs = set()
for sp in site.getsitepackages():
    for lib in glob.glob(os.path.join(sp, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
PY
)
    export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$extra
fi
if ! python3 -c "import open_clip" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

step "machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  lscpu | sed -n 's/^Model name: *//p'; nproc
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  ldd "$BIN/segsweep" | grep -E "cuda|cublas|curand|nvrtc"
  echo "binaries built from commit $(cat bench/out/gpu-bin/commit.txt 2>/dev/null || echo '?'), checkout at $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
} 2>&1 | tee "$OUT/machine.txt"

step "1. random full-size model"
[ -f "$MODEL/model.safetensors" ] || python3 tests/reference/make_tiny_clip.py --full "$MODEL" >"$OUT/model.log" 2>&1

step "2. images"
python3 bench/photos.py "$IMGDIR" --png
IMAGES=("$IMGDIR/chelsea.ppm" "$IMGDIR/coffee.ppm")
MANY=()
for _ in $(seq "$COPIES"); do MANY+=("${IMAGES[@]}"); done

step "3. segsweep's kernels on the GPU vs their CPU implementations, then the tiny model"
for t in cuda_ops cuda_fused; do
    # Time-boxed: a kernel change that hangs on the GPU must not eat the lease.
    timeout 180 "$BIN/$t" --test-threads=1 >"$OUT/$t.log" 2>&1 || echo "$t: exit $?"
    grep -E "^test |test result" "$OUT/$t.log"
done

step "3b. parity: predict on $DEVICE vs cpu (candle's ops, then the fused kernels)"
P="$BIN/segsweep predict --model $MODEL --classes $CLASSES --logit-scale 65 --prob-thd 0.1 --area-thd 0.1"
PNGS=("$IMGDIR/chelsea.png" "$IMGDIR/coffee.png")
$P --device cpu --out "$OUT/pred-cpu" "${PNGS[@]}" >"$OUT/pred-cpu.log" 2>&1 || tail -5 "$OUT/pred-cpu.log"
for k in candle fused; do
    for dt in f32 f16 bf16; do
        SEGSWEEP_CUDA_KERNELS=$k timeout 120 $P --device "$DEVICE" --dtype $dt --out "$OUT/pred-$k-$dt" \
            "${PNGS[@]}" >"$OUT/pred-$k-$dt.log" 2>&1 || tail -5 "$OUT/pred-$k-$dt.log"
    done
done
python3 - "$OUT" >"$OUT/parity.json" <<'PY'
import json, sys
from pathlib import Path
import numpy as np
from PIL import Image
out = Path(sys.argv[1])
res = {}
for run in (f"{k}-{dt}" for k in ("candle", "fused") for dt in ("f32", "f16", "bf16")):
    errs, agree, total = [], 0, 0
    for stem in ("chelsea", "coffee"):
        try:
            c = np.load(out / "pred-cpu" / f"{stem}.probs.npy")
            g = np.load(out / f"pred-{run}" / f"{stem}.probs.npy")
            lc = np.asarray(Image.open(out / "pred-cpu" / f"{stem}.pred.png"))
            lg = np.asarray(Image.open(out / f"pred-{run}" / f"{stem}.pred.png"))
        except Exception as e:  # a failed run: report it, keep going
            res[run] = f"missing: {e}"
            break
        errs.append(float(np.abs(g - c).max() / np.abs(c).max()))
        agree += int((lc == lg).sum())
        total += lc.size
    else:
        res[run] = dict(probs_max_rel_err=max(errs), label_agreement=agree / total)
print(json.dumps(res))
PY
cat "$OUT/parity.json"

step "4. speed"
# peak_mem NAME CMD...: runs CMD while sampling the card's memory in use every 100 ms (all
# processes on the card); the peak in MiB goes to $OUT/mem-NAME.txt.
peak_mem() {
    local name=$1 pid rc
    shift
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$OUT/mem-$name.log" 2>/dev/null &
    pid=$!
    "$@"
    rc=$?
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    sort -n "$OUT/mem-$name.log" | tail -1 >"$OUT/mem-$name.txt"
    return $rc
}
for dt in f32 f16; do
    step "   segsweep $dt, candle's ops"
    peak_mem "rust-candle-$dt" env SEGSWEEP_CUDA_KERNELS=candle "$BIN/bench_infer" --model "$MODEL" --classes "$CLASSES" --reps "$REPS" --device "$DEVICE" \
        --dtype $dt --across-batch 64 "${MANY[@]}" >"$OUT/rust-$dt.json" 2>"$OUT/rust-$dt.log" \
        || tail -5 "$OUT/rust-$dt.log"
    step "   segsweep $dt, fused kernels"
    peak_mem "rust-fused-$dt" env SEGSWEEP_CUDA_KERNELS=fused timeout 240 "$BIN/bench_infer" --model "$MODEL" --classes "$CLASSES" \
        --reps "$REPS" --device "$DEVICE" --dtype $dt --across-batch 64 "${MANY[@]}" \
        >"$OUT/rust-fused-$dt.json" 2>"$OUT/rust-fused-$dt.log" || tail -5 "$OUT/rust-fused-$dt.log"
    step "   PyTorch $dt"
    peak_mem "torch-$dt" python3 bench/infer_reference.py --model "$MODEL" --classes "$CLASSES" --reps "$REPS" \
        --device "$TORCH_DEVICE" --dtype $dt "${MANY[@]}" >"$OUT/torch-$dt.json" 2>"$OUT/torch-$dt.log" \
        || tail -5 "$OUT/torch-$dt.log"
done

for f in "$OUT"/mem-*.txt; do echo "peak GPU memory, $(basename "$f" .txt | sed s/^mem-//): $(cat "$f") MiB"; done | tee "$OUT/gpu-mem.txt"

step "4a. a Cityscapes-sized image (2048×1024, short side 1024), f16: time and peak GPU memory"
python3 -c "from PIL import Image; Image.open('$IMGDIR/coffee.png').resize((2048, 1024)).save('$IMGDIR/big.png')"
for k in candle fused; do
    start=$(date +%s.%N)
    peak_mem "big-$k-f16" env SEGSWEEP_CUDA_KERNELS=$k timeout 120 $P --device "$DEVICE" --dtype f16 \
        --short-side 1024 --out "$OUT/pred-big-$k" "$IMGDIR/big.png" >"$OUT/pred-big-$k.log" 2>&1 \
        || tail -3 "$OUT/pred-big-$k.log"
    echo "2048×1024 f16 $k: $(awk "BEGIN{print $(date +%s.%N) - $start}") s wall (model load included), peak $(cat "$OUT/mem-big-$k-f16.txt") MiB"
done | tee "$OUT/big.txt"

step "4b. one ViT-B/16 block op by op (candle's composed ops, then the fused ones; 64 crops)"
for dt in f16 f32; do
    timeout 120 "$BIN/block_profile" 64 "$DEVICE" $dt >"$OUT/block-$dt.txt" 2>&1 || tail -3 "$OUT/block-$dt.txt"
done
# and at batch 8 (one VOC-sized image's crops), where launches weigh more
timeout 60 "$BIN/block_profile" 8 "$DEVICE" f16 >"$OUT/block-f16-b8.txt" 2>&1 || tail -3 "$OUT/block-f16-b8.txt"

step "5. table"
python3 - "$OUT" <<'PY' | tee "$OUT/table.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def load(name):
    try:
        return json.loads((out / name).read_text())
    except Exception:
        return {}
ms = lambda v: "–" if v is None else f"{1000 * v:.2f} ms"
ratio = lambda r, t: f"{t / r:.2f}×" if r and t else "–"
print((out / "machine.txt").read_text().splitlines()[0] if (out / "machine.txt").exists() else "")
print("RANDOM full-size ViT-B/16 weights; VOC-sized photos (short side 336, slide 224/112, 8 crops)")
print()
print("| dtype | measure (per image) | segsweep | PyTorch | PyTorch / segsweep |")
print("|---|---|---|---|---|")
for dt, kernels in (("f32", ""), ("f16", ""), ("f32", "fused-"), ("f16", "fused-")):
    r, t = load(f"rust-{kernels}{dt}.json"), load(f"torch-{dt}.json")
    dt = f"{dt} fused kernels" if kernels else f"{dt} candle's ops"
    rows = [("batch 1 (one crop at a time)", r.get("s_per_image_bs1"), t.get("s_per_image_bs1")),
            ("batch 8 (one image's crops)", r.get("s_per_image_bs8"), t.get("s_per_image_batched")),
            (f"batches of {r.get('across_batch', '?')} crops across images", r.get("s_per_image_across_images"), None)]
    for name, rv, tv in rows:
        print(f"| {dt} | {name} | {ms(rv)} | {ms(tv)} | {ratio(rv, tv)} |")
    best_r = min([v for v in (r.get("s_per_image_bs1"), r.get("s_per_image_bs8"), r.get("s_per_image_across_images")) if v] or [0])
    best_t = min([v for v in (t.get("s_per_image_bs1"), t.get("s_per_image_batched")) if v] or [0])
    print(f"| {dt} | best vs batched PyTorch | {ms(best_r or None)} | {ms(best_t or None)} | {ratio(best_r, t.get('s_per_image_batched'))} |")
    if r:
        print(f"| {dt} | one image: prepare / finish | {ms(r.get('prepare_s'))} / {ms(r.get('finish_s'))} | | |")
        print(f"| {dt} | batch 8 split: stage (CPU resize, normalise, upload) / prefix / dense logits / post | "
              f"{ms(r.get('split_bs8_stage_s'))} / {ms(r.get('split_bs8_prefix_s'))} / {ms(r.get('split_bs8_dense_s'))} / {ms(r.get('split_bs8_post_s'))} | | |")
        print(f"| {dt} | prefix alone on crops on the GPU, per 8 crops: batch 8 / batch 64 | "
              f"{ms(r.get('prefix_on_device_crops_bs8_s'))} / {ms(r.get('prefix_on_device_crops_bs64_s_per_8'))} | | |")
        print(f"| {dt} | prepare only, batches of {r.get('across_batch', '?')} across images | {ms(r.get('prepare_s_per_image_across_images'))} | | |")
        # shared = prepare + 4 dense + 16 post; post_only = prepare + 1 dense + 16 post.
        dense = (r["sweep16_shared_dense_s"] - r["sweep16_post_only_s"]) / 3
        post = (r["sweep16_post_only_s"] - r["prepare_s"] - dense) / 16
        print(f"| {dt} | one configuration's tail: dense logits / post-processing | {ms(dense)} / {ms(post)} | | |")
        one = r["prepare_s"] + r["finish_s"]
        print(f"| {dt} | 16 configurations after the backbone (1 dense, 16 post) / one configuration | {r['sweep16_post_only_s'] / one:.2f}× (target ≤ 1.5×) | | |")
        print(f"| {dt} | text classifier cold (56 × 80) | {ms(r.get('text_cold_s'))} | {ms(t.get('text_cold_s'))} | {ratio(r.get('text_cold_s'), t.get('text_cold_s'))} |")
print()
print("parity vs CPU f32 (segsweep predict):", (out / "parity.json").read_text().strip() if (out / "parity.json").exists() else "missing")
PY
cat "$OUT"/block-f16.txt 2>/dev/null
sed -n '/-- fused/,$p' "$OUT"/block-f16-b8.txt 2>/dev/null
step "done"
