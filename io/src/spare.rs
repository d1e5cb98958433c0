//! Spare read buffers, a few per thread: empty allocations that byte sources read into before
//! they allocate, and that consumers done with a chunk can give back.
//!
//! A stream agent reads into a buffer that travels downstream as the chunk itself. A consumer
//! that copies what it receives (the TLS element hands ciphertext to OpenSSL) is done with that
//! allocation soon after; given back with [`recycle`], it becomes a later read's buffer, and
//! the allocator is spared a free and an allocation of the same size on every read (which
//! glibc answers, on a thread's own arena, by handing the memory back to the kernel and
//! faulting it in again).
//!
//! Give back only what the allocator handles badly: a chunk whose buffer the allocator would
//! hand out again at once anyway gains nothing. (Recycling a stream agent's own written
//! chunks was tried: the plain TCP echo then spent more CPU per byte.)

use std::cell::RefCell;

use bytes::Bytes;

/// Most spare buffers a thread keeps: as many chunks as a few connections on one reactor
/// thread hold at once in a busy turn. With [`LARGEST`], a thread holds 1 MiB of spare
/// buffers at most.
const KEPT: usize = 4;
/// Buffers smaller than this are not kept: the allocator serves them from its per-thread
/// caches, and a few of them would crowd out the large ones worth keeping.
const SMALLEST: usize = 2 * 1024;
/// Buffers larger than this are not kept: a stream agent's reads are at most this long
/// unless configured otherwise, and a chunk some producer made huge must not stay.
const LARGEST: usize = 256 * 1024;

thread_local! {
    /// Empty buffers, with the capacities they were allocated with.
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with a capacity of exactly `capacity` bytes: a spare one if one fits (the
/// smallest that is large enough, shrunk in place; of equals, the one kept last, whose
/// memory is likeliest still in the cache), else a new one.
pub fn take(capacity: usize) -> Vec<u8> {
    let found = SPARE.with_borrow_mut(|spare| {
        let best = spare
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, buf)| buf.capacity() >= capacity)
            .min_by_key(|(_, buf)| buf.capacity())
            .map(|(i, _)| i);
        best.map(|i| spare.remove(i))
    });
    let mut buf = found.unwrap_or_default();
    if buf.capacity() > capacity {
        buf.shrink_to(capacity);
    }
    if buf.capacity() != capacity {
        // `with_capacity` is documented to give exactly the capacity asked for.
        buf = Vec::with_capacity(capacity);
    }
    buf
}

/// Keeps `buf`, emptied, as a spare buffer, unless it is small or huge; with as many kept
/// already, the smallest goes (unless it is `buf`).
pub fn keep(mut buf: Vec<u8>) {
    if !(SMALLEST..=LARGEST).contains(&buf.capacity()) {
        return;
    }
    buf.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() == KEPT {
            let smallest = (0..KEPT).min_by_key(|&i| spare[i].capacity());
            match smallest {
                Some(i) if spare[i].capacity() < buf.capacity() => drop(spare.remove(i)),
                _ => return,
            }
        }
        // Last is most recent: `take` prefers it.
        spare.push(buf);
    });
}

/// Gives back a chunk its holder is done with: when nothing else shares its allocation, that
/// becomes a spare buffer (see [`keep`]); otherwise the chunk is simply dropped.
pub fn recycle(chunk: Bytes) {
    if let Ok(buf) = chunk.try_into_mut() {
        keep(Vec::from(buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    /// Drops this thread's spare buffers.
    fn clear() {
        SPARE.with_borrow_mut(Vec::clear);
    }

    #[test]
    fn take_gives_exactly_the_capacity_asked_for() {
        clear();
        for capacity in [100, 65_536, 10, 65_536, 1, 4096, 70_000, 0] {
            let buf = take(capacity);
            assert!(buf.is_empty());
            assert_eq!(buf.capacity(), capacity);
            keep(buf);
        }
    }

    #[test]
    fn a_recycled_chunk_is_the_next_buffer_of_its_size() {
        clear();
        let mut buf = take(65_536);
        buf.extend_from_slice(&[7; 65_536]);
        let address = buf.as_ptr();
        let mut chunk = Bytes::from(buf);
        // Consumed piece by piece, as a transport reads it.
        let _ = chunk.split_to(1000);
        let rest = chunk.len();
        chunk.advance(rest);
        recycle(chunk);
        let again = take(65_536);
        assert_eq!(again.as_ptr(), address, "the allocation came back");
        assert!(again.is_empty());
    }

    #[test]
    fn a_chunk_still_shared_is_not_recycled() {
        clear();
        let chunk = Bytes::from(vec![1; 50_000]);
        let held = chunk.slice(10..20);
        let address = chunk.as_ptr();
        recycle(chunk);
        let buf = take(50_000);
        assert_ne!(
            buf.as_ptr(),
            address,
            "a buffer still in use was handed out"
        );
        assert_eq!(&held[..], &[1; 10]);
    }

    #[test]
    fn of_equal_buffers_the_one_kept_last_is_taken_first() {
        clear();
        let buffers: Vec<Vec<u8>> = (0..3).map(|_| Vec::with_capacity(8192)).collect();
        let last = buffers[2].as_ptr();
        buffers.into_iter().for_each(keep);
        let taken = take(8192);
        assert_eq!(taken.as_ptr(), last);
    }

    #[test]
    fn a_thread_keeps_a_few_buffers_the_largest_ones() {
        clear();
        for capacity in [10_000, 20_000, 30_000, 40_000, 50_000, 5000, 100, 1 << 20] {
            keep(Vec::with_capacity(capacity));
        }
        let mut kept: Vec<usize> =
            SPARE.with_borrow(|spare| spare.iter().map(Vec::capacity).collect());
        kept.sort_unstable();
        assert_eq!(kept, [20_000, 30_000, 40_000, 50_000]);
    }
}
