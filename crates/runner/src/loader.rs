//! Samples decoded ahead of inference.
//!
//! Decoding a VOC-sized JPEG and its label PNG takes ~2.5 ms on one core (this repository's
//! 2-core machine: 1.9 ms for the JPEG with libjpeg-turbo's decoder, 0.6 ms for the PNG), as long
//! as the whole f16 inference of that image on an H100 (~2.6 ms). Read one at a time on the
//! runner's thread, it would halve a GPU run's speed. So a background thread decodes the next
//! samples in parallel blocks (rayon) while the runner computes, and hands them over in order.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::Scope;

use rayon::prelude::*;
use segsweep_data::{DataError, Dataset, Sample};

/// One loaded sample, or why it could not be loaded, with its index.
type Loaded = (usize, Result<Sample, DataError>);

/// Hands out a dataset's samples `start, start + 1, …` in order: decoded ahead on a background
/// thread of the scope, at most `ahead` of them waiting (plus one parallel block in flight), or,
/// with `ahead = 0`, each on the caller's thread when asked for. Errors come back with their
/// sample, exactly as [`Dataset::load`] gives them.
pub(crate) struct Loader<'a> {
    ds: &'a Dataset,
    next: usize,
    rx: Option<Receiver<Loaded>>,
}

impl<'a> Loader<'a> {
    /// Start decoding from sample `start`. The background thread stops when the dataset ends or
    /// when the loader is dropped (after finishing the block it is decoding).
    pub(crate) fn new<'scope>(
        scope: &'scope Scope<'scope, '_>,
        ds: &'a Dataset,
        start: usize,
        ahead: usize,
    ) -> Loader<'a>
    where
        'a: 'scope,
    {
        if ahead == 0 || start >= ds.len() {
            return Loader {
                ds,
                next: start,
                rx: None,
            };
        }
        let (tx, rx) = sync_channel::<Loaded>(ahead);
        // A block is as many samples as threads, so a block decodes in about one sample's time.
        let block = rayon::current_num_threads().clamp(1, ahead);
        scope.spawn(move || {
            let mut i = start;
            while i < ds.len() {
                let end = (i + block).min(ds.len());
                let loaded: Vec<Loaded> =
                    (i..end).into_par_iter().map(|k| (k, ds.load(k))).collect();
                for item in loaded {
                    if tx.send(item).is_err() {
                        return; // the loader is gone: the run stopped
                    }
                }
                i = end;
            }
        });
        Loader {
            ds,
            next: start,
            rx: Some(rx),
        }
    }

    /// Sample `i`, which must be the next one: `start` first, then each following index once.
    pub(crate) fn load(&mut self, i: usize) -> Result<Sample, DataError> {
        let expected = self.next;
        self.next = i + 1;
        if i == expected {
            if let Some(rx) = &self.rx {
                if let Ok((k, s)) = rx.recv() {
                    if k == i {
                        return s;
                    }
                }
            }
        }
        // Out of order (not how the runner asks) or the thread ended early: load it here, and
        // every later sample too.
        self.rx = None;
        self.ds.load(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_dataset(n: usize) -> Dataset {
        Dataset::synthetic(n, 0)
    }

    fn all_ids(ds: &Dataset) -> Vec<String> {
        (0..ds.len()).map(|i| ds.load(i).unwrap().id).collect()
    }

    fn ids(ds: &Dataset, start: usize, ahead: usize) -> Vec<String> {
        std::thread::scope(|s| {
            let mut l = Loader::new(s, ds, start, ahead);
            (start..ds.len()).map(|i| l.load(i).unwrap().id).collect()
        })
    }

    #[test]
    fn samples_come_in_order_from_any_start_and_lookahead() {
        let ds = memory_dataset(11);
        let all = all_ids(&ds);
        for ahead in [0, 1, 2, 3, 16] {
            assert_eq!(ids(&ds, 0, ahead), all, "ahead {ahead}");
            assert_eq!(ids(&ds, 7, ahead), all[7..], "ahead {ahead}");
        }
        assert!(ids(&ds, 11, 4).is_empty());
    }

    #[test]
    fn dropping_the_loader_early_stops_the_thread() {
        let ds = memory_dataset(50);
        let first = std::thread::scope(|s| {
            let mut l = Loader::new(s, &ds, 0, 2);
            l.load(0).unwrap().id
            // the scope joins the thread: this returns only if it stops
        });
        assert_eq!(first, all_ids(&ds)[0]);
    }

    #[test]
    fn an_out_of_order_request_still_gets_its_sample() {
        let ds = memory_dataset(6);
        std::thread::scope(|s| {
            let mut l = Loader::new(s, &ds, 0, 2);
            let all = all_ids(&ds);
            assert_eq!(l.load(0).unwrap().id, all[0]);
            assert_eq!(l.load(3).unwrap().id, all[3]);
            assert_eq!(l.load(4).unwrap().id, all[4]);
        });
    }
}
