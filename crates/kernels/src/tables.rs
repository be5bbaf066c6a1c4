//! Small constant tables (interpolation indices and weights, query classes, zeroed-class flags)
//! uploaded once per device and reused.
//!
//! The post-processing kernels read tables built on the host per image. Every image of a VOC
//! run has one of a few sizes and every image of a run has the same classifier, so the same
//! tables come back again and again; and an upload from pageable host memory (a `Vec`) can make
//! the host wait for the stream's queued work (CUDA's API synchronisation rules), several times
//! per image and configuration. So [`upload`] keeps the last [`CAPACITY`] tables per process
//! and hands out the device copy of an equal table (same element type, same values bit for bit,
//! same device) instead of uploading it again.

use std::sync::Mutex;

use candle_core::{Device, Result, Tensor, WithDType};

/// Tables kept (over all devices); the oldest goes first. A run sees a few image sizes, each
/// needing three tables, plus one per classifier; a table is a few KB.
pub const CAPACITY: usize = 256;

struct Entry {
    /// The table's values, for the exact comparison.
    bytes: Vec<u8>,
    dtype: candle_core::DType,
    tensor: Tensor,
}

/// The last `capacity` tables uploaded through it, oldest first.
pub struct TableCache {
    capacity: usize,
    entries: Vec<Entry>,
}

fn bytes_of<T: WithDType>(data: &[T]) -> Vec<u8> {
    // Each value widened to f64 (exact for every dtype a table uses) and its bytes: no unsafe
    // casts, and equal bytes mean equal values.
    let mut out = Vec::with_capacity(8 * data.len());
    for v in data {
        out.extend_from_slice(&v.to_f64().to_le_bytes());
    }
    out
}

impl TableCache {
    /// An empty cache keeping at most `capacity` tables (at least 1).
    pub fn new(capacity: usize) -> TableCache {
        TableCache {
            capacity: capacity.max(1),
            entries: Vec::new(),
        }
    }

    /// `data` as a 1-D tensor on `device`: the tensor of an equal table (same dtype, same
    /// values, same device) uploaded through this cache before and still kept, else a new
    /// upload, kept (the oldest table goes when full).
    pub fn get<T: WithDType>(&mut self, data: &[T], device: &Device) -> Result<Tensor> {
        let key = bytes_of(data);
        if let Some(e) = self.entries.iter().find(|e| {
            e.dtype == T::DTYPE && e.bytes == key && e.tensor.device().same_device(device)
        }) {
            return Ok(e.tensor.clone());
        }
        let tensor = Tensor::from_slice(data, data.len(), device)?;
        // Handed to every thread: on a GPU each thread has its own stream (candle's per-thread
        // default stream), and an upload from pageable memory may return before its copy is
        // done; nothing would order another thread's reads after it.
        device.synchronize()?;
        if self.entries.len() >= self.capacity {
            self.entries.remove(0);
        }
        self.entries.push(Entry {
            bytes: key,
            dtype: T::DTYPE,
            tensor: tensor.clone(),
        });
        Ok(tensor)
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

static CACHE: Mutex<Option<TableCache>> = Mutex::new(None);

/// `data` as a 1-D tensor on `device`. On a GPU through the process's [`TableCache`] of
/// [`CAPACITY`] tables, so an equal table is uploaded once; on the CPU a plain copy. Tensors are
/// immutable, so handing out the same one is safe.
pub fn upload<T: WithDType>(data: &[T], device: &Device) -> Result<Tensor> {
    if device.is_cpu() {
        return Tensor::from_slice(data, data.len(), device);
    }
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .get_or_insert_with(|| TableCache::new(CAPACITY))
        .get(data, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_equal_table_comes_back_a_different_one_does_not() {
        let dev = Device::Cpu;
        let mut c = TableCache::new(3);
        let a = c.get(&[1u32, 2, 3], &dev).unwrap();
        assert_eq!(a.to_vec1::<u32>().unwrap(), [1, 2, 3]);
        assert_eq!(c.get(&[1u32, 2, 3], &dev).unwrap().id(), a.id());
        // Other values, another length, another dtype with the same values: new tables.
        let b = c.get(&[1u32, 2, 4], &dev).unwrap();
        assert_ne!(b.id(), a.id());
        assert_eq!(b.to_vec1::<u32>().unwrap(), [1, 2, 4]);
        assert_ne!(c.get(&[1u32, 2], &dev).unwrap().id(), a.id());
        assert_eq!(c.len(), 3);
        let f = c.get(&[1f32, 2.0, 3.0], &dev).unwrap();
        assert_eq!(f.dtype(), candle_core::DType::F32);
        assert_ne!(f.id(), a.id());
        // Capacity 3: the oldest ([1, 2, 3] u32) went; the newest stay.
        assert_eq!(c.len(), 3);
        assert_ne!(c.get(&[1u32, 2, 3], &dev).unwrap().id(), a.id());
        assert_eq!(c.get(&[1f32, 2.0, 3.0], &dev).unwrap().id(), f.id());
        // -0.0 and 0.0 are different weights' bits: not merged.
        let z = c.get(&[0f32], &dev).unwrap();
        assert_ne!(c.get(&[-0f32], &dev).unwrap().id(), z.id());
    }
}
