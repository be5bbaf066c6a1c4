//! The permutohedral lattice (Adams, Baek & Davis, Eurographics 2010) as pydensecrf builds and
//! uses it: an approximate Gaussian filter over `d`-dimensional pixel features in time linear in
//! pixels × values.
//!
//! Reference: `densecrf/src/permutohedral.cpp` in lucasb-eyer/pydensecrf. On x86-64 its build
//! takes the SSE branch (`__SSE__` is always defined there), so this port follows the SSE `init`
//! (round half to even, float rank arithmetic) and picks the slice order per value count exactly
//! as `Permutohedral::compute` does (`seqCompute` for ≤ 2 values, `sseCompute` above).
//!
//! Layout: values are pixel-major, `(n, vs)` with `vs` values per pixel, like Eigen's
//! column-major `(vs, n)` matrices in the reference.

use rayon::prelude::*;

/// Define a function twice, generically and compiled for AVX2, and pick at run time. Only the
/// vector width changes: FMA is not enabled and Rust never contracts `a * b + c`, so every
/// value is rounded exactly as in the SSE build of the reference.
macro_rules! multiversion {
    ($vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            fn avx2($($arg: $ty),*) {
                generic($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { avx2($($arg),*) };
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Pixels per rayon task in the per-pixel loops; large enough to amortise task overhead.
pub(crate) const PIXEL_BLOCK: usize = 512;

/// A lattice built for one set of pixel features; reused for every filtering pass.
pub(crate) struct Lattice {
    /// Feature dimension d.
    d: usize,
    /// Number of pixels.
    n: usize,
    /// Number of lattice vertices.
    m: usize,
    /// `(n, d+1)`: for each pixel and simplex corner, the vertex index + 1 (row 0 of the value
    /// buffers is a zero row, as in the reference's shift by one).
    offset: Vec<u32>,
    /// `(n, d+1)`: barycentric weight of each corner.
    bary: Vec<f32>,
    /// `(d+1, m)`: for each blur axis and vertex, its two neighbours + 1 (0 = outside).
    neighbours: Vec<[u32; 2]>,
    /// CSR over vertices of the splat contributions, in increasing pixel order so that a
    /// parallel gather adds in the same order as the reference's serial scatter. Empty when
    /// the splat runs as a scatter (see `Lattice::splat`).
    splat_start: Vec<u32>,
    splat_pixel: Vec<u32>,
    splat_weight: Vec<f32>,
    /// `1 / (1 + 2^-d)`, the reference's slice scale.
    alpha: f32,
}

/// Open-addressing table from `d`-component integer keys to local vertex indices; one shard of
/// the lattice's vertex set (shards are chosen by hash bits and filled in parallel).
struct KeyTable {
    d: usize,
    /// Number of keys; kept apart from `keys.len() / d`, a division by a run-time value on
    /// every lookup.
    len: usize,
    keys: Vec<i32>,
    slots: Vec<u32>,
    mask: usize,
}

const EMPTY: u32 = u32::MAX;
/// Number of hash shards; a power of two, and more than the cores we expect.
const SHARD_BITS: u32 = 3;
const SHARDS: usize = 1 << SHARD_BITS;

#[inline(always)]
fn hash_key(key: &[i32]) -> u64 {
    let mut h: u64 = 0;
    for &k in key {
        h = (h ^ (k as u32 as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    h
}

fn shard_of(h: u64) -> usize {
    (h >> (64 - SHARD_BITS)) as usize
}

#[inline]
fn same(a: &[i32], b: &[i32]) -> bool {
    a.iter().zip(b).all(|(x, y)| x == y)
}

impl KeyTable {
    fn with_capacity(d: usize, expected: usize) -> KeyTable {
        let cap = (2 * expected.max(8)).next_power_of_two();
        KeyTable {
            d,
            len: 0,
            keys: Vec::with_capacity(expected * d),
            slots: vec![EMPTY; cap],
            mask: cap - 1,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn key(&self, e: u32) -> &[i32] {
        let e = e as usize;
        &self.keys[e * self.d..(e + 1) * self.d]
    }

    fn find(&self, key: &[i32], h: u64) -> Option<u32> {
        let mut s = h as usize & self.mask;
        loop {
            let e = self.slots[s];
            if e == EMPTY {
                return None;
            }
            if same(self.key(e), key) {
                return Some(e);
            }
            s = (s + 1) & self.mask;
        }
    }

    fn find_or_insert(&mut self, key: &[i32], h: u64) -> u32 {
        if 2 * (self.len() + 1) > self.slots.len() {
            self.grow();
        }
        let mut s = h as usize & self.mask;
        loop {
            let e = self.slots[s];
            if e == EMPTY {
                let id = self.len as u32;
                self.keys.extend_from_slice(key);
                self.len += 1;
                self.slots[s] = id;
                return id;
            }
            if same(self.key(e), key) {
                return e;
            }
            s = (s + 1) & self.mask;
        }
    }

    fn grow(&mut self) {
        let cap = self.slots.len() * 2;
        self.slots = vec![EMPTY; cap];
        self.mask = cap - 1;
        for e in 0..self.len() as u32 {
            let mut s = hash_key(self.key(e)) as usize & self.mask;
            while self.slots[s] != EMPTY {
                s = (s + 1) & self.mask;
            }
            self.slots[s] = e;
        }
    }
}

/// All lattice vertices: [`SHARDS`] tables, and the map between (shard, local index) and the
/// global vertex index.
struct Vertices {
    shards: Vec<KeyTable>,
    /// `global[s][e]`: global index of shard s's vertex e.
    global: Vec<Vec<u32>>,
    /// `local[v]`: (shard, local index) of global vertex v.
    local: Vec<(u8, u32)>,
}

impl Vertices {
    /// Global index of `key`, if it is a vertex.
    fn find(&self, key: &[i32]) -> Option<u32> {
        let h = hash_key(key);
        let s = shard_of(h);
        self.shards[s]
            .find(key, h)
            .map(|e| self.global[s][e as usize])
    }

    /// The key of global vertex `v`.
    fn key(&self, v: u32) -> &[i32] {
        let (s, e) = self.local[v as usize];
        self.shards[s as usize].key(e)
    }

    fn len(&self) -> usize {
        self.local.len()
    }
}

/// The enclosing simplex of one elevated feature: for each corner its key (`d` shorts) and its
/// barycentric weight. Mirrors the SSE branch of `Permutohedral::init`, one lane at a time.
struct Embedder {
    d: usize,
    scale: Vec<f32>,
    canonical: Vec<i32>,
    inv_dp1: f32,
    dp1: f32,
}

impl Embedder {
    fn new(d: usize) -> Embedder {
        let dp1 = d + 1;
        let mut canonical = vec![0i32; dp1 * dp1];
        for i in 0..=d {
            for j in 0..=d - i {
                canonical[i * dp1 + j] = i as i32;
            }
            for j in d - i + 1..=d {
                canonical[i * dp1 + j] = i as i32 - dp1 as i32;
            }
        }
        // The reference computes these in double and stores floats.
        let inv_std_dev = ((2.0f64 / 3.0).sqrt() * dp1 as f64) as f32;
        let scale = (0..d)
            .map(|i| (1.0 / (((i + 2) * (i + 1)) as f64).sqrt() * inv_std_dev as f64) as f32)
            .collect();
        Embedder {
            d,
            scale,
            canonical,
            inv_dp1: 1.0f32 / dp1 as f32,
            dp1: dp1 as f32,
        }
    }

    /// Fill `keys` (`(d+1, d)`) and `bary` (`d+1`) for the feature vector `f` (`d`).
    #[inline(always)]
    fn embed(&self, f: &[f32], keys: &mut [i32], bary: &mut [f32]) {
        let d = self.d;
        let mut elevated = [0f32; MAX_D + 1];
        let mut rem0 = [0f32; MAX_D + 1];
        let mut rank = [0i32; MAX_D + 1];
        let mut b = [0f32; MAX_D + 2];

        // Elevate onto the hyperplane: y = E f.
        let mut sm = 0f32;
        for j in (1..=d).rev() {
            let cf = f[j - 1] * self.scale[j - 1];
            elevated[j] = sm - j as f32 * cf;
            sm += cf;
        }
        elevated[0] = sm;

        // Closest zero-coloured point: round each coordinate to a multiple of d+1 (the SSE path
        // rounds half to even through `cvtps_epi32`; the scalar path differs only on ties).
        let mut sum = 0f32;
        for i in 0..=d {
            let v = (self.inv_dp1 * elevated[i]).round_ties_even();
            rem0[i] = v * self.dp1;
            sum += v;
        }
        let sum = sum as i32;

        // Rank of each coordinate's remainder in sorted order.
        for i in 0..d {
            let di = elevated[i] - rem0[i];
            for j in i + 1..=d {
                if di < elevated[j] - rem0[j] {
                    rank[i] += 1;
                } else {
                    rank[j] += 1;
                }
            }
        }

        // Bring the point back onto the plane when the rounded coordinates do not sum to zero.
        let dp1 = d as i32 + 1;
        for i in 0..=d {
            rank[i] += sum;
            if rank[i] < 0 {
                rank[i] += dp1;
                rem0[i] += self.dp1;
            } else if rank[i] >= dp1 {
                rank[i] -= dp1;
                rem0[i] -= self.dp1;
            }
        }

        // Barycentric coordinates, accumulated in the reference's order.
        for i in 0..=d {
            let v = (elevated[i] - rem0[i]) * self.inv_dp1;
            let p = (d as i32 - rank[i]) as usize;
            b[p] += v;
            b[p + 1] -= v;
        }
        b[0] += 1.0 + b[d + 1];

        for r in 0..=d {
            let key = &mut keys[r * d..(r + 1) * d];
            for i in 0..d {
                let c = self.canonical[r * (d + 1) + rank[i] as usize];
                key[i] = (rem0[i] + c as f32) as i32;
            }
            bary[r] = b[r];
        }
    }
}

/// Largest feature dimension supported (pydensecrf's bilateral kernel uses 5).
pub(crate) const MAX_D: usize = 8;

/// Value vectors are padded to a multiple of this many floats so that every inner loop runs
/// on fixed-size chunks the compiler turns into SIMD without remainder code. Padding lanes hold
/// zeros and never mix with real ones (every operation is per lane).
pub(crate) const LANES: usize = 8;

/// `n` rounded up to a multiple of [`LANES`].
pub(crate) fn padded(n: usize) -> usize {
    n.div_ceil(LANES) * LANES
}

pub(crate) type Lane = [f32; LANES];

#[inline(always)]
pub(crate) fn lanes(x: &[f32]) -> impl Iterator<Item = &Lane> {
    x.chunks_exact(LANES)
        .map(|c| c.try_into().expect("chunk of LANES"))
}

#[inline(always)]
pub(crate) fn lanes_mut(x: &mut [f32]) -> impl Iterator<Item = &mut Lane> {
    x.chunks_exact_mut(LANES)
        .map(|c| c.try_into().expect("chunk of LANES"))
}

impl Lattice {
    /// Build the lattice for `features`, `(n, d)` pixel-major. `d` must be in `1..=MAX_D`.
    pub(crate) fn new(features: &[f32], d: usize) -> Lattice {
        assert!(
            (1..=MAX_D).contains(&d),
            "lattice dimension {d} out of range"
        );
        let n = features.len() / d;
        let dp1 = d + 1;
        let emb = Embedder::new(d);

        // Per-pixel simplex and key hashes, in parallel.
        let mut keys = vec![0i32; n * dp1 * d];
        let mut bary = vec![0f32; n * dp1];
        let mut hashes = vec![0u64; n * dp1];
        keys.par_chunks_mut(PIXEL_BLOCK * dp1 * d)
            .zip(bary.par_chunks_mut(PIXEL_BLOCK * dp1))
            .zip(hashes.par_chunks_mut(PIXEL_BLOCK * dp1))
            .enumerate()
            .for_each(|(blk, ((kc, bc), hc))| {
                let f = &features[blk * PIXEL_BLOCK * d..];
                embed_block(&emb, f, kc, bc, hc);
            });

        // Deduplicate the keys shard by shard, in parallel; then number the vertices in order
        // of first appearance in pixel order, as the reference's single table does. The
        // numbering changes no value (splat order is pixel order, blur is per vertex) but keeps
        // lattice neighbours close in memory, which the blur's speed depends on.
        // Bucket the (pixel, corner) entries by shard first: filtering all entries in every
        // shard's task costs a mispredicted branch per entry and shard.
        let mut members: Vec<Vec<u32>> = (0..SHARDS)
            .map(|_| Vec::with_capacity(n * dp1 / SHARDS * 9 / 8))
            .collect();
        for (e, &h) in hashes.iter().enumerate() {
            members[shard_of(h)].push(e as u32);
        }
        let shard_ids: Vec<(KeyTable, Vec<u32>)> = members
            .into_par_iter()
            .map(|entries| {
                // Start small and let the table grow: neighbouring pixels share most vertices
                // (~1–5 % of the entries are distinct here), and a table sized for many more
                // keys than it gets spreads its probes over memory that misses the cache.
                let mut table = KeyTable::with_capacity(d, n * dp1 / SHARDS / 32);
                let ids = entries
                    .iter()
                    .map(|&e| {
                        let e = e as usize;
                        table.find_or_insert(&keys[e * d..(e + 1) * d], hashes[e])
                    })
                    .collect();
                (table, ids)
            })
            .collect();
        drop(keys);
        let mut global: Vec<Vec<u32>> = shard_ids
            .iter()
            .map(|(t, _)| vec![EMPTY; t.len()])
            .collect();
        let mut local = Vec::with_capacity(global.iter().map(Vec::len).sum());
        let mut cursor = [0usize; SHARDS];
        let offset: Vec<u32> = hashes
            .iter()
            .map(|&h| {
                let s = shard_of(h);
                let id = shard_ids[s].1[cursor[s]];
                cursor[s] += 1;
                let g = &mut global[s][id as usize];
                if *g == EMPTY {
                    *g = local.len() as u32;
                    local.push((s as u8, id));
                }
                *g + 1
            })
            .collect();
        drop(hashes);
        let vertices = Vertices {
            shards: shard_ids.into_iter().map(|(t, _)| t).collect(),
            global,
            local,
        };
        let m = vertices.len();

        let neighbours = Self::neighbours(&vertices, d, m);
        // Only the gather schedule reads the CSR (see `splat`); it is built serially, so skip it
        // when the scatter will be used.
        let (splat_start, splat_pixel, splat_weight) = if Self::prefers_gather(m, n) {
            Self::splat_csr(&offset, &bary, dp1, m)
        } else {
            Default::default()
        };
        Lattice {
            d,
            n,
            m,
            offset,
            bary,
            neighbours,
            splat_start,
            splat_pixel,
            splat_weight,
            alpha: 1.0f32 / (1.0 + 2f32.powi(-(d as i32))),
        }
    }

    /// For each axis j and vertex, the vertices one step along ±(the j-th lattice direction).
    fn neighbours(vertices: &Vertices, d: usize, m: usize) -> Vec<[u32; 2]> {
        let mut out = vec![[0u32; 2]; (d + 1) * m];
        out.par_chunks_mut(PIXEL_BLOCK)
            .enumerate()
            .for_each(|(blk, slots)| {
                let mut n1 = [0i32; MAX_D];
                let mut n2 = [0i32; MAX_D];
                for (r, slot) in slots.iter_mut().enumerate() {
                    let (j, v) = ((blk * PIXEL_BLOCK + r) / m, (blk * PIXEL_BLOCK + r) % m);
                    let key = vertices.key(v as u32);
                    for k in 0..d {
                        n1[k] = key[k] - 1;
                        n2[k] = key[k] + 1;
                    }
                    // The (d+1)-th coordinate is implicit, so axis d moves all stored ones.
                    if j < d {
                        n1[j] = key[j] + d as i32;
                        n2[j] = key[j] - d as i32;
                    }
                    let look = |k: &[i32]| vertices.find(k).map_or(0, |e| e + 1);
                    *slot = [look(&n1[..d]), look(&n2[..d])];
                }
            });
        out
    }

    fn splat_csr(
        offset: &[u32],
        bary: &[f32],
        dp1: usize,
        m: usize,
    ) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
        let mut start = vec![0u32; m + 2];
        for &o in offset {
            start[o as usize + 1] += 1;
        }
        for v in 1..start.len() {
            start[v] += start[v - 1];
        }
        let mut cursor = start.clone();
        let mut pixel = vec![0u32; offset.len()];
        let mut weight = vec![0f32; offset.len()];
        for (e, (&o, &w)) in offset.iter().zip(bary).enumerate() {
            let c = &mut cursor[o as usize];
            pixel[*c as usize] = (e / dp1) as u32;
            weight[*c as usize] = w;
            *c += 1;
        }
        (start, pixel, weight)
    }

    /// Number of pixels the lattice was built for.
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// Length of a value buffer `(m+1, vs)` for [`Lattice::splat`] and [`Lattice::blur`].
    pub(crate) fn values_len(&self, vs: usize) -> usize {
        (self.m + 1) * vs
    }

    /// Splat pixel values onto the lattice vertices: vertex v receives Σ w · (input[i] · scale[i])
    /// over its pixels i. `input` is `(n, vs)` with `vs` a multiple of [`LANES`], `scale` is
    /// `(n)`; `values` and `scratch` are `(m+1, vs)`, the result lands in `values` (row 0 stays
    /// zero) and `scratch` is clobbered.
    ///
    /// Two schedules: a gather over each vertex's pixel list, parallel over vertices, adding in
    /// increasing pixel order (the reference's order; better when there are many vertices,
    /// each with a few nearby pixels), and a scatter in pixel order (cache-friendly when the
    /// vertex values are small, i.e. few vertices). The scatter splits the pixels in two halves
    /// accumulated into `values` and `scratch` (one task each, so two cores share it evenly; it
    /// does not use more) and then added.
    // Deviation: the scatter's two half-sums change the rounding order of the reference's
    // serial sum (relative differences ~1e-7; max |ΔQ| vs pydensecrf stays ~1e-6, measured).
    pub(crate) fn splat(
        &self,
        vs: usize,
        input: &[f32],
        scale: &[f32],
        values: &mut [f32],
        scratch: &mut [f32],
    ) {
        self.splat_with(
            Self::prefers_gather(self.m, self.n),
            vs,
            input,
            scale,
            values,
            scratch,
        )
    }

    /// Whether the splat runs as a gather, for `m` vertices and `n` pixels.
    fn prefers_gather(m: usize, n: usize) -> bool {
        2 * m >= n
    }

    fn splat_with(
        &self,
        gather: bool,
        vs: usize,
        input: &[f32],
        scale: &[f32],
        values: &mut [f32],
        scratch: &mut [f32],
    ) {
        debug_assert_eq!(vs % LANES, 0);
        values[..vs].fill(0.0);
        if gather {
            assert_eq!(self.splat_start.len(), self.m + 2, "gather without its CSR");
            values[vs..]
                .par_chunks_mut(vs * 64)
                .enumerate()
                .for_each(|(blk, rows)| splat_gather(self, blk * 64 + 1, vs, input, scale, rows));
        } else {
            let len = self.values_len(vs);
            let (values, scratch) = (&mut values[..len], &mut scratch[..len]);
            let half = self.n / 2;
            [(0..half, &mut *values), (half..self.n, &mut *scratch)]
                .into_par_iter()
                .for_each(|(pixels, dst)| splat_scatter(self, pixels, vs, input, scale, dst));
            values
                .par_chunks_mut(vs * 256)
                .zip(scratch.par_chunks(vs * 256))
                .for_each(|(a, b)| add_into(a, b));
        }
    }

    /// Blur along the d+1 lattice axes in order 0..=d with weights (0.5, 1, 0.5), each axis
    /// reading the previous axis' result (`new = old + 0.5·(n1 + n2)`). `values` and `scratch`
    /// are `(m+1, vs)` (see [`Lattice::values_len`]); returns whichever holds the result.
    pub(crate) fn blur<'a>(
        &self,
        vs: usize,
        values: &'a mut [f32],
        scratch: &'a mut [f32],
    ) -> &'a [f32] {
        let (mut cur, mut next) = (values, scratch);
        next[..vs].fill(0.0);
        for j in 0..=self.d {
            let nb = &self.neighbours[j * self.m..(j + 1) * self.m];
            let old: &[f32] = cur;
            next[vs..]
                .par_chunks_mut(vs * 256)
                .enumerate()
                .for_each(|(blk, rows)| blur_rows(&nb[blk * 256..], blk * 256, vs, old, rows));
            std::mem::swap(&mut cur, &mut next);
        }
        cur
    }

    /// [`Lattice::slice`] for `vs = G·LANES` values, accumulated in registers rather than in
    /// memory (same operations, same order, so the same values).
    #[inline(always)]
    pub(crate) fn slice_lanes<const G: usize>(
        &self,
        i: usize,
        seq: bool,
        values: &[f32],
    ) -> [Lane; G] {
        let (dp1, vs) = (self.d + 1, G * LANES);
        let mut out = [[0f32; LANES]; G];
        let offs = &self.offset[i * dp1..(i + 1) * dp1];
        let ws = &self.bary[i * dp1..(i + 1) * dp1];
        for (&o, &w) in offs.iter().zip(ws) {
            let row = &values[o as usize * vs..(o as usize + 1) * vs];
            let wa = w * self.alpha;
            for (a, v) in out.iter_mut().zip(lanes(row)) {
                for l in 0..LANES {
                    a[l] += if seq {
                        w * v[l] * self.alpha
                    } else {
                        wa * v[l]
                    };
                }
            }
        }
        out
    }

    /// Slice the blurred `values` back to pixel `i`, writing its `vs` values to `out`.
    ///
    /// The reference scales by alpha in two orders: `(w·v)·alpha` in `seqCompute` (used for
    /// ≤ 2 real values, `seq`) and `(w·alpha)·v` in `sseCompute`; both are kept for parity.
    #[inline(always)]
    pub(crate) fn slice(&self, i: usize, vs: usize, seq: bool, values: &[f32], out: &mut [f32]) {
        let dp1 = self.d + 1;
        out.fill(0.0);
        let offs = &self.offset[i * dp1..(i + 1) * dp1];
        let ws = &self.bary[i * dp1..(i + 1) * dp1];
        for (&o, &w) in offs.iter().zip(ws) {
            let row = &values[o as usize * vs..(o as usize + 1) * vs];
            if seq {
                for (a, v) in lanes_mut(out).zip(lanes(row)) {
                    for l in 0..LANES {
                        a[l] += w * v[l] * self.alpha;
                    }
                }
            } else {
                let wa = w * self.alpha;
                for (a, v) in lanes_mut(out).zip(lanes(row)) {
                    for l in 0..LANES {
                        a[l] += wa * v[l];
                    }
                }
            }
        }
    }
}

// Scatter the pixels in `pixels` into `dst` (`(m+1, vs)`, zeroed first), in pixel order.
multiversion! {
    fn splat_scatter(
        lat: &Lattice,
        pixels: std::ops::Range<usize>,
        vs: usize,
        input: &[f32],
        scale: &[f32],
        dst: &mut [f32],
    ) {
        dst.fill(0.0);
        let dp1 = lat.d + 1;
        let mut xs = vec![0f32; vs];
        for i in pixels {
            let np = scale[i];
            for (s, x) in lanes_mut(&mut xs).zip(lanes(&input[i * vs..(i + 1) * vs])) {
                for l in 0..LANES {
                    s[l] = x[l] * np;
                }
            }
            for j in 0..dp1 {
                let o = lat.offset[i * dp1 + j] as usize;
                let w = lat.bary[i * dp1 + j];
                for (a, x) in lanes_mut(&mut dst[o * vs..(o + 1) * vs]).zip(lanes(&xs)) {
                    for l in 0..LANES {
                        a[l] += w * x[l];
                    }
                }
            }
        }
    }
}

// Embed the pixels of one block: `f` starts at the block's first feature vector; `keys`,
// `bary` and `hashes` are the block's `(p, d+1, d)`, `(p, d+1)` and `(p, d+1)` slices.
// Compiled for AVX2 mainly so that the rounding is one instruction instead of a libm call.
multiversion! {
    fn embed_block(emb: &Embedder, f: &[f32], keys: &mut [i32], bary: &mut [f32], hashes: &mut [u64]) {
        let (d, dp1) = (emb.d, emb.d + 1);
        for (p, (k, b)) in keys.chunks_mut(dp1 * d).zip(bary.chunks_mut(dp1)).enumerate() {
            emb.embed(&f[p * d..(p + 1) * d], k, b);
        }
        for (h, k) in hashes.iter_mut().zip(keys.chunks(d)) {
            *h = hash_key(k);
        }
    }
}

multiversion! {
    fn add_into(a: &mut [f32], b: &[f32]) {
        for (x, y) in lanes_mut(a).zip(lanes(b)) {
            for l in 0..LANES {
                x[l] += y[l];
            }
        }
    }
}

multiversion! {
    fn splat_gather(lat: &Lattice, first: usize, vs: usize, input: &[f32], scale: &[f32], rows: &mut [f32]) {
        for (r, acc) in rows.chunks_exact_mut(vs).enumerate() {
            let v = first + r;
            acc.fill(0.0);
            let (s, e) = (lat.splat_start[v] as usize, lat.splat_start[v + 1] as usize);
            for (&p, &w) in lat.splat_pixel[s..e].iter().zip(&lat.splat_weight[s..e]) {
                let p = p as usize;
                let np = scale[p];
                // The reference scales the input first (`in * norm.asDiagonal()`), then
                // multiplies by the weight: keep both roundings.
                for (a, x) in lanes_mut(acc).zip(lanes(&input[p * vs..(p + 1) * vs])) {
                    for l in 0..LANES {
                        a[l] += w * (x[l] * np);
                    }
                }
            }
        }
    }
}

multiversion! {
fn blur_rows(nb: &[[u32; 2]], first: usize, vs: usize, old: &[f32], rows: &mut [f32]) {
    for (r, new) in rows.chunks_exact_mut(vs).enumerate() {
        let v = first + r;
        let [a, b] = nb[r];
        let o = &old[(v + 1) * vs..(v + 2) * vs];
        let n1 = &old[a as usize * vs..(a as usize + 1) * vs];
        let n2 = &old[b as usize * vs..(b as usize + 1) * vs];
        for (((nw, o), x), y) in lanes_mut(new).zip(lanes(o)).zip(lanes(n1)).zip(lanes(n2)) {
            for l in 0..LANES {
                nw[l] = o[l] + 0.5 * (x[l] + y[l]);
            }
        }
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An impulse on a 1-D line (features i/2, so one lattice step is ~1.2 pixels) spreads into
    /// a bump: peaked at the impulse, decreasing on both sides, nearly symmetric (the lattice
    /// points do not sit symmetrically around pixel 20), and zero beyond the blur's reach.
    #[test]
    fn impulse_spreads_into_a_finite_bump() {
        let n = 41;
        let feats: Vec<f32> = (0..n).map(|i| i as f32 / 2.0).collect();
        let lat = Lattice::new(&feats, 1);
        let mut values = vec![0f32; lat.values_len(LANES)];
        let mut scratch = values.clone();
        let mut impulse = vec![0f32; n * LANES];
        impulse[20 * LANES] = 1.0;
        lat.splat(LANES, &impulse, &vec![1.0; n], &mut values, &mut scratch);
        let values = lat.blur(LANES, &mut values, &mut scratch);
        let mut out = vec![0f32; n];
        let mut px = [0f32; LANES];
        for (i, o) in out.iter_mut().enumerate() {
            lat.slice(i, LANES, true, values, &mut px);
            *o = px[0];
        }
        assert!(out[20] > 0.5);
        for k in 1..6 {
            assert!(
                (out[20 - k] - out[20 + k]).abs() < 0.03,
                "asymmetric at {k}: {out:?}"
            );
            assert!(
                out[20 + k] < out[20 + k - 1],
                "not decreasing at +{k}: {out:?}"
            );
            assert!(
                out[20 - k] < out[20 - k + 1],
                "not decreasing at -{k}: {out:?}"
            );
        }
        assert!(
            out[..10].iter().chain(&out[31..]).all(|&v| v == 0.0),
            "{out:?}"
        );
    }

    /// Barycentric weights of every pixel sum to one and lie in [0, 1].
    #[test]
    fn barycentric_weights_are_a_partition_of_unity() {
        let (h, w) = (7, 11);
        let mut feats = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let r = ((x * 37 + y * 11) % 256) as f32;
                feats.extend_from_slice(&[x as f32 / 3.0, y as f32 / 3.0, r / 13.0, 0.5, 1.25]);
            }
        }
        let lat = Lattice::new(&feats, 5);
        for i in 0..h * w {
            let ws = &lat.bary[i * 6..(i + 1) * 6];
            let s: f32 = ws.iter().sum();
            assert!((s - 1.0).abs() < 1e-5, "pixel {i}: sum {s}");
            assert!(ws.iter().all(|&b| (-1e-6..=1.0 + 1e-6).contains(&b)));
        }
    }

    /// The gather and the scatter schedules of the splat give the same sums up to the rounding
    /// of the scatter's two half-sums.
    #[test]
    fn splat_schedules_agree() {
        let (h, w, vs) = (9, 13, 2 * LANES);
        let mut feats = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let g = ((x * 53 + y * 29) % 97) as f32;
                feats.extend_from_slice(&[x as f32 / 2.0, y as f32 / 2.0, g / 7.0]);
            }
        }
        let lat = Lattice::new(&feats, 3);
        let n = h * w;
        let input: Vec<f32> = (0..n * vs)
            .map(|i| ((i * 7919) % 1000) as f32 / 999.0)
            .collect();
        let scale: Vec<f32> = (0..n).map(|i| 0.5 + (i % 5) as f32 / 10.0).collect();
        let mut a = vec![f32::NAN; lat.values_len(vs)];
        let mut b = vec![f32::NAN; lat.values_len(vs)];
        let mut scratch = vec![f32::NAN; lat.values_len(vs)];
        lat.splat_with(true, vs, &input, &scale, &mut a, &mut scratch);
        lat.splat_with(false, vs, &input, &scale, &mut b, &mut scratch);
        assert!(a
            .iter()
            .zip(&b)
            .all(|(x, y)| (x - y).abs() <= 1e-6 * x.abs().max(1.0)));
        assert!(a[vs..].iter().any(|&v| v > 0.0));
    }
}
