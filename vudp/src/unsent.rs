//! The bytes written and not yet put into segments: a queue of the written buffers, so that
//! writing never moves what waits and a segment is a slice of one buffer when it can be.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Written bytes waiting to be segmented, as the buffers they were written in.
#[derive(Debug, Default)]
pub(crate) struct Unsent {
    /// The buffers, oldest first; none is empty.
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`.
    len: usize,
}

impl Unsent {
    /// Appends `data`.
    pub(crate) fn push(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        self.chunks.push_back(data);
    }

    /// Bytes waiting.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Takes the first `n` bytes (at most [`len`](Self::len)): a slice of the first buffer
    /// when it holds them all, else a copy of the pieces.
    pub(crate) fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.len);
        self.len -= n;
        match self.chunks.front_mut() {
            None => return Bytes::new(),
            Some(front) if front.len() > n => return front.split_to(n),
            Some(front) if front.len() == n => return self.chunks.pop_front().unwrap_or_default(),
            Some(_) => {}
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let want = n - out.len();
            if front.len() > want {
                out.extend_from_slice(&front.split_to(want));
            } else {
                out.extend_from_slice(front);
                self.chunks.pop_front();
            }
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_across_buffers_in_order() {
        let mut unsent = Unsent::default();
        unsent.push(Bytes::from_static(b"abc"));
        unsent.push(Bytes::new());
        unsent.push(Bytes::from_static(b"defgh"));
        assert_eq!(unsent.len(), 8);
        assert_eq!(&unsent.take(2)[..], b"ab");
        assert_eq!(&unsent.take(1)[..], b"c");
        assert_eq!(&unsent.take(4)[..], b"defg");
        unsent.push(Bytes::from_static(b"ij"));
        assert_eq!(&unsent.take(10)[..], b"hij");
        assert_eq!(unsent.len(), 0);
        assert!(unsent.take(5).is_empty());
    }
}
