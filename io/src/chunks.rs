//! [`Chunks`]: a run of byte chunks handed along a chain in one call.

use std::collections::VecDeque;

use bytes::Bytes;

/// A run of byte chunks, in order, with their total length.
///
/// [`Link::deliver_chunks`](crate::Link::deliver_chunks) hands a whole run to
/// [`ByteConsumer::consume_chunks`](crate::ByteConsumer::consume_chunks) in one call, so the
/// per-call costs of a chain (locks, credit updates) are paid once per run instead of once per
/// chunk, while every chunk keeps its own boundaries. A run is also a plain FIFO queue of
/// chunks, which is what elements need for the output they hold back for lack of credit.
///
/// Empty chunks are never stored. The queue keeps its allocation when drained, so an element
/// that reuses one `Chunks` allocates nothing in the steady state.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use weir_io::Chunks;
///
/// let mut run = Chunks::new();
/// run.push(Bytes::from_static(b"Knights "));
/// run.push(Bytes::from_static(b"who say Ni!"));
/// assert_eq!((run.len(), run.byte_len()), (2, 19));
/// let head = run.split_to(10);
/// assert_eq!(head.byte_len(), 10);
/// assert_eq!(run.pop().as_deref(), Some(&b"o say Ni!"[..]));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chunks {
    /// The chunks, none of them empty.
    queue: VecDeque<Bytes>,
    /// Bytes in `queue`.
    bytes: u64,
}

impl Chunks {
    /// An empty run.
    pub fn new() -> Chunks {
        Chunks::default()
    }

    /// Chunks in the run.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether the run holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes in the run.
    pub fn byte_len(&self) -> u64 {
        self.bytes
    }

    /// Adds `chunk` at the back (an empty chunk is dropped).
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.bytes += chunk.len() as u64;
            self.queue.push_back(chunk);
        }
    }

    /// Takes the chunk at the front.
    pub fn pop(&mut self) -> Option<Bytes> {
        let chunk = self.queue.pop_front()?;
        self.bytes -= chunk.len() as u64;
        Some(chunk)
    }

    /// The chunk at the front.
    pub fn front(&self) -> Option<&Bytes> {
        self.queue.front()
    }

    /// Drops the first `count` bytes (all of them if the run is shorter), splitting a chunk if
    /// `count` falls inside it.
    pub fn advance(&mut self, count: u64) {
        let mut left = count.min(self.bytes);
        self.bytes -= left;
        while left > 0 {
            let front = self.queue.front_mut().expect("counted in `bytes`");
            if front.len() as u64 <= left {
                left -= front.len() as u64;
                self.queue.pop_front();
            } else {
                // `left` is below `front.len()`, a usize.
                bytes::Buf::advance(front, left as usize);
                left = 0;
            }
        }
    }

    /// Moves every chunk of `other` to the back of this run, leaving `other` empty. Both queues keep their allocations.
    pub fn append(&mut self, other: &mut Chunks) {
        match other.queue.len() {
            0 => {}
            // The common case on a chain's data path, cheaper than the general move.
            1 => self.push(other.pop().expect("one chunk")),
            _ => {
                self.bytes += std::mem::take(&mut other.bytes);
                self.queue.append(&mut other.queue);
            }
        }
    }

    /// Takes the first `max` bytes (all of them if the run is shorter), splitting a chunk if
    /// `max` falls inside it; splitting shares the chunk's buffer, it copies nothing.
    pub fn split_to(&mut self, max: u64) -> Chunks {
        if max >= self.bytes {
            return std::mem::take(self);
        }
        let mut head = Chunks::new();
        while head.bytes < max {
            let want = max - head.bytes;
            let front = self
                .queue
                .front_mut()
                .expect("the run holds more than `max` bytes");
            let chunk = if front.len() as u64 <= want {
                self.queue.pop_front().expect("the front exists")
            } else {
                // `want` is below `front.len()`, a usize.
                front.split_to(want as usize)
            };
            self.bytes -= chunk.len() as u64;
            head.push(chunk);
        }
        head
    }

    /// [`split_to`](Self::split_to) that keeps queues' allocations: when the whole run goes,
    /// it leaves in this queue's allocation, and this one takes over `spare`'s (an emptied
    /// run handed back after an earlier delivery), so a queue drained again and again does
    /// not allocate.
    pub fn split_to_reusing(&mut self, max: u64, spare: &mut Chunks) -> Chunks {
        if max < self.bytes {
            return self.split_to(max);
        }
        spare.clear();
        std::mem::swap(self, spare);
        std::mem::take(spare)
    }

    /// Replaces every chunk with `f(chunk)`, in order (chunks that become empty are dropped).
    pub fn map_in_place(&mut self, mut f: impl FnMut(Bytes) -> Bytes) {
        let (mut bytes, mut emptied) = (0, false);
        for chunk in self.queue.iter_mut() {
            *chunk = f(std::mem::take(chunk));
            bytes += chunk.len() as u64;
            emptied |= chunk.is_empty();
        }
        if emptied {
            self.queue.retain(|chunk| !chunk.is_empty());
        }
        self.bytes = bytes;
    }

    /// The chunks, front first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Bytes> + '_ {
        self.queue.iter()
    }

    /// Drops every chunk (the allocation is kept).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
}

impl From<Bytes> for Chunks {
    fn from(chunk: Bytes) -> Chunks {
        let mut run = Chunks::new();
        run.push(chunk);
        run
    }
}

impl Extend<Bytes> for Chunks {
    fn extend<I: IntoIterator<Item = Bytes>>(&mut self, chunks: I) {
        for chunk in chunks {
            self.push(chunk);
        }
    }
}

impl FromIterator<Bytes> for Chunks {
    fn from_iter<I: IntoIterator<Item = Bytes>>(chunks: I) -> Chunks {
        let mut run = Chunks::new();
        run.extend(chunks);
        run
    }
}

impl Iterator for Chunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        self.pop()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len(), Some(self.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(parts: &[&'static [u8]]) -> Chunks {
        parts.iter().map(|p| Bytes::from_static(p)).collect()
    }

    fn flat(chunks: &Chunks) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    #[test]
    fn split_to_reusing_moves_everything_or_splits_like_split_to() {
        let mut spare = run(&[b"stale"]);
        let mut queue = run(&[b"ab", b"cd"]);
        let all = queue.split_to_reusing(4, &mut spare);
        assert_eq!((flat(&all), all.len()), (b"abcd".to_vec(), 2));
        assert!(queue.is_empty() && queue.byte_len() == 0 && spare.is_empty());
        queue.push(Bytes::from_static(b"efgh"));
        let head = queue.split_to_reusing(3, &mut spare);
        assert_eq!(
            (flat(&head), flat(&queue)),
            (b"efg".to_vec(), b"h".to_vec())
        );
        assert_eq!(queue.byte_len(), 1);
    }

    #[test]
    fn empty_chunks_are_not_stored() {
        let chunks = run(&[b"", b"ab", b""]);
        assert_eq!((chunks.len(), chunks.byte_len()), (1, 2));
    }

    #[test]
    fn split_to_takes_exactly_max_bytes_and_keeps_the_rest_in_order() {
        for max in 0..=10 {
            let mut chunks = run(&[b"abc", b"defg", b"hij"]);
            let head = chunks.split_to(max);
            assert_eq!(head.byte_len(), max.min(10));
            assert_eq!(head.byte_len() + chunks.byte_len(), 10);
            let mut all = flat(&head);
            all.extend(flat(&chunks));
            assert_eq!(all, b"abcdefghij");
        }
    }

    #[test]
    fn advance_drops_exactly_count_bytes() {
        for count in 0..=12 {
            let mut chunks = run(&[b"abc", b"defg", b"hij"]);
            chunks.advance(count);
            let expected = &b"abcdefghij"[(count as usize).min(10)..];
            assert_eq!(
                (flat(&chunks), chunks.byte_len()),
                (expected.to_vec(), expected.len() as u64)
            );
            assert!(chunks.iter().all(|c| !c.is_empty()));
        }
    }

    #[test]
    fn append_keeps_order_and_counts() {
        let mut a = run(&[b"ab"]);
        let mut b = run(&[b"cd", b"e"]);
        a.append(&mut b);
        assert!(b.is_empty() && b.byte_len() == 0);
        assert_eq!((flat(&a), a.byte_len()), (b"abcde".to_vec(), 5));
        let mut empty = Chunks::new();
        empty.append(&mut a);
        assert_eq!((flat(&empty), empty.byte_len()), (b"abcde".to_vec(), 5));
    }

    #[test]
    fn map_in_place_recounts() {
        let mut chunks = run(&[b"ab", b"cde"]);
        chunks.map_in_place(|c| {
            if c.len() == 2 {
                Bytes::new()
            } else {
                c.slice(1..)
            }
        });
        assert_eq!(
            (flat(&chunks), chunks.byte_len(), chunks.len()),
            (b"de".to_vec(), 2, 1)
        );
    }
}
