//! The VUT/1 wire format: parsing and encoding of HELLO, SEGMENT and RESET packets.
//!
//! Parsing never allocates and never checks the tag; the connection does that on the
//! byte range [`Parsed::authenticated`] names. See `PROTOCOL.md` section 3 for the layout.

use std::fmt;

/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the truncated HMAC-SHA256 tag that ends every packet.
pub const TAG_LEN: usize = 16;
/// Length of a nonce.
pub const NONCE_LEN: usize = 16;
/// Length of a HELLO packet.
pub const HELLO_LEN: usize = 40 + TAG_LEN;
/// Length of a RESET packet.
pub const RESET_LEN: usize = 12 + TAG_LEN;
/// Length of a SEGMENT header before its SACK blocks.
pub const SEGMENT_HEADER_LEN: usize = 34;
/// Maximum number of SACK blocks in one SEGMENT.
pub const MAX_SACK_BLOCKS: usize = 4;
/// Size of one SACK block on the wire.
pub const SACK_BLOCK_LEN: usize = 8;
/// Bytes of a SEGMENT that are not data when all SACK blocks are present.
pub const SEGMENT_OVERHEAD: usize = SEGMENT_HEADER_LEN + MAX_SACK_BLOCKS * SACK_BLOCK_LEN + TAG_LEN;
/// Smallest `max_datagram` a peer may announce.
pub const MIN_DATAGRAM: usize = 128;

const KIND_HELLO: u8 = 1;
const KIND_SEGMENT: u8 = 2;
const KIND_RESET: u8 = 3;

/// SEGMENT flag: the stream ends right after this segment's data.
pub const FLAG_FIN: u8 = 0x01;
/// SEGMENT flag: the receiver must acknowledge this packet promptly.
pub const FLAG_PING: u8 = 0x02;
const KNOWN_FLAGS: u8 = FLAG_FIN | FLAG_PING;

/// Why a datagram could not be parsed. Small and `Copy`; parsing never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// The datagram's length does not match what its header describes.
    InvalidLength {
        /// The packet kind byte.
        kind: u8,
    },
    /// A SEGMENT had flag bits this version does not define.
    UnknownFlags {
        /// The flags byte.
        flags: u8,
    },
    /// The kind byte names no packet kind.
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// A SEGMENT announced more SACK blocks than allowed.
    TooManySackBlocks {
        /// The announced count.
        count: u8,
    },
    /// The datagram is shorter than the common header.
    UnexpectedEnd,
    /// The version byte is not [`VERSION`].
    UnsupportedVersion {
        /// The version byte.
        version: u8,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidLength { kind } => write!(f, "invalid length for packet kind {kind}"),
            Self::UnknownFlags { flags } => write!(f, "unknown segment flags {flags:#04x}"),
            Self::UnknownKind { kind } => write!(f, "unknown packet kind {kind}"),
            Self::TooManySackBlocks { count } => write!(f, "too many sack blocks ({count})"),
            Self::UnexpectedEnd => f.write_str("datagram too short"),
            Self::UnsupportedVersion { version } => write!(f, "unsupported version {version}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// A received SACK block: stream offsets `ack + start .. ack + start + len` arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SackBlock {
    /// Offset of the first byte, relative to the packet's cumulative ack.
    pub start: u32,
    /// Number of bytes.
    pub len: u32,
}

/// A parsed packet, borrowing from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Handshake packet.
    Hello(Hello),
    /// Reset (fail) packet.
    Reset(Reset),
    /// Data / ack / FIN / PING packet.
    Segment(Segment<'a>),
}

/// Fields of a HELLO packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Largest datagram the sender accepts.
    pub max_datagram: u16,
    /// The sender's initial receive window.
    pub window: u32,
    /// The sender's nonce.
    pub nonce: [u8; NONCE_LEN],
    /// The nonce the sender last received from its peer, or zeros.
    pub echo: [u8; NONCE_LEN],
}

/// Fields of a RESET packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    /// Why the sender tears the connection down.
    pub code: u16,
    /// Packet number.
    pub packet_number: u64,
}

/// Fields of a SEGMENT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// [`FLAG_FIN`] and [`FLAG_PING`] bits.
    pub flags: u8,
    /// Packet number.
    pub packet_number: u64,
    /// Stream offset of the first data byte.
    pub seq: u64,
    /// Cumulative acknowledgement.
    pub ack: u64,
    /// Window beyond `ack`.
    pub window: u32,
    /// Raw SACK block bytes (a multiple of [`SACK_BLOCK_LEN`]); see [`Segment::sack_blocks`].
    sack: &'a [u8],
    /// Data bytes.
    pub data: &'a [u8],
}

impl<'a> Segment<'a> {
    /// Whether the FIN flag is set.
    pub fn is_fin(&self) -> bool {
        self.flags & FLAG_FIN != 0
    }

    /// Whether the packet asks to be acknowledged (data, FIN or PING).
    pub fn is_ack_eliciting(&self) -> bool {
        !self.data.is_empty() || self.flags != 0
    }

    /// The SACK blocks, in wire order.
    pub fn sack_blocks(&self) -> impl Iterator<Item = SackBlock> + 'a {
        self.sack.chunks_exact(SACK_BLOCK_LEN).map(|b| SackBlock {
            start: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            len: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
}

/// A parsed datagram: the packet plus the ranges the MAC covers and the tag.
#[derive(Debug, Clone, Copy)]
pub struct Parsed<'a> {
    /// The packet fields.
    pub packet: Packet<'a>,
    /// Every byte before the tag.
    pub authenticated: &'a [u8],
    /// The received tag.
    pub tag: &'a [u8],
}

/// Parses one datagram. Checks lengths, version, kind and flags; does not check the tag.
///
/// # Errors
///
/// A [`ParseError`] describing the first problem found.
pub fn parse(datagram: &[u8]) -> Result<Parsed<'_>, ParseError> {
    let (&version, rest) = datagram.split_first().ok_or(ParseError::UnexpectedEnd)?;
    let &kind = rest.first().ok_or(ParseError::UnexpectedEnd)?;
    if version != VERSION {
        return Err(ParseError::UnsupportedVersion { version });
    }
    let invalid = ParseError::InvalidLength { kind };
    let packet = match kind {
        KIND_HELLO => {
            if datagram.len() != HELLO_LEN {
                return Err(invalid);
            }
            Packet::Hello(Hello {
                max_datagram: be_u16(datagram, 2),
                window: be_u32(datagram, 4),
                nonce: array16(datagram, 8),
                echo: array16(datagram, 24),
            })
        }
        KIND_RESET => {
            if datagram.len() != RESET_LEN {
                return Err(invalid);
            }
            Packet::Reset(Reset {
                code: be_u16(datagram, 2),
                packet_number: be_u64(datagram, 4),
            })
        }
        KIND_SEGMENT => {
            if datagram.len() < SEGMENT_HEADER_LEN + TAG_LEN {
                return Err(invalid);
            }
            let flags = datagram[2];
            if flags & !KNOWN_FLAGS != 0 {
                return Err(ParseError::UnknownFlags { flags });
            }
            let count = datagram[3];
            if usize::from(count) > MAX_SACK_BLOCKS {
                return Err(ParseError::TooManySackBlocks { count });
            }
            let data_len = usize::from(be_u16(datagram, 32));
            let sack_end = SEGMENT_HEADER_LEN + usize::from(count) * SACK_BLOCK_LEN;
            let data_end = sack_end + data_len;
            if datagram.len() != data_end + TAG_LEN {
                return Err(invalid);
            }
            Packet::Segment(Segment {
                flags,
                packet_number: be_u64(datagram, 4),
                seq: be_u64(datagram, 12),
                ack: be_u64(datagram, 20),
                window: be_u32(datagram, 28),
                sack: &datagram[SEGMENT_HEADER_LEN..sack_end],
                data: &datagram[sack_end..data_end],
            })
        }
        kind => return Err(ParseError::UnknownKind { kind }),
    };
    let (authenticated, tag) = datagram.split_at(datagram.len() - TAG_LEN);
    Ok(Parsed {
        packet,
        authenticated,
        tag,
    })
}

/// Appends a HELLO without its tag to `buf` (which is cleared first).
pub fn encode_hello(buf: &mut Vec<u8>, hello: &Hello) {
    buf.clear();
    buf.extend_from_slice(&[VERSION, KIND_HELLO]);
    buf.extend_from_slice(&hello.max_datagram.to_be_bytes());
    buf.extend_from_slice(&hello.window.to_be_bytes());
    buf.extend_from_slice(&hello.nonce);
    buf.extend_from_slice(&hello.echo);
}

/// Appends a RESET without its tag to `buf` (which is cleared first).
pub fn encode_reset(buf: &mut Vec<u8>, reset: &Reset) {
    buf.clear();
    buf.extend_from_slice(&[VERSION, KIND_RESET]);
    buf.extend_from_slice(&reset.code.to_be_bytes());
    buf.extend_from_slice(&reset.packet_number.to_be_bytes());
}

/// The header fields of a SEGMENT to encode.
#[derive(Debug, Clone, Copy)]
pub struct SegmentHeader {
    /// Flags.
    pub flags: u8,
    /// Packet number.
    pub packet_number: u64,
    /// Stream offset of the first data byte.
    pub seq: u64,
    /// Cumulative ack.
    pub ack: u64,
    /// Window beyond `ack`.
    pub window: u32,
}

/// Appends a SEGMENT without its tag to `buf` (which is cleared first).
///
/// At most [`MAX_SACK_BLOCKS`] blocks are written; `data` must be at most `u16::MAX` bytes
/// (callers cut segments to the MSS, which is smaller).
pub fn encode_segment(buf: &mut Vec<u8>, header: &SegmentHeader, sack: &[SackBlock], data: &[u8]) {
    let sack = &sack[..sack.len().min(MAX_SACK_BLOCKS)];
    let data_len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    let data = &data[..usize::from(data_len)];
    buf.clear();
    buf.extend_from_slice(&[VERSION, KIND_SEGMENT, header.flags]);
    // `sack.len() <= MAX_SACK_BLOCKS` (4), so the cast cannot truncate.
    buf.push(sack.len() as u8);
    buf.extend_from_slice(&header.packet_number.to_be_bytes());
    buf.extend_from_slice(&header.seq.to_be_bytes());
    buf.extend_from_slice(&header.ack.to_be_bytes());
    buf.extend_from_slice(&header.window.to_be_bytes());
    buf.extend_from_slice(&data_len.to_be_bytes());
    for block in sack {
        buf.extend_from_slice(&block.start.to_be_bytes());
        buf.extend_from_slice(&block.len.to_be_bytes());
    }
    buf.extend_from_slice(data);
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn array16(b: &[u8], at: usize) -> [u8; 16] {
    let mut a = [0; 16];
    a.copy_from_slice(&b[at..at + 16]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_tag(mut buf: Vec<u8>) -> Vec<u8> {
        buf.extend_from_slice(&[0xAA; TAG_LEN]);
        buf
    }

    #[test]
    fn hello_round_trip() {
        let hello = Hello {
            max_datagram: 1200,
            window: 65536,
            nonce: [1; 16],
            echo: [2; 16],
        };
        let mut buf = Vec::new();
        encode_hello(&mut buf, &hello);
        let buf = with_tag(buf);
        assert_eq!(buf.len(), HELLO_LEN);
        let parsed = parse(&buf).unwrap();
        assert_eq!(parsed.packet, Packet::Hello(hello));
        assert_eq!(parsed.authenticated.len(), HELLO_LEN - TAG_LEN);
    }

    #[test]
    fn reset_round_trip() {
        let reset = Reset {
            code: 7,
            packet_number: 99,
        };
        let mut buf = Vec::new();
        encode_reset(&mut buf, &reset);
        let buf = with_tag(buf);
        assert_eq!(buf.len(), RESET_LEN);
        assert_eq!(parse(&buf).unwrap().packet, Packet::Reset(reset));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse(&[]).unwrap_err(), ParseError::UnexpectedEnd);
        assert_eq!(parse(&[1]).unwrap_err(), ParseError::UnexpectedEnd);
        assert_eq!(
            parse(&[2, 1]).unwrap_err(),
            ParseError::UnsupportedVersion { version: 2 }
        );
        assert_eq!(
            parse(&[1, 9]).unwrap_err(),
            ParseError::UnknownKind { kind: 9 }
        );
        assert_eq!(
            parse(&[1, 1, 0]).unwrap_err(),
            ParseError::InvalidLength { kind: 1 }
        );
        let mut seg = vec![0u8; SEGMENT_HEADER_LEN + TAG_LEN];
        seg[0] = 1;
        seg[1] = 2;
        seg[2] = 0x80;
        assert_eq!(
            parse(&seg).unwrap_err(),
            ParseError::UnknownFlags { flags: 0x80 }
        );
        seg[2] = 0;
        seg[3] = 5;
        assert_eq!(
            parse(&seg).unwrap_err(),
            ParseError::TooManySackBlocks { count: 5 }
        );
        seg[3] = 1;
        assert_eq!(
            parse(&seg).unwrap_err(),
            ParseError::InvalidLength { kind: 2 }
        );
    }

    proptest! {
        #[test]
        fn segment_round_trip(
            flags in 0u8..4, pn: u64, seq: u64, ack: u64, window: u32,
            sack in proptest::collection::vec((any::<u32>(), any::<u32>()), 0..=4),
            data in proptest::collection::vec(any::<u8>(), 0..1200),
        ) {
            let sack: Vec<SackBlock> =
                sack.into_iter().map(|(start, len)| SackBlock { start, len }).collect();
            let header = SegmentHeader { flags, packet_number: pn, seq, ack, window };
            let mut buf = Vec::new();
            encode_segment(&mut buf, &header, &sack, &data);
            let buf = with_tag(buf);
            let parsed = parse(&buf).unwrap();
            let Packet::Segment(s) = parsed.packet else { panic!("not a segment") };
            prop_assert_eq!(s.flags, flags);
            prop_assert_eq!(s.packet_number, pn);
            prop_assert_eq!(s.seq, seq);
            prop_assert_eq!(s.ack, ack);
            prop_assert_eq!(s.window, window);
            prop_assert_eq!(s.data, &data[..]);
            prop_assert_eq!(s.sack_blocks().collect::<Vec<_>>(), sack);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
        }
    }
}
