//! Launches of `kernels/fused.cu` and `kernels/post.cu` (PTX built by `build.rs`, each module
//! loaded once per device).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{bail, CudaDevice, CudaStorage, DType, Layout, Result};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));
const MODULE: &str = "segsweep_fused";
const POST_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/post.ptx"));
const POST_MODULE: &str = "segsweep_post";

fn view<'a, T: CudaDType + DeviceRepr>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> Result<CudaView<'a, T>> {
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{what}: expected a contiguous tensor");
    };
    Ok(s.as_cuda_slice::<T>()?.slice(a..b))
}

/// A count below 2^31, so that the kernels' grid-stride indices never wrap.
fn count(n: usize, what: &str) -> Result<u32> {
    match i32::try_from(n) {
        Ok(_) => Ok(n as u32),
        Err(_) => bail!("{what}: {n} elements exceed the kernels' 31-bit index"),
    }
}

fn suffix(dt: DType, what: &str) -> Result<&'static str> {
    Ok(match dt {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        dt => bail!("{what}: unsupported dtype {dt:?}"),
    })
}

/// The name of `base`'s instance for `dt` in `fused.cu` (`split_qkv_f16`, ...).
fn fused_name(base: &str, dt: DType) -> Result<String> {
    Ok(format!("{base}_{}", suffix(dt, base)?))
}

/// A 2-D launch: `blocks_x` blocks of `threads` across, rows strided over
/// [`crate::rows_down`] blocks down (the kernels loop `r += gridDim.y`).
fn grid2(blocks_x: u32, threads: u32, rows: u32) -> Result<LaunchConfig> {
    if threads == 0 || threads > 1024 || blocks_x == 0 {
        bail!("fused kernels: {threads} threads × {blocks_x} blocks per row is out of range");
    }
    Ok(LaunchConfig {
        grid_dim: (blocks_x, crate::rows_down(blocks_x, threads, rows), 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    })
}

macro_rules! by_dtype {
    ($dt:expr, $what:expr, |$T:ident| $body:expr) => {
        match $dt {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F16 => {
                type $T = half::f16;
                $body
            }
            DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            dt => bail!("{}: unsupported dtype {dt:?}", $what),
        }
    };
}

fn wrap<T: CudaDType>(out: CudaSlice<T>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(out, dev.clone())
}

/// Launch `func` (kernel `name`, without its dtype suffix) with `cfg` and the arguments in
/// order, each with its kind: `p` a device slice or view, `u32` or `f32` a scalar, checked
/// against the Rust value's type at compile time. `tests/kernel_signatures.rs` checks every
/// call's kinds against the kernel's parameter list in the `.cu` source.
macro_rules! launch {
    ($func:expr, $cfg:expr, $name:literal; $($kind:ident $arg:expr),+ $(,)?) => {{
        let mut builder = $func.builder();
        $(launch!(@arg builder, $kind, $arg);)+
        // SAFETY: argument kinds and order as the kernel declares them (checked by
        // tests/kernel_signatures.rs); buffers sized by the caller.
        unsafe { builder.launch($cfg) }.w().map(|_| ())
    }};
    (@arg $b:ident, p, $arg:expr) => {
        $b.arg($arg)
    };
    (@arg $b:ident, u32, $arg:expr) => {{
        let v: &u32 = $arg;
        $b.arg(v)
    }};
    (@arg $b:ident, f32, $arg:expr) => {{
        let v: &f32 = $arg;
        $b.arg(v)
    }};
}

pub(crate) fn bias_act(
    act: crate::block::Act,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    res: Option<(&CudaStorage, &Layout)>,
) -> Result<CudaStorage> {
    let dev = &s1.device;
    let dt = s1.dtype();
    let n = count(l1.shape().elem_count(), "bias_act")?;
    let cols = count(l2.shape().elem_count(), "bias_act")?;
    if cols == 0 || n % cols != 0 {
        bail!("bias_act: {n} elements in rows of {cols}");
    }
    let rows = n / cols;
    let cfg = grid2(cols.div_ceil(256), 256, rows)?;
    let act = act as u32;
    let name = fused_name(
        if res.is_some() {
            "bias_act_res"
        } else {
            "bias_act"
        },
        dt,
    )?;
    let func = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
    by_dtype!(dt, "bias_act", |T| {
        let x = view::<T>(s1, l1, "bias_act x")?;
        let b = view::<T>(s2, l2, "bias_act bias")?;
        let r = match res {
            Some((s3, l3)) => Some(view::<T>(s3, l3, "bias_act residual")?),
            None => None,
        };
        // SAFETY: every element is written by the kernel.
        let out = unsafe { dev.alloc::<T>(n as usize)? };
        match &r {
            Some(r) => launch!(func, cfg, "bias_act_res";
                p &x, p &b, p r, p &out, u32 &rows, u32 &cols, u32 &act)?,
            None => launch!(func, cfg, "bias_act";
                p &x, p &b, p &out, u32 &rows, u32 &cols, u32 &act)?,
        }
        Ok(wrap(out, dev))
    })
}

pub(crate) fn split_qkv(
    op: &crate::block::SplitQkv,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<CudaStorage> {
    let dev = &s1.device;
    let dt = s1.dtype();
    let n = count(l1.shape().elem_count(), "split_qkv")?;
    let (b_n, t_n) = (count(op.b, "split_qkv")?, count(op.t, "split_qkv")?);
    let (heads, hd) = (count(op.heads, "split_qkv")?, count(op.hd, "split_qkv")?);
    let q_scale = op.q_scale;
    let cfg = grid2(3 * heads, hd, b_n * t_n)?;
    let func = dev.get_or_load_custom_func(&fused_name("split_qkv", dt)?, MODULE, PTX)?;
    by_dtype!(dt, "split_qkv", |T| {
        let y = view::<T>(s1, l1, "split_qkv")?;
        let b = view::<T>(s2, l2, "split_qkv bias")?;
        // SAFETY: the split is a permutation: every element is written.
        let out = unsafe { dev.alloc::<T>(n as usize)? };
        launch!(func, cfg, "split_qkv";
            p &y, p &b, p &out, u32 &b_n, u32 &t_n, u32 &heads, u32 &hd, f32 &q_scale)?;
        Ok(wrap(out, dev))
    })
}

pub(crate) fn merge_heads(
    op: &crate::block::MergeHeads,
    s: &CudaStorage,
    l: &Layout,
) -> Result<CudaStorage> {
    let dev = &s.device;
    let dt = s.dtype();
    let n = count(l.shape().elem_count(), "merge_heads")?;
    let (t_n, heads, hd) = (
        count(op.t, "merge_heads")?,
        count(op.heads, "merge_heads")?,
        count(op.hd, "merge_heads")?,
    );
    let rows = n / (heads * hd).max(1);
    let cfg = grid2(heads, hd, rows)?;
    let func = dev.get_or_load_custom_func(&fused_name("merge_heads", dt)?, MODULE, PTX)?;
    by_dtype!(dt, "merge_heads", |T| {
        let o = view::<T>(s, l, "merge_heads")?;
        // SAFETY: the merge is a permutation: every element is written.
        let out = unsafe { dev.alloc::<T>(n as usize)? };
        launch!(func, cfg, "merge_heads";
            p &o, p &out, u32 &rows, u32 &t_n, u32 &heads, u32 &hd)?;
        Ok(wrap(out, dev))
    })
}

/// Attention on the tensor cores (`attention_mma_{f16,bf16}`: one warp per 16 query rows of a
/// (batch, head)) where the dtype, head dim and length allow it and q, k and v are 32-byte
/// aligned (WMMA's requirement: candle's allocations are, views at odd offsets may not be);
/// else the CUDA-core kernel (`attention_*`: 8 warps of 4 query rows, ATT_ROWS_PER_WARP).
pub(crate) fn attention(
    op: &crate::block::Attention,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
) -> Result<CudaStorage> {
    use candle_core::cuda_backend::cudarc::driver::DevicePtr;
    let dev = &s1.device;
    let dt = s1.dtype();
    let n = count(l1.shape().elem_count(), "attention")?;
    let (heads, t_n, hd) = (
        count(op.heads, "attention")?,
        count(op.t, "attention")?,
        count(op.hd, "attention")?,
    );
    let bh = count(op.b * op.heads, "attention")?;
    if bh == 0 || bh > i32::MAX as u32 || t_n.div_ceil(32) > 65_535 {
        bail!("attention: {bh} heads × {t_n} tokens is out of the launch's range");
    }
    let mma_shape = crate::block::attention_on_tensor_cores(dt, op.t, op.hd);
    let stream = dev.cuda_stream();
    by_dtype!(dt, "attention", |T| {
        let q = view::<T>(s1, l1, "attention q")?;
        let k = view::<T>(s2, l2, "attention k")?;
        let v = view::<T>(s3, l3, "attention v")?;
        // Tensor cores where the shape allows and q, k, v are 32-byte aligned; their kernels
        // are not compiled for targets below sm_70 (f16) or sm_80 (bf16): then absent.
        let mma = if mma_shape
            && [&q, &k, &v]
                .iter()
                .all(|x| x.device_ptr(&stream).0.is_multiple_of(32))
        {
            dev.get_or_load_custom_func(&fused_name("attention_mma", dt)?, MODULE, PTX)
                .ok()
        } else {
            None
        };
        // The mma.sync kernel where it applies (see `fa_launch`), else the WMMA kernel.
        let fa = match mma {
            Some(_) => fa_launch(dev, dt, op.t, op.hd)?,
            None => None,
        };
        // SAFETY: every (row, head, dim) is written by the warp of its query row (tile).
        let out = unsafe { dev.alloc::<T>(n as usize)? };
        if let Some(smem) = fa {
            let func =
                dev.get_or_load_custom_func(&fused_name("attention_fa", dt)?, MODULE, PTX)?;
            let tp = op.t.div_ceil(16) as u32 * 16;
            let rows = crate::block::FA_WARPS as u32 * 16;
            let cfg = LaunchConfig {
                grid_dim: (bh, tp.div_ceil(rows), 1),
                block_dim: (crate::block::FA_WARPS as u32 * 32, 1, 1),
                shared_mem_bytes: smem,
            };
            launch!(func, cfg, "attention_fa";
                p &q, p &k, p &v, p &out, u32 &heads, u32 &t_n, u32 &hd)?;
        } else if let Some(func) = mma {
            let tp = op.t.div_ceil(16) * 16;
            // Scores/output f32 (16, max(tp, hd)), P (16, tp), a staged tile (16, hd), 16 sums.
            let smem = 16 * tp.max(op.hd) * 4 + 16 * tp * 2 + 16 * op.hd * 2 + 16 * 4;
            let cfg = LaunchConfig {
                grid_dim: (bh, (tp / 16) as u32, 1),
                block_dim: (32, 1, 1),
                shared_mem_bytes: smem as u32,
            };
            launch!(func, cfg, "attention_mma";
                p &q, p &k, p &v, p &out, u32 &heads, u32 &t_n, u32 &hd)?;
        } else {
            let cfg = LaunchConfig {
                grid_dim: (bh, t_n.div_ceil(32), 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let func = dev.get_or_load_custom_func(&fused_name("attention", dt)?, MODULE, PTX)?;
            launch!(func, cfg, "attention";
                p &q, p &k, p &v, p &out, u32 &heads, u32 &t_n, u32 &hd)?;
        }
        Ok(wrap(out, dev))
    })
}

/// The dynamic shared memory in bytes of `attention_fa_{f16,bf16}`, where it applies: the
/// tensor-core shape (checked by the caller), `hd ≤` [`crate::block::FA_MAX_HEAD_DIM`], its
/// kernel present (sm_80 and up), the staged K and Vᵀ within what the device lets a block have
/// (over 48 KB needs the function's opt-in, which fails beyond the device's limit), and
/// [`crate::attention_choice`] not `wmma`. `None` otherwise: the WMMA kernel runs.
fn fa_launch(dev: &CudaDevice, dt: DType, t: usize, hd: usize) -> Result<Option<u32>> {
    use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute;
    if hd > crate::block::FA_MAX_HEAD_DIM || !crate::attention_fa_chosen() {
        return Ok(None);
    }
    let smem = crate::block::fa_shared_bytes(t, hd);
    let name = fused_name("attention_fa", dt)?;
    let Ok(func) = dev.get_or_load_custom_func(&name, MODULE, PTX) else {
        return Ok(None);
    };
    if smem > 48 * 1024 {
        // The opt-in is the function's, shared by every thread launching it: set on the very
        // function about to launch (a module loaded twice by racing threads has two), to the
        // largest value any thread asked of this kernel on this device, so that a smaller value
        // set by one thread cannot fail another's launch between its set and its launch (two
        // threads run blocks at once in the pipelined runner).
        let mut opted = FA_OPT_IN.lock().unwrap_or_else(|e| e.into_inner());
        let have = opted
            .iter()
            .find(|(d, n, _)| *d == dev.id() && *n == name)
            .map_or(0, |e| e.2);
        let want = smem.max(have);
        if func
            .set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                want as i32,
            )
            .is_err()
        {
            return Ok(None);
        }
        if want > have {
            opted.retain(|(d, n, _)| !(*d == dev.id() && *n == name));
            opted.push((dev.id(), name, want));
        }
    }
    Ok(Some(smem as u32))
}

/// The largest dynamic shared memory any thread opted each device's `attention_fa_*` in to (bytes).
static FA_OPT_IN: std::sync::Mutex<Vec<(candle_core::cuda_backend::DeviceId, String, usize)>> =
    std::sync::Mutex::new(Vec::new());

pub(crate) fn layer_norm(
    eps: f32,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
) -> Result<CudaStorage> {
    let dev = &s1.device;
    let dt = s1.dtype();
    let n = count(l1.shape().elem_count(), "layer_norm")?;
    let cols = count(l2.shape().elem_count(), "layer_norm")?;
    if cols == 0 || n % cols != 0 {
        bail!("layer_norm: {n} elements in rows of {cols}");
    }
    let rows = n / cols;
    let func = dev.get_or_load_custom_func(&fused_name("layer_norm", dt)?, MODULE, PTX)?;
    let w = view::<f32>(s2, l2, "layer_norm weight")?;
    let b = view::<f32>(s3, l3, "layer_norm bias")?;
    // One warp per row, 8 rows per block of 256 threads.
    let cfg = LaunchConfig {
        grid_dim: (rows.div_ceil(8), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    by_dtype!(dt, "layer_norm", |T| {
        let x = view::<T>(s1, l1, "layer_norm x")?;
        // SAFETY: every row is written by its warp.
        let out = unsafe { dev.alloc::<T>(n as usize)? };
        launch!(func, cfg, "layer_norm";
            p &x, p &w, p &b, p &out, u32 &rows, u32 &cols, f32 &eps)?;
        Ok(wrap(out, dev))
    })
}

/// One thread per pixel in a grid-stride loop: blocks of 256, at most 65 535 of them.
fn pixels(n: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 65_535), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

pub(crate) fn class_probs(
    op: &crate::post::ClassProbs,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<CudaStorage> {
    let dev = &s1.device;
    let (q, h, w) = l1.shape().dims3()?;
    let n = count(h * w, "class_probs")?;
    let (q_n, c_n) = (
        count(q, "class_probs")?,
        count(op.n_classes, "class_probs")?,
    );
    count(q * h * w, "class_probs")?;
    count(op.n_classes * h * w, "class_probs")?;
    let scale = op.scale;
    let logits = view::<f32>(s1, l1, "class_probs logits")?;
    let qc = view::<u32>(s2, l2, "class_probs query classes")?;
    let func = dev.get_or_load_custom_func("class_probs_f32", POST_MODULE, POST_PTX)?;
    // SAFETY: every pixel's column is written by its thread.
    let out = unsafe { dev.alloc::<f32>(op.n_classes * h * w)? };
    launch!(func, pixels(n), "class_probs_f32";
        p &logits, p &qc, p &out, u32 &n, u32 &q_n, u32 &c_n, f32 &scale)?;
    Ok(wrap(out, dev))
}

pub(crate) fn area_counts(s: &CudaStorage, l: &Layout) -> Result<CudaStorage> {
    let dev = &s.device;
    let (c, h, w) = l.shape().dims3()?;
    let n = count(h * w, "area_counts")?;
    let c_n = count(c, "area_counts")?;
    count(c * h * w, "area_counts")?;
    let probs = view::<f32>(s, l, "area_counts")?;
    let func = dev.get_or_load_custom_func("area_counts_f32", POST_MODULE, POST_PTX)?;
    let out = dev.alloc_zeros::<u32>(c)?;
    launch!(func, pixels(n), "area_counts_f32"; p &probs, p &out, u32 &n, u32 &c_n)?;
    Ok(wrap(out, dev))
}

pub(crate) fn area_zeroed(
    op: &crate::post::AreaZeroed,
    s: &CudaStorage,
    l: &Layout,
) -> Result<CudaStorage> {
    let dev = &s.device;
    let c_n = count(l.shape().dims1()?, "area_zeroed")?;
    let (thd, bg, has_bg) = (op.thd, op.bg.unwrap_or(0), u32::from(op.bg.is_some()));
    let counts = view::<u32>(s, l, "area_zeroed")?;
    let func = dev.get_or_load_custom_func("area_zeroed_u32", POST_MODULE, POST_PTX)?;
    // SAFETY: the kernel's one thread writes every flag.
    let out = unsafe { dev.alloc::<u8>(c_n as usize)? };
    let one = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (1, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(func, one, "area_zeroed_u32";
        p &counts, p &out, u32 &c_n, f32 &thd, u32 &bg, u32 &has_bg)?;
    Ok(wrap(out, dev))
}

pub(crate) fn threshold_labels(
    op: &crate::post::ThresholdLabels,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<CudaStorage> {
    let dev = &s1.device;
    let (c, h, w) = l1.shape().dims3()?;
    let n = count(h * w, "threshold_labels")?;
    let c_n = count(c, "threshold_labels")?;
    count(c * h * w, "threshold_labels")?;
    let (prob_thd, bg) = (op.prob_thd, op.bg);
    let probs = view::<f32>(s1, l1, "threshold_labels")?;
    let zeroed = view::<u8>(s2, l2, "threshold_labels zeroed")?;
    let func = dev.get_or_load_custom_func("threshold_labels_f32", POST_MODULE, POST_PTX)?;
    // SAFETY: every pixel's label is written by its thread.
    let out = unsafe { dev.alloc::<u32>(h * w)? };
    launch!(func, pixels(n), "threshold_labels_f32";
        p &probs, p &zeroed, p &out, u32 &n, u32 &c_n, f32 &prob_thd, u32 &bg)?;
    Ok(wrap(out, dev))
}

/// The resampling kernels' interpolation tables: indices (u32) and weights (f32).
fn tables<'a>(
    s2: &'a CudaStorage,
    l2: &Layout,
    s3: &'a CudaStorage,
    l3: &Layout,
    what: &str,
) -> Result<(CudaView<'a, u32>, CudaView<'a, f32>)> {
    Ok((
        view::<u32>(s2, l2, &format!("{what} indices"))?,
        view::<f32>(s3, l3, &format!("{what} weights"))?,
    ))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn resize_bilinear(
    op: &crate::post::ResizeBilinear,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
) -> Result<CudaStorage> {
    let dev = &s1.device;
    let (p_n, ih, iw) = l1.shape().dims3()?;
    let what = "resize_bilinear";
    let n = count(p_n * op.oh * op.ow, what)?;
    count(p_n * ih * iw, what)?;
    let (planes, ih, iw) = (count(p_n, what)?, count(ih, what)?, count(iw, what)?);
    let (oh, ow) = (count(op.oh, what)?, count(op.ow, what)?);
    let x = view::<f32>(s1, l1, "resize_bilinear input")?;
    let (idx, wts) = tables(s2, l2, s3, l3, what)?;
    let func = dev.get_or_load_custom_func("resize_bilinear_f32", POST_MODULE, POST_PTX)?;
    // SAFETY: every output element is written by its thread.
    let out = unsafe { dev.alloc::<f32>(n as usize)? };
    launch!(func, pixels(n), "resize_bilinear_f32";
        p &x, p &idx, p &wts, p &out, u32 &planes, u32 &ih, u32 &iw, u32 &oh, u32 &ow)?;
    Ok(wrap(out, dev))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn stitch_windows(
    op: &crate::post::StitchWindows,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    s3: &CudaStorage,
    l3: &Layout,
) -> Result<CudaStorage> {
    let dev = &s1.device;
    let (b_n, q_n, gh, gw) = l1.shape().dims4()?;
    let what = "stitch_windows";
    let n = count(q_n * op.h * op.w, what)?;
    count(b_n * q_n * gh * gw, what)?;
    let (b_n, q_n) = (count(b_n, what)?, count(q_n, what)?);
    let (gh, gw, h, w) = (
        count(gh, what)?,
        count(gw, what)?,
        count(op.h, what)?,
        count(op.w, what)?,
    );
    let logits = view::<f32>(s1, l1, "stitch_windows logits")?;
    let (idx, wts) = tables(s2, l2, s3, l3, what)?;
    let func = dev.get_or_load_custom_func("stitch_windows_f32", POST_MODULE, POST_PTX)?;
    // SAFETY: every output element is written by its thread.
    let out = unsafe { dev.alloc::<f32>(n as usize)? };
    launch!(func, pixels(n), "stitch_windows_f32";
        p &logits, p &idx, p &wts, p &out,
        u32 &b_n, u32 &q_n, u32 &gh, u32 &gw, u32 &h, u32 &w)?;
    Ok(wrap(out, dev))
}
