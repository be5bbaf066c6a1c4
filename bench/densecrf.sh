#!/usr/bin/env bash
# DenseCRF benchmark (not a test): segsweep vs pydensecrf on one 500×375 image, 21 labels,
# 10 mean-field iterations, both presets, same inputs. Prints the median time of 3 runs per side,
# the speed ratio, max |ΔQ|, label agreement and each process's peak resident memory.
# Needs: pydensecrf (pip install cython && pip install pydensecrf2==1.1), scikit-image, opencv.
set -euo pipefail
cd "$(dirname "$0")/.."
ITERS=${ITERS:-10}
REPEATS=${REPEATS:-3}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT

cargo build --release -q -p segsweep-plugin-densecrf --example bench_crf
BIN=target/release/examples/bench_crf
python3 bench/densecrf_bench.py make "$DIR"

peak() { grep "Maximum resident set size" "$1" | awk '{printf "%.0f MB", $6 / 1024}'; }
cpu() { awk -F': ' '/User time|System time/ {s += $2} END {printf "%.2f s", s}' "$1"; }
secs() { grep -o 'median [0-9.]*' "$1" | awk '{print $2}'; }

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for preset in pydensecrf deeplab; do
    /usr/bin/time -v "$BIN" "$DIR/image.npy" "$DIR/probs.npy" "$DIR/q_rs_$preset.npy" \
        "$preset" "$ITERS" "$REPEATS" >"$DIR/rs.out" 2>"$DIR/rs.time"
    /usr/bin/time -v python3 bench/densecrf_bench.py run "$DIR" "$preset" "$ITERS" "$REPEATS" \
        >"$DIR/py.out" 2>"$DIR/py.time"
    cat "$DIR/rs.out" "$DIR/py.out"
    python3 bench/densecrf_bench.py compare "$DIR" "$preset"
    rs=$(secs "$DIR/rs.out"); py=$(secs "$DIR/py.out")
    echo "$preset: segsweep $rs s, pydensecrf $py s, speed-up $(python3 -c "print(f'{$py / $rs:.2f}')")x;" \
        "peak RSS segsweep $(peak "$DIR/rs.time"), pydensecrf (python + numpy) $(peak "$DIR/py.time");" \
        "process CPU time (all $REPEATS runs + start-up) segsweep $(cpu "$DIR/rs.time"), pydensecrf $(cpu "$DIR/py.time")"
    echo
done
