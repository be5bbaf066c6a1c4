//! With the `cuda` feature: compile `kernels/fused.cu` to PTX (`$OUT_DIR/fused.ptx`), loaded at
//! run time by `src/fused.rs`. Without it (the default, and CI) this does nothing.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels/fused.cu");
    #[cfg(feature = "cuda")]
    {
        // The same flags candle-kernels builds its PTX with; CUDA_COMPUTE_CAP picks the target.
        // Writes $OUT_DIR/fused.ptx.
        cudaforge::KernelBuilder::new()
            .source_files(["kernels/fused.cu"])
            .arg("--expt-relaxed-constexpr")
            .arg("-std=c++17")
            .arg("-O3")
            .build_ptx()
            .expect(
                "segsweep-clip: compiling kernels/fused.cu with nvcc (see scripts/build-cuda.sh)",
            );
    }
}
