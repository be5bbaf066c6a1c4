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

# What CI runs on a clean checkout (`.ci/run`): the format check and every test. clippy and doc
# build the whole workspace a second time in check mode (~7 min cold on 2 cores, which would push
# CI past its 15-minute budget), so they live in `just lint`: run it before committing.
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

# Benchmarks (never in CI): print ratios against the PyTorch / pydensecrf references measured in
# the same run. Need Python with torch, transformers and pydensecrf (see README, "Benchmarks").
bench:
    bash bench/run_all.sh

# Regenerate every golden fixture from the PyTorch references (needs torch + transformers).
fixtures:
    bash tests/reference/make_all.sh

# Build the CUDA binary (cargo feature `cuda`) with nvcc 13.0 from PyPI wheels and stub libraries;
# the result runs on a machine with an NVIDIA driver and CUDA 13 libraries.
build-cuda:
    bash scripts/build-cuda.sh
