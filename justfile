# segsweep tasks. `just --list` shows them. CI runs `just ci` (see .ci/run).

set shell := ["bash", "-euo", "pipefail", "-c"]

# Run every configuration of an experiment spec (e.g. `just sweep experiments/phase2a.toml`).
sweep SPEC *ARGS:
    cargo run --release -p segsweep -- sweep {{SPEC}} {{ARGS}}

# Check a spec and print its expanded configurations (loads no weights).
validate SPEC *ARGS:
    cargo run --release -p segsweep -- validate {{SPEC}} {{ARGS}}

# Redraw the tables and charts of a run directory from its saved records.
plot DIR *ARGS:
    cargo run --release -p segsweep -- plot {{DIR}} {{ARGS}}

# The seconds-long demo: tiny random-weight CLIP on the synthetic dataset (numbers are synthetic).
demo:
    cargo run --release -p segsweep -- sweep experiments/demo.toml

# clippy and doc build the whole workspace a second time in check mode (~7 min cold on 2 cores,
# which would push CI past its 15-minute budget), so they live in `just lint`.
# What CI runs on a clean checkout (.ci/run): the format check and every test.
test:
    cargo fmt --all -- --check
    cargo test --workspace --all-targets

# fmt --check, clippy -D warnings, doc -D warnings.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

# Alias of `test`.
ci: test

# They need Python with torch, transformers and pydensecrf (see README, "Benchmarks").
# Benchmarks (never in CI), each with its reference measured in the same run.
bench:
    bash bench/run_all.sh

# Regenerate every golden fixture from the PyTorch references (needs torch + transformers).
fixtures:
    bash tests/reference/make_all.sh

# nvcc 13.0 from PyPI wheels and stub libraries; runs where an NVIDIA driver + CUDA 13 libs are.
# Build the CUDA binary target/segsweep-cuda (cargo feature `cuda`).
build-cuda:
    bash scripts/build-cuda.sh

# Then, on the GPU machine with this checkout and that folder: `bash bench/gpu.sh` (README, "GPU").
# Build and pack the CUDA binaries for the GPU benchmark into bench/out/gpu-bin/.
build-gpu-bench:
    bash scripts/build-cuda.sh --bench
    bash bench/gpu-pack.sh
