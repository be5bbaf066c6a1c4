#!/usr/bin/env bash
# Build `segsweep` with candle's CUDA backend on a machine WITHOUT a GPU or a CUDA toolkit.
#
# Recipe (shared/research/rust-stack.md §1): nvcc 13.0.88 and the CUDA 13.0 runtime headers come
# from PyPI wheels; cuBLAS, cuRAND, NVRTC and the driver library are only needed at link time, so
# we link against generated stub libraries with the right sonames. The binary then runs on a
# machine with an NVIDIA driver (580+) and CUDA 13 libraries:
#     LD_LIBRARY_PATH=/usr/local/cuda/lib64 ./segsweep-cuda sweep SPEC --set model.device=cuda:0
# nvcc 13.0 is required: a newer nvcc emits PTX that driver 580 cannot JIT.
#
#   scripts/build-cuda.sh            # target/segsweep-cuda
#   scripts/build-cuda.sh --bench    # also target/{bench_infer,block_profile,cuda_ops,cuda_fused}-cuda
#                                    # (bench/gpu.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

CAP="${CUDA_COMPUTE_CAP:-90}"          # 90 = Hopper (H100/H200); 80 also covers Ampere
P="${CUDA_PREFIX:-$PWD/.cuda/cu13}"    # ignored by git
WHEELS="$PWD/.cuda/wheels"

if [ ! -x "$P/bin/nvcc" ]; then
    mkdir -p "$WHEELS" "$P"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 --python-version 3.11 -d "$WHEELS" \
        nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
    tmp=$(mktemp -d)
    for w in "$WHEELS"/*.whl; do unzip -q -o "$w" -d "$tmp"; done
    cp -a "$tmp"/nvidia/cu13/. "$P"/
    rm -rf "$tmp"
    chmod +x "$P"/bin/* "$P"/nvvm/bin/* 2>/dev/null || true
    ln -sf libcudart.so.13 "$P/lib/libcudart.so"
fi

# A separate target dir, so the CPU build is not rebuilt with other features.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/cuda}"
export PATH="$P/bin:$PATH" CUDA_HOME="$P" CUDA_ROOT="$P" CUDA_COMPUTE_CAP="$CAP" CUDARC_CUDA_VERSION=13000

# Stub libraries for the link: every undefined cu*/nvrtc*/curand*/cublas* symbol of the compiled
# rlibs becomes an empty function in a shared object with the real soname. They are never loaded
# at run time (the real libraries are). They go into $P/lib, which cudarc's build script already
# put on the link path during the first pass (a new directory would need cudarc rebuilt).
make_stubs() {
    local stubs="$P/lib" src
    src=$(mktemp -d)
    local syms
    syms=$(nm -u $CARGO_TARGET_DIR/release/deps/lib{cudarc,candle_core,candle_kernels}-*.rlib 2>/dev/null \
        | awk '{print $2}' | sort -u || true)
    gen() { # name soname regex
        local c="$src/$1.c"
        : > "$c"
        echo "$syms" | grep -E "$3" | while read -r s; do echo "void $s(void){}" >> "$c"; done
        gcc -shared -fPIC -Wl,-soname,"$2" -o "$stubs/$1.so" "$c"
        ln -sf "$1.so" "$stubs/$2"
    }
    gen libcuda libcuda.so.1 '^cu[A-Z]'
    gen libnvrtc libnvrtc.so.13 '^nvrtc'
    gen libcurand libcurand.so.10 '^curand'
    gen libcublasLt libcublasLt.so.13 '^cublasLt'
    gen libcublas libcublas.so.13 '^cublas[^L]'
}

# Building segsweep-infer's bench example together with the binary unifies their features, so the
# example gets candle's CUDA backend too.
targets=(-p segsweep --features segsweep/cuda --bin segsweep)
if [ "${1:-}" = "--bench" ]; then
    targets=(-p segsweep -p segsweep-infer -p segsweep-clip --features segsweep/cuda --bin segsweep
        --example bench_infer --example block_profile)
fi
# First pass compiles the kernels (the final link may fail without stubs), then stubs, then link.
cargo build --release "${targets[@]}" || true
make_stubs
cargo build --release "${targets[@]}"
# Assemble segsweep's own PTX (crates/kernels) for its target with ptxas, as the driver's JIT
# will: a kernel that does not assemble, or spills registers, fails the build here.
# Each build configuration has its own OUT_DIR and recompiles only the .cu files that changed,
# so take the newest copy of each file: the one compiled from the current source.
for name in fused.ptx post.ptx; do
    ptx=$(ls -t "$CARGO_TARGET_DIR"/release/build/segsweep-kernels-*/out/"$name" | head -1)
    arch=$(sed -n 's/^\.target *//p' "$ptx" | head -1)
    log=$(ptxas -arch="$arch" -v "$ptx" -o /dev/null 2>&1) || { echo "$log"; exit 1; }
    if echo "$log" | grep -q "[1-9][0-9]* bytes spill"; then echo "$log"; echo "register spills in $ptx"; exit 1; fi
    echo "ptxas: $(echo "$log" | grep -c 'Compiling entry') kernels of $(basename "$ptx") assemble for $arch, no spills"
done
# The resampling kernels equal the host path bit for bit only without fused multiply-adds.
post=$(ls -t "$CARGO_TARGET_DIR"/release/build/segsweep-kernels-*/out/post.ptx | head -1)
if awk '/\.entry (resize_bilinear|stitch_windows)_f32/{f=1} /\.entry (class_probs|area_counts|threshold_labels)_f32/{f=0} f' \
    "$post" | grep -q "fma\."; then
    echo "fused multiply-adds in the resampling kernels of $post"; exit 1
fi
mkdir -p target
cp "$CARGO_TARGET_DIR/release/segsweep" target/segsweep-cuda
echo "built target/segsweep-cuda (compute capability $CAP)"
if [ "${1:-}" = "--bench" ]; then
    cp "$CARGO_TARGET_DIR/release/examples/bench_infer" target/bench_infer-cuda
    cp "$CARGO_TARGET_DIR/release/examples/block_profile" target/block_profile-cuda
    # The kernels' GPU tests (crates/kernels/tests/cuda_ops.rs, crates/clip/tests/cuda_fused.rs),
    # run by bench/gpu.sh.
    test_exe() { # package test-target
        cargo test --release -p "$1" --features cuda --test "$2" --no-run --message-format=json \
            | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$2"
    }
    cp "$(test_exe segsweep-kernels cuda_ops)" target/cuda_ops-cuda
    cp "$(test_exe segsweep-clip cuda_fused)" target/cuda_fused-cuda
    echo "built target/{bench_infer,block_profile,cuda_ops,cuda_fused}-cuda"
fi
ldd target/segsweep-cuda | grep -E "cuda|cublas|curand|nvrtc" || true
