//! The audit writer thread: takes what has queued up, formats it, appends
//! it to the file one batch at a time, and on shutdown drains the queue
//! and fsyncs.

use std::fs::File;
use std::path::Path;

use super::json::{format_batch, CHUNK_BYTES};
use super::queue::{Batch, Queue};
use super::sink::Sink;

/// The writer thread's body: runs until the queue is stopped and drained.
pub(super) fn write_loop(queue: &Queue, file: File, path: &Path) {
    // Swapped with the shared queue each round, so both keep their capacity.
    let mut batch = Batch::default();
    let mut out = Vec::with_capacity(512 * 1024);
    let mut sink = Sink::new(file, path);
    let mut depth = crate::metrics::QueueDepth::default();
    loop {
        let stopping = queue.take(&mut batch);
        depth.set(batch.records.len());
        // `out` is empty here: `sink.write` empties it.
        format_batch(&mut out, &batch, |chunk| sink.write(chunk));
        batch.clear();
        sink.write(&mut out);
        // Dropped while these records waited: reported after them.
        let dropped = queue.take_dropped();
        if dropped > 0 {
            crate::log_limited!(warn, dropped, path = %path.display(), "audit queue full: records dropped");
            sink.dropped += dropped;
        }
        sink.report();
        // A burst of huge records must not pin its formatted size forever.
        if out.capacity() > 2 * CHUNK_BYTES {
            out.shrink_to(CHUNK_BYTES);
        }
        if stopping {
            if sink.dropped + sink.lost > 0 {
                tracing::error!(
                    dropped = sink.dropped,
                    lost = sink.lost,
                    path = %path.display(),
                    "audit records missing from the file, and the count of them could not be written"
                );
            }
            if let Err(e) = sink.sync() {
                tracing::error!(path = %path.display(), error = %e, "audit fsync failed");
            }
            return;
        }
    }
}
