//! With the `cuda` feature: compile `kernels/fused.cu` and `kernels/post.cu` to PTX
//! (`$OUT_DIR/{fused,post}.ptx`), loaded at run time by `src/cuda.rs`. Without it (the default,
//! and CI) this does nothing.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels/fused.cu");
    println!("cargo::rerun-if-changed=kernels/post.cu");
    #[cfg(feature = "cuda")]
    {
        // The same flags candle-kernels builds its PTX with; CUDA_COMPUTE_CAP picks the target.
        // Writes $OUT_DIR/fused.ptx and $OUT_DIR/post.ptx.
        cudaforge::KernelBuilder::new()
            .source_files(["kernels/fused.cu", "kernels/post.cu"])
            .arg("--expt-relaxed-constexpr")
            .arg("-std=c++17")
            .arg("-O3")
            .build_ptx()
            .expect(
                "segsweep-kernels: compiling kernels/*.cu with nvcc (see scripts/build-cuda.sh)",
            );
    }
}
