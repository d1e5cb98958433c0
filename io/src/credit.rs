//! Credit (cumulative byte limits) and endings.

use std::fmt;

/// A cumulative byte limit granted by a consumer to its producer, or no limit.
///
/// Positions count the bytes delivered over one link since it was attached. A credit of
/// `upto(n)` lets the producer deliver until it has delivered `n` bytes in all. Credit only
/// ever grows: [`raise`](Self::raise) keeps the larger of two credits, and unlimited is larger
/// than any limit (Versile's "a smaller limit never withdraws credit").
///
/// # Examples
///
/// ```
/// use weir_io::Credit;
///
/// let credit = Credit::upto(150);
/// assert_eq!(credit.remaining(100), 50);
/// assert_eq!(credit.raise(Credit::upto(120)), credit, "a smaller limit changes nothing");
/// assert!(credit.raise(Credit::UNLIMITED).is_unlimited());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Credit(
    /// The limit; `u64::MAX` stands for unlimited.
    u64,
);

impl Credit {
    /// No credit at all: the state right after attach.
    pub const ZERO: Credit = Credit(0);
    /// No limit.
    pub const UNLIMITED: Credit = Credit(u64::MAX);

    /// Credit up to stream position `limit` (`u64::MAX` is unlimited).
    pub const fn upto(limit: u64) -> Credit {
        Credit(limit)
    }

    /// The limit, or `None` when unlimited.
    pub fn limit(self) -> Option<u64> {
        (!self.is_unlimited()).then_some(self.0)
    }

    /// Whether there is no limit.
    pub fn is_unlimited(self) -> bool {
        self.0 == u64::MAX
    }

    /// How many more bytes may be delivered once `position` bytes have been; `u64::MAX` when
    /// unlimited.
    pub fn remaining(self, position: u64) -> u64 {
        if self.is_unlimited() {
            u64::MAX
        } else {
            self.0.saturating_sub(position)
        }
    }

    /// The larger of two credits: credit is never withdrawn.
    #[must_use]
    pub fn raise(self, other: Credit) -> Credit {
        self.max(other)
    }
}

impl fmt::Debug for Credit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.limit() {
            Some(limit) => write!(f, "Credit({limit})"),
            None => f.write_str("Credit(unlimited)"),
        }
    }
}

/// How a stream of bytes ended: the reason for an end of data, not an error.
///
/// Versile's clean flag of `end_consume(clean)`, and its `VIOCompleted` / `VIOLost`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ending {
    /// The stream ended cleanly: every byte was produced and the producer said so.
    #[doc(alias = "VIOCompleted")]
    #[doc(alias = "VFIOCompleted")]
    Completed,
    /// The stream broke off: an error, a reset, an abort.
    #[doc(alias = "VIOLost")]
    #[doc(alias = "VFIOLost")]
    Lost,
}

impl Ending {
    /// Whether the stream ended cleanly.
    pub fn is_completed(self) -> bool {
        self == Ending::Completed
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ending::Completed => "completed",
            Ending::Lost => "lost",
        })
    }
}
