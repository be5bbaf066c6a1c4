//! Small constant tables (interpolation indices and weights, query classes, zeroed-class flags)
//! uploaded once per device and reused.
//!
//! The post-processing kernels read tables built on the host per image. Every image of a VOC
//! run has one of a few sizes and every image of a run has the same classifier, so the same
//! tables come back again and again; and an upload from pageable host memory (a `Vec`) can make
//! the host wait for the stream's queued work (CUDA's API synchronisation rules), several times
//! per image and configuration. So [`upload`] keeps up to [`CAPACITY`] recently used tables per
//! process and hands out the device copy of an equal table (same element type, same values bit for bit,
//! same device) instead of uploading it again.

use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use candle_core::{Device, Result, Tensor, WithDType};

/// Tables kept (over all devices). A run sees some image sizes, each needing a few tables, plus
/// one per classifier; a table is a few KB, so this is a few MB of device memory at most. When
/// it is full, the least recently used half goes at once (after a wait for the device: see
/// [`TableCache::insert`]).
pub const CAPACITY: usize = 1024;

/// A table's identity: its element type and values, bit for bit.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    dtype: candle_core::DType,
    /// Each value widened to f64 (exact for every dtype a table uses), little-endian: no unsafe
    /// casts, and equal bytes mean equal values (-0.0 and 0.0 differ).
    bytes: Vec<u8>,
    /// A hash of the above, compared first.
    hash: u64,
}

impl Key {
    /// The key of `data`.
    pub fn of<T: WithDType>(data: &[T]) -> Key {
        let mut bytes = Vec::with_capacity(8 * data.len());
        for v in data {
            bytes.extend_from_slice(&v.to_f64().to_le_bytes());
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        T::DTYPE.as_str().hash(&mut h);
        bytes.hash(&mut h);
        Key {
            dtype: T::DTYPE,
            bytes,
            hash: h.finish(),
        }
    }
}

struct Entry {
    key: Key,
    tensor: Tensor,
    /// When it was last handed out (the cache's clock).
    used: u64,
}

/// Up to `capacity` tables uploaded through it, with when each was last used.
pub struct TableCache {
    capacity: usize,
    entries: Vec<Entry>,
    clock: u64,
}

impl TableCache {
    /// An empty cache keeping at most `capacity` tables (at least 2).
    pub fn new(capacity: usize) -> TableCache {
        TableCache {
            capacity: capacity.max(2),
            entries: Vec::new(),
            clock: 0,
        }
    }

    /// The kept tensor of the table `key` on `device`, if any (now the most recently used).
    pub fn lookup(&mut self, key: &Key, device: &Device) -> Option<Tensor> {
        self.clock += 1;
        let clock = self.clock;
        let e = self.entries.iter_mut().find(|e| {
            e.key.hash == key.hash && e.key == *key && e.tensor.device().same_device(device)
        })?;
        e.used = clock;
        Some(e.tensor.clone())
    }

    /// Keep `tensor` (uploaded from the table `key`, the upload finished) and return it, or the
    /// tensor of an equal table inserted meanwhile. When full, first drops the least recently
    /// used half, after waiting for every stream of their devices: on a GPU every thread
    /// launches on its own stream, and the cache may hold a table's last reference while
    /// another thread's queued kernels still read it, so freeing it without that wait (the
    /// free is ordered on this thread's stream only) could hand its memory to a new
    /// allocation under them. (A table handed out is the most recently used one, and callers
    /// launch the kernels reading it at once: for it to be among the half dropped while such a
    /// launch is still pending, 512 other lookups would have to come between.)
    pub fn insert(&mut self, key: Key, tensor: Tensor) -> Result<Tensor> {
        if let Some(kept) = self.lookup(&key, tensor.device()) {
            return Ok(kept);
        }
        if self.entries.len() >= self.capacity {
            self.entries.sort_by_key(|e| std::cmp::Reverse(e.used));
            let old = self.entries.split_off(self.capacity / 2);
            let mut waited: Vec<&Device> = Vec::new();
            for e in &old {
                let d = e.tensor.device();
                if !waited.iter().any(|w| w.same_device(d)) {
                    synchronize_all_streams(d)?;
                    waited.push(d);
                }
            }
            drop(old);
        }
        self.clock += 1;
        self.entries.push(Entry {
            key,
            tensor: tensor.clone(),
            used: self.clock,
        });
        Ok(tensor)
    }

    /// `data` as a 1-D tensor on `device`: the tensor of an equal table (same dtype, same
    /// values, same device) kept by this cache, else a new upload, kept.
    pub fn get<T: WithDType>(&mut self, data: &[T], device: &Device) -> Result<Tensor> {
        let key = Key::of(data);
        match self.lookup(&key, device) {
            Some(t) => Ok(t),
            None => self.insert(key, upload_finished(data, device)?),
        }
    }

    /// Tables kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No table kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `data` uploaded to `device`, the copy finished. It is handed to every thread: on a GPU each
/// thread has its own stream (candle's per-thread default stream), and an upload from pageable
/// memory may return before its copy is done; nothing would order another thread's reads after
/// it.
fn upload_finished<T: WithDType>(data: &[T], device: &Device) -> Result<Tensor> {
    let tensor = Tensor::from_slice(data, data.len(), device)?;
    device.synchronize()?;
    Ok(tensor)
}

/// Wait for all work queued on `device` by any thread (on a GPU the whole context, every
/// thread's stream; `Device::synchronize` waits for this thread's stream only).
fn synchronize_all_streams(device: &Device) -> Result<()> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        return d
            .cuda_stream()
            .context()
            .synchronize()
            .map_err(candle_core::Error::wrap);
    }
    device.synchronize()
}

static CACHE: Mutex<Option<TableCache>> = Mutex::new(None);

/// `data` as a 1-D tensor on `device`. On a GPU through the process's [`TableCache`] of
/// [`CAPACITY`] tables, so an equal table is uploaded once; on the CPU a plain copy. Tensors are
/// immutable, so handing out the same one is safe. A miss uploads (and waits for the copy)
/// without holding the cache's lock, so other threads' hits do not wait for this thread's
/// stream.
pub fn upload<T: WithDType>(data: &[T], device: &Device) -> Result<Tensor> {
    if device.is_cpu() {
        return Tensor::from_slice(data, data.len(), device);
    }
    let lock = || CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let key = Key::of(data);
    if let Some(t) = lock()
        .get_or_insert_with(|| TableCache::new(CAPACITY))
        .lookup(&key, device)
    {
        return Ok(t);
    }
    let tensor = upload_finished(data, device)?;
    lock()
        .get_or_insert_with(|| TableCache::new(CAPACITY))
        .insert(key, tensor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_equal_table_comes_back_a_different_one_does_not() {
        let dev = Device::Cpu;
        let mut c = TableCache::new(8);
        let a = c.get(&[1u32, 2, 3], &dev).unwrap();
        assert_eq!(a.to_vec1::<u32>().unwrap(), [1, 2, 3]);
        assert_eq!(c.get(&[1u32, 2, 3], &dev).unwrap().id(), a.id());
        // Other values, another length, another dtype with the same values: new tables.
        let b = c.get(&[1u32, 2, 4], &dev).unwrap();
        assert_ne!(b.id(), a.id());
        assert_eq!(b.to_vec1::<u32>().unwrap(), [1, 2, 4]);
        assert_ne!(c.get(&[1u32, 2], &dev).unwrap().id(), a.id());
        let f = c.get(&[1f32, 2.0, 3.0], &dev).unwrap();
        assert_eq!(f.dtype(), candle_core::DType::F32);
        assert_ne!(f.id(), a.id());
        assert_eq!(c.len(), 4);
        // -0.0 and 0.0 are different weights' bits: not merged.
        let z = c.get(&[0f32], &dev).unwrap();
        assert_ne!(c.get(&[-0f32], &dev).unwrap().id(), z.id());
        // An equal table uploaded meanwhile (by another thread): the kept one is returned.
        let again = Tensor::from_slice(&[1u32, 2, 3], 3, &dev).unwrap();
        assert_eq!(
            c.insert(Key::of(&[1u32, 2, 3]), again).unwrap().id(),
            a.id()
        );
        assert_eq!(c.len(), 6);
    }

    #[test]
    fn a_full_cache_drops_its_least_recently_used_half() {
        let dev = Device::Cpu;
        let mut c = TableCache::new(4);
        let t: Vec<Tensor> = (0..4u32).map(|i| c.get(&[i], &dev).unwrap()).collect();
        // Table 0 is used again, so 1 and 2 are the least recently used.
        assert_eq!(c.get(&[0u32], &dev).unwrap().id(), t[0].id());
        c.get(&[9u32], &dev).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&[0u32], &dev).unwrap().id(), t[0].id());
        assert_eq!(c.get(&[3u32], &dev).unwrap().id(), t[3].id());
        assert_ne!(c.get(&[1u32], &dev).unwrap().id(), t[1].id());
        assert_eq!(c.len(), 4);
    }
}
