#!/usr/bin/env bash
# Benchmark (not a test), issue 7: a 16-configuration sweep whose configurations differ only
# after the backbone (4 logit scales × 4 probability thresholds) against a single configuration,
# on the same images, in one run on the same machine. Target: ≤ 1.5× the single configuration.
# Then the same 16-configuration sweep with `feature_cache = "f32"`: once with an empty cache
# (computing and writing every prefix) and once more with the cache filled (as after adding
# configurations to a finished sweep).
#
# Uses a seeded random full-size ViT-B/16 (made by tests/reference/make_tiny_clip.py --full; needs
# torch + transformers once) and the synthetic dataset: the timings are real, the mIoU is not.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${SEGSWEEP_BENCH_MODEL:-/tmp/clip-b16-random}"
IMAGES="${IMAGES:-6}"
if [ ! -f "$MODEL/model.safetensors" ]; then
    python3 tests/reference/make_tiny_clip.py --full "$MODEL"
fi
cargo build --release -q -p segsweep
BIN=target/release/segsweep
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

spec() { # $1 = extra sweep text
cat <<SPEC
[experiment]
name = "bench"
output_dir = "$OUT/results"
[model]
source = "$MODEL"
[dataset]
name = "synthetic"
synthetic_images = $IMAGES
short_side = 336
[inference]
batch_size = 8
$1
SPEC
}
spec "" > "$OUT/one.toml"
spec '[sweep.grid]
"inference.logit_scale" = [30.0, 40.0, 50.0, 65.0]
"inference.prob_thd" = [0.0, 0.05, 0.1, 0.2]' > "$OUT/sixteen.toml"

# Warm the text-classifier cache and the page cache so both timings measure inference only.
$BIN sweep "$OUT/one.toml" --quiet --run-id warm >/dev/null
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); awk "BEGIN{print $e - $s}"; }
one=$(t $BIN sweep "$OUT/one.toml" --quiet --no-reuse --run-id one)
sixteen=$(t $BIN sweep "$OUT/sixteen.toml" --quiet --no-reuse --run-id sixteen)
sed 's/^name = "bench"$/name = "bench"\nfeature_cache = "f32"/' "$OUT/sixteen.toml" > "$OUT/cached.toml"
cold=$(t $BIN sweep "$OUT/cached.toml" --quiet --no-reuse --run-id cold)
warm=$(t $BIN sweep "$OUT/cached.toml" --quiet --no-reuse --run-id warm-cache)
same=$(python3 - "$OUT/results/bench" <<'PY'
import csv, sys
def rows(run):
    with open(f"{sys.argv[1]}/{run}/summary.csv") as f:
        return {r["config_hash"]: (r["miou_pct"], r["person_iou_pct"], r["aacc_pct"]) for r in csv.DictReader(f)}
print("identical" if rows("sixteen") == rows("warm-cache") else "DIFFERENT")
PY
)
printf "machine: %s, %s cores\n" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(nproc)"
printf "images: %s synthetic (short side 336), full-size random ViT-B/16, f32, CPU\n" "$IMAGES"
printf "1 configuration:   %6.2f s\n16 configurations: %6.2f s\nratio: %.2fx (target <= 1.5x)\n" "$one" "$sixteen" "$(awk "BEGIN{print $sixteen / $one}")"
printf "16 configurations, feature cache empty (writing): %6.2f s (%.2fx one)\n" "$cold" "$(awk "BEGIN{print $cold / $one}")"
printf "16 configurations, feature cache filled (reading): %6.2f s (%.2fx one); overall table %s to the uncached run's\n" \
    "$warm" "$(awk "BEGIN{print $warm / $one}")" "$same"
du -sh "$OUT/results/.cache/features" | awk '{print "feature cache on disk: " $1}'
