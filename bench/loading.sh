#!/usr/bin/env bash
# Benchmark (not a test), issue 7: the runner three ways, in one run on the same machine, on N
# VOC-sized JPEGs (bench/loading.py):
#   serial:    each sample decoded on the runner's thread (`load_ahead = 0`), one image batch
#              after the other (SEGSWEEP_PIPELINE=0);
#   ahead:     samples decoded ahead on a background thread (`load_ahead`'s default);
#   pipelined: and the next batch's prefixes on a second thread (SEGSWEEP_PIPELINE=1; meant
#              for a GPU, where each thread has its own stream).
# Prints seconds per image of each, the ratios, and whether the summaries are identical.
#
#   bash bench/loading.sh                       # tiny random CLIP on this CPU: decoding-bound
#   MODEL=/tmp/clip-b16-random DEVICE=cuda:0 DTYPE=f16 SEGSWEEP=/tmp/segsweep-gpu-bin/segsweep \
#       bash bench/loading.sh                   # the full random ViT-B/16 on a GPU
#
# Random weights and made-up labels: the timings are real, the mIoU is not.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-48}
MODEL=${MODEL:-builtin:tiny-random}
DEVICE=${DEVICE:-cpu}
DTYPE=${DTYPE:-f32}
BATCH=${BATCH:-64}
# The same cuBLAS workspaces in all three ways (what segsweep sets for the pipelined one), so that
# their summaries can be compared exactly on a GPU.
export CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
if [ -z "${SEGSWEEP:-}" ]; then
    cargo build --release -q -p segsweep
    SEGSWEEP=target/release/segsweep
fi
python3 bench/loading.py "$OUT/photos" "$N"
spec() { # $1 = run name, $2 = extra [experiment] line
cat <<SPEC
[experiment]
name = "loading"
output_dir = "$OUT/results"
$2
[model]
source = "$MODEL"
device = "$DEVICE"
dtype = "$DTYPE"
[dataset]
name = "custom"
short_side = 336
[dataset.custom]
name = "photos"
root = "$OUT/photos"
img_suffix = ".jpg"
classes = "classes.txt"
[inference]
batch_size = $BATCH
SPEC
}
spec serial "load_ahead = 0" >"$OUT/serial.toml"
spec ahead "" >"$OUT/ahead.toml"
# Warm up: the text classifier's cache, the page cache, the GPU's start.
"$SEGSWEEP" sweep "$OUT/ahead.toml" --quiet --run-id warm --no-reuse >/dev/null
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); awk "BEGIN{print $e - $s}"; }
serial=$(SEGSWEEP_PIPELINE=0 t "$SEGSWEEP" sweep "$OUT/serial.toml" --quiet --run-id serial --no-reuse)
ahead=$(SEGSWEEP_PIPELINE=0 t "$SEGSWEEP" sweep "$OUT/ahead.toml" --quiet --run-id ahead --no-reuse)
piped=$(SEGSWEEP_PIPELINE=1 t "$SEGSWEEP" sweep "$OUT/ahead.toml" --quiet --run-id piped --no-reuse)
same=$(python3 - "$OUT/results/loading" <<'PY'
import csv, sys
def rows(run):
    with open(f"{sys.argv[1]}/{run}/summary.csv") as f:
        return [(r["config_hash"], r["images"], r["miou_pct"], r["person_iou_pct"], r["aacc_pct"]) for r in csv.DictReader(f)]
print("identical" if rows("serial") == rows("ahead") == rows("piped") else "DIFFERENT")
PY
)
printf "machine: %s, %s cores; model %s on %s (%s), %s JPEGs, batch %s crops\n" \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(nproc)" "$MODEL" "$DEVICE" "$DTYPE" "$N" "$BATCH"
awk -v s="$serial" -v a="$ahead" -v p="$piped" -v n="$N" 'BEGIN{
    printf "serial    (decode on the runner thread, one batch after the other): %.2f s, %.2f ms/image\n", s, 1000*s/n;
    printf "ahead     (decode ahead, in parallel):                              %.2f s, %.2f ms/image (%.2fx serial)\n", a, 1000*a/n, s/a;
    printf "pipelined (and the next batch'"'"'s prefixes on a second thread):      %.2f s, %.2f ms/image (%.2fx serial)\n", p, 1000*p/n, s/p }'
echo "summaries (mIoU, person IoU, aAcc): $same"
echo "(the times include starting the process and loading the model; random weights, made-up labels)"
