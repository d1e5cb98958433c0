//! Connection settings with safe defaults.

use std::fmt;
use std::time::Duration;

use crate::packet::{MIN_DATAGRAM, SEGMENT_OVERHEAD};

/// Settings of one [`Connection`](crate::Connection).
///
/// Start from [`Config::default`] and change fields; [`Connection::new`](crate::Connection::new)
/// checks them with [`Config::validate`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let mut config = weir_vudp::Config::default();
/// config.max_datagram = 1400;
/// config.idle_timeout = Duration::from_secs(30);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest UDP payload this side sends and accepts. Default 1200, range 128..=65507.
    pub max_datagram: u16,
    /// Bytes the application may have written but the peer not yet acknowledged.
    /// Default 256 KiB.
    pub send_buffer: u32,
    /// Bytes received but not yet read by the application (in order or not): the largest
    /// receive window. Default 256 KiB, range 1..=1 GiB.
    pub recv_buffer: u32,
    /// Probe timeout (PTO) before the first RTT sample, also the first HELLO retransmission
    /// interval. Default 1 s (RFC 9002's initial RTT of 333 ms gives about the same).
    pub initial_rto: Duration,
    /// Lower bound of the probe timeout `SRTT + max(4·RTTVAR, 1 ms)`. Default 1 ms (no
    /// floor beyond the timer granularity), at least 1 ms.
    pub min_rto: Duration,
    /// Upper bound of the probe timeout (and of its backoff). Default 60 s.
    pub max_rto: Duration,
    /// Time allowed for the handshake before the connection fails. Default 10 s.
    pub handshake_timeout: Duration,
    /// Send a PING after this long without sending anything. Default 15 s.
    pub keepalive_interval: Duration,
    /// Fail when nothing authentic arrived for this long. Default 60 s; must exceed
    /// `keepalive_interval`.
    pub idle_timeout: Duration,
    /// After a clean close, keep answering retransmitted FINs until nothing has arrived for
    /// this long (like TCP's TIME_WAIT), so that the peer's close completes even when our
    /// last acks are lost. [`Event::Closed`](crate::Event::Closed) is reported at the start
    /// of it; only [`is_drained`](crate::Connection::is_drained) waits. Default 30 s.
    pub close_linger: Duration,
    /// The congestion controller. Default [`CongestionControl::Cubic`].
    pub congestion_control: CongestionControl,
}

/// Which congestion controller a connection runs (`PROTOCOL.md` section 8). Both react to
/// the same loss detection and recovery periods; they differ in how far a congestion event
/// cuts the window and how it grows back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CongestionControl {
    /// CUBIC (RFC 9438): a congestion event keeps 70% of the window; it then grows back
    /// along a cubic function of the time since, never slower than Reno would.
    #[default]
    Cubic,
    /// NewReno (RFC 5681 / RFC 6582): a congestion event halves the window; it grows by one
    /// segment per round trip.
    NewReno,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_datagram: 1200,
            send_buffer: 256 * 1024,
            recv_buffer: 256 * 1024,
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(1),
            max_rto: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            close_linger: Duration::from_secs(30),
            congestion_control: CongestionControl::Cubic,
        }
    }
}

impl Config {
    /// Checks that the settings are consistent.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the first offending setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let datagram = usize::from(self.max_datagram);
        if !(MIN_DATAGRAM..=65507).contains(&datagram) || datagram <= SEGMENT_OVERHEAD {
            return Err(ConfigError {
                setting: "max_datagram",
            });
        }
        if self.send_buffer == 0 {
            return Err(ConfigError {
                setting: "send_buffer",
            });
        }
        if self.recv_buffer == 0 || self.recv_buffer > 1 << 30 {
            return Err(ConfigError {
                setting: "recv_buffer",
            });
        }
        if self.min_rto < Duration::from_millis(1) || self.min_rto > self.max_rto {
            return Err(ConfigError { setting: "min_rto" });
        }
        if self.initial_rto < self.min_rto || self.initial_rto > self.max_rto {
            return Err(ConfigError {
                setting: "initial_rto",
            });
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError {
                setting: "handshake_timeout",
            });
        }
        if self.keepalive_interval.is_zero() {
            return Err(ConfigError {
                setting: "keepalive_interval",
            });
        }
        if self.idle_timeout <= self.keepalive_interval {
            return Err(ConfigError {
                setting: "idle_timeout",
            });
        }
        if self.close_linger.is_zero() {
            return Err(ConfigError {
                setting: "close_linger",
            });
        }
        Ok(())
    }

    /// Stream bytes per segment for a datagram limit.
    pub(crate) fn mss_for(max_datagram: u16) -> usize {
        usize::from(max_datagram)
            .saturating_sub(SEGMENT_OVERHEAD)
            .max(1)
    }
}

/// A [`Config`] setting is out of range or inconsistent with another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError {
    /// Name of the offending field.
    pub setting: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid setting `{}`", self.setting)
    }
}

impl std::error::Error for ConfigError {}
