#!/usr/bin/env bash
# Speed of segsweep's dense inference against the PyTorch reference, in one run on this machine
# (a benchmark, not a test; numbers come from seeded RANDOM full-size ViT-B/16 weights).
#
#   bench/infer_speed.sh                 # MODEL, IMGDIR, OUT and REPS may be overridden
#
# Makes the random model with tests/reference/make_tiny_clip.py --full if it is missing, writes
# VOC-sized photos from scikit-image (chelsea 300×451 and coffee 400×600: short side 336 gives
# 336×505 / 336×504, 8 crops each), builds the release example, runs segsweep then PyTorch (all
# cores, f32), and prints a table with the ratios and the full-size parity of the two outputs.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-/tmp/clip-b16-random}
IMGDIR=${IMGDIR:-/tmp/segsweep-bench-images}
OUT=${OUT:-/tmp/segsweep-bench-infer}
REPS=${REPS:-2}
CLASSES=crates/data/classnames/voc21.txt
mkdir -p "$IMGDIR" "$OUT"

[ -f "$MODEL/model.safetensors" ] || python3 tests/reference/make_tiny_clip.py --full "$MODEL"

python3 bench/photos.py "$IMGDIR"
IMAGES=("$IMGDIR/chelsea.ppm" "$IMGDIR/coffee.ppm")

cargo build --release -q -p segsweep-infer --example bench_infer
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
./target/release/examples/bench_infer --model "$MODEL" --classes "$CLASSES" --reps "$REPS" \
    --out "$OUT/rust" "${IMAGES[@]}" >"$OUT/rust.json"
python3 bench/infer_reference.py --model "$MODEL" --classes "$CLASSES" --reps "$REPS" \
    --rust-out "$OUT/rust" "${IMAGES[@]}" 2>/dev/null >"$OUT/torch.json"
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$OUT/rust.json" "$OUT/torch.json" <<'PY'
import json, sys, subprocess
r, t = (json.load(open(p)) for p in sys.argv[1:3])
cpu = subprocess.run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'"], capture_output=True, text=True).stdout.strip()
print(f"machine: {cpu}, {r['threads']} threads; f32; random full-size ViT-B/16 weights; "
      f"{r['images']} images, {r['crops_per_image']:.0f} crops each (short side 336, slide 224/112)")
print()
print("| measure | segsweep | PyTorch | ratio |")
print("|---|---|---|---|")
def line(name, rs, ts, unit="s"):
    ratio = f"{ts / rs:.2f}×" if rs and ts else "–"
    fmt = lambda v: "–" if v is None else f"{v:.3f} {unit}"
    print(f"| {name} | {fmt(rs)} | {fmt(ts)} | {ratio} |")
line("image, batch 1 (s/image)", r["s_per_image_bs1"], t["s_per_image_bs1"])
line("image, batch 8 (s/image)", r["s_per_image_bs8"], t["s_per_image_batched"])
line(f"images, batches of {r.get('across_batch', 8)} across images (s/image)", r["s_per_image_across_images"], None)
print(f"| images/s, best | {1 / min(r['s_per_image_bs1'], r['s_per_image_bs8']):.2f} | "
      f"{1 / min(t['s_per_image_bs1'], t['s_per_image_batched']):.2f} | "
      f"{min(t['s_per_image_bs1'], t['s_per_image_batched']) / min(r['s_per_image_bs1'], r['s_per_image_bs8']):.2f}× |")
line(f"text classifier cold ({r['queries']} names × 80)", r["text_cold_s"], t["text_cold_s"])
line("text classifier cached", r["text_cached_s"], None)
print()
one = r["single_config_s"]
print(f"one image, one configuration = prepare {r['prepare_s']:.3f} s + finish {r['finish_s']:.3f} s")
print(f"16 configurations on one prepared image (ratio to one configuration):")
print(f"- 4 attentions × 4 post-processing settings, finish each: {r['sweep16_finish_each_s']:.3f} s = {r['sweep16_finish_each_s'] / one:.2f}×")
print(f"- the same, dense logits shared per attention: {r['sweep16_shared_dense_s']:.3f} s = {r['sweep16_shared_dense_s'] / one:.2f}×")
print(f"- 16 post-processing settings on one attention: {r['sweep16_post_only_s']:.3f} s = {r['sweep16_post_only_s'] / one:.2f}×")
print(f"2048×1024 image: {r['big_2048x1024_s']:.2f} s; peak resident memory of the whole run "
      f"(model weights included): {r['peak_rss_mb']:.0f} MB")
if "parity_probs_max_rel_err" in t:
    print(f"full-size parity: probabilities max relative error {t['parity_probs_max_rel_err']:.2e}, "
          f"labels agree on {100 * t['parity_label_agreement']:.3f}% of pixels")
PY
