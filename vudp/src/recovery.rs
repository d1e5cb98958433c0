//! RTT estimation and the probe timeout (RFC 6298 / RFC 9002), NewReno congestion control
//! and the replay window.

use std::time::Duration;

/// Timer granularity `G` (RFC 6298, `kGranularity` of RFC 9002).
pub(crate) const GRANULARITY: Duration = Duration::from_millis(1);

/// Probe timeouts (without backoff) that a loss period must span to count as persistent
/// congestion (`kPersistentCongestionThreshold` of RFC 9002).
const PERSISTENT_CONGESTION_THRESHOLD: u32 = 3;

/// Smoothed RTT, variation, latest sample and the probe timeout with its backoff.
#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    /// Smoothed RTT; `None` before the first sample.
    srtt: Option<Duration>,
    /// RTT variation.
    rttvar: Duration,
    /// The most recent sample.
    latest: Duration,
    /// The smallest sample; `None` before the first.
    min: Option<Duration>,
    /// Probe timeout before the first sample.
    initial: Duration,
    /// Consecutive probe timeouts (each doubles the timeout) since the last ack of new data.
    backoff: u32,
    /// Lower bound of the probe timeout.
    min_pto: Duration,
    /// Upper bound of the probe timeout, backoff included.
    max_pto: Duration,
}

impl RttEstimator {
    pub(crate) fn new(initial: Duration, min_pto: Duration, max_pto: Duration) -> Self {
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            latest: Duration::ZERO,
            min: None,
            initial,
            backoff: 0,
            min_pto,
            max_pto,
        }
    }

    /// Takes an RTT sample (never from a retransmitted segment: Karn's rule).
    pub(crate) fn on_sample(&mut self, rtt: Duration) {
        self.latest = rtt;
        self.min = Some(self.min.map_or(rtt, |m| m.min(rtt)));
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// Doubles the probe timeout once (one timer event), up to the maximum.
    pub(crate) fn on_timeout(&mut self) {
        if self.pto() < self.max_pto {
            self.backoff += 1;
        }
    }

    /// New data was acknowledged: the backoff ends.
    pub(crate) fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    /// Consecutive probe timeouts since the last ack of new data.
    #[cfg(test)]
    pub(crate) fn backoff(&self) -> u32 {
        self.backoff
    }

    /// The probe timeout without backoff: `SRTT + max(4·RTTVAR, G)`, clamped; the initial
    /// value before the first sample.
    pub(crate) fn base_pto(&self) -> Duration {
        match self.srtt {
            None => self.initial,
            Some(srtt) => {
                (srtt + (self.rttvar * 4).max(GRANULARITY)).clamp(self.min_pto, self.max_pto)
            }
        }
    }

    /// The current probe timeout, backoff included.
    pub(crate) fn pto(&self) -> Duration {
        let factor = 1u32 << self.backoff.min(20);
        self.base_pto().saturating_mul(factor).min(self.max_pto)
    }

    /// How long a loss period must last to be persistent congestion; `None` before the
    /// first sample.
    pub(crate) fn persistent_congestion_duration(&self) -> Option<Duration> {
        self.srtt
            .map(|_| self.base_pto() * PERSISTENT_CONGESTION_THRESHOLD)
    }

    /// Time threshold of loss detection: `9/8 · max(SRTT, latest RTT)`, at least `G`;
    /// `None` before the first sample.
    pub(crate) fn loss_delay(&self) -> Option<Duration> {
        self.srtt.map(|srtt| {
            let rtt = srtt.max(self.latest);
            (rtt + rtt / 8).max(GRANULARITY)
        })
    }

    /// The smallest RTT sample so far.
    pub(crate) fn min_rtt(&self) -> Option<Duration> {
        self.min
    }

    pub(crate) fn srtt(&self) -> Duration {
        self.srtt.unwrap_or(Duration::ZERO)
    }

    pub(crate) fn rttvar(&self) -> Duration {
        self.rttvar
    }
}

/// NewReno in bytes, with packet- and time-threshold loss detection feeding it
/// (`PROTOCOL.md` section 8).
#[derive(Debug, Clone)]
pub(crate) struct NewReno {
    /// Congestion window, bytes.
    pub(crate) cwnd: u64,
    /// Slow-start threshold, bytes.
    pub(crate) ssthresh: u64,
    /// Segment size, bytes.
    mss: u64,
    /// In recovery since this transmission (send order): acks of segments sent before it
    /// do not grow the window, losses of segments sent before it do not shrink it again.
    recovery_start: Option<u64>,
    /// Acked bytes not yet turned into congestion-avoidance growth.
    avoidance_credit: u64,
}

impl NewReno {
    pub(crate) fn new(mss: usize) -> Self {
        let mss = mss as u64;
        let cwnd = (10 * mss).min((2 * mss).max(14600));
        Self {
            cwnd,
            ssthresh: u64::MAX,
            mss,
            recovery_start: None,
            avoidance_credit: 0,
        }
    }

    /// The minimum window: two segments.
    pub(crate) fn minimum_window(&self) -> u64 {
        2 * self.mss
    }

    /// `acked` bytes of a segment last sent with send order `order` were newly acknowledged.
    pub(crate) fn on_ack(&mut self, acked: u64, order: u64) {
        if let Some(start) = self.recovery_start {
            if order < start {
                return;
            }
            // A segment sent during recovery arrived: the recovery period is over.
            self.recovery_start = None;
        }
        if self.cwnd < self.ssthresh {
            self.cwnd += acked;
        } else {
            self.avoidance_credit += acked;
            if self.avoidance_credit >= self.cwnd {
                self.avoidance_credit -= self.cwnd;
                self.cwnd += self.mss;
            }
        }
    }

    /// Segments were declared lost, the newest of them sent with send order `largest_lost`;
    /// `next_order` is the send order of the next transmission. Returns whether this started
    /// a new recovery period (a congestion event).
    pub(crate) fn on_loss(&mut self, largest_lost: u64, next_order: u64) -> bool {
        if self
            .recovery_start
            .is_some_and(|start| largest_lost < start)
        {
            return false;
        }
        self.ssthresh = (self.cwnd / 2).max(self.minimum_window());
        self.cwnd = self.ssthresh;
        self.avoidance_credit = 0;
        self.recovery_start = Some(next_order);
        true
    }

    /// Persistent congestion (RFC 9002 section 7.6): the window drops to the minimum.
    pub(crate) fn on_persistent_congestion(&mut self) {
        self.cwnd = self.minimum_window();
        self.avoidance_credit = 0;
        self.recovery_start = None;
    }
}

/// Why the replay window rejected a packet number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Already seen.
    Duplicate,
    /// Below the window.
    TooOld,
}

/// Sliding 64-packet window of received packet numbers (as in IPsec / DTLS).
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplayWindow {
    /// Largest packet number accepted so far.
    largest: Option<u64>,
    /// Bit `i` set: packet number `largest - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    /// Records `pn` if it is new.
    pub(crate) fn check_and_insert(&mut self, pn: u64) -> Result<(), Replay> {
        let Some(largest) = self.largest else {
            self.largest = Some(pn);
            self.seen = 1;
            return Ok(());
        };
        if pn > largest {
            let shift = pn - largest;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.largest = Some(pn);
            return Ok(());
        }
        let diff = largest - pn;
        if diff >= 64 {
            return Err(Replay::TooOld);
        }
        if self.seen & (1 << diff) != 0 {
            return Err(Replay::Duplicate);
        }
        self.seen |= 1 << diff;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_formulas_probe_timeout_and_backoff() {
        let ms = Duration::from_millis;
        let mut rtt = RttEstimator::new(ms(1000), ms(1), ms(60_000));
        assert_eq!(rtt.pto(), ms(1000), "initial value before any sample");
        assert_eq!(rtt.loss_delay(), None);
        assert_eq!(rtt.persistent_congestion_duration(), None);
        rtt.on_sample(ms(100));
        assert_eq!(rtt.srtt(), ms(100));
        assert_eq!(rtt.rttvar(), ms(50));
        assert_eq!(rtt.pto(), ms(300));
        rtt.on_sample(ms(200));
        // rttvar = 3/4*50 + 1/4*100 = 62.5; srtt = 7/8*100 + 1/8*200 = 112.5
        assert_eq!(rtt.rttvar(), Duration::from_micros(62_500));
        assert_eq!(rtt.srtt(), Duration::from_micros(112_500));
        assert_eq!(rtt.pto(), ms(362) + Duration::from_micros(500));
        // Time threshold: 9/8 of the larger of srtt and the latest sample (200 ms).
        assert_eq!(rtt.loss_delay(), Some(ms(225)));
        assert_eq!(
            rtt.persistent_congestion_duration(),
            Some((ms(362) + Duration::from_micros(500)) * 3)
        );
        // Each consecutive probe timeout doubles it, up to the cap.
        rtt.on_timeout();
        rtt.on_timeout();
        assert_eq!(rtt.backoff(), 2);
        assert_eq!(rtt.pto(), (ms(362) + Duration::from_micros(500)) * 4);
        for _ in 0..30 {
            rtt.on_timeout();
        }
        assert_eq!(rtt.pto(), ms(60_000));
        // A new sample alone does not end the backoff; an ack of new data does.
        rtt.on_sample(ms(10));
        assert_eq!(rtt.pto(), ms(60_000));
        rtt.reset_backoff();
        assert!(rtt.pto() < ms(400), "{:?}", rtt.pto());
    }

    #[test]
    fn tiny_rtts_give_a_millisecond_scale_probe_timeout() {
        let us = Duration::from_micros;
        let mut rtt =
            RttEstimator::new(Duration::from_secs(1), GRANULARITY, Duration::from_secs(60));
        for _ in 0..50 {
            rtt.on_sample(us(50));
        }
        // srtt + max(4 rttvar, 1 ms): the granularity dominates, no 200 ms floor.
        assert_eq!(rtt.pto(), us(1050));
        assert_eq!(rtt.loss_delay(), Some(GRANULARITY));
    }

    #[test]
    fn newreno_halves_once_per_recovery() {
        let mut cc = NewReno::new(1000);
        assert_eq!(cc.cwnd, 10_000);
        cc.on_ack(1000, 0);
        assert_eq!(cc.cwnd, 11_000);
        // Loss of the segment sent 5th; 50 transmissions so far.
        assert!(cc.on_loss(5, 50));
        assert_eq!((cc.cwnd, cc.ssthresh), (5_500, 5_500));
        // Further losses of segments sent before the recovery started: no further cut.
        assert!(!cc.on_loss(49, 50));
        assert_eq!(cc.cwnd, 5_500);
        cc.on_ack(1000, 20);
        assert_eq!(
            cc.cwnd, 5_500,
            "no growth for segments sent before recovery"
        );
        // An ack of a segment sent during recovery ends it; congestion avoidance follows.
        cc.on_ack(5_500, 50);
        assert_eq!(cc.cwnd, 6_500, "avoidance after recovery");
        // A loss of a segment sent after the recovery started is a new congestion event.
        assert!(cc.on_loss(60, 70));
        assert_eq!(cc.cwnd, 3_250);
        cc.on_persistent_congestion();
        assert_eq!((cc.cwnd, cc.ssthresh), (2000, 3_250));
        cc.on_ack(1000, 80);
        assert_eq!(cc.cwnd, 3000, "slow start again below ssthresh");
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.check_and_insert(5), Ok(()));
        assert_eq!(w.check_and_insert(5), Err(Replay::Duplicate));
        assert_eq!(w.check_and_insert(3), Ok(()));
        assert_eq!(w.check_and_insert(3), Err(Replay::Duplicate));
        assert_eq!(w.check_and_insert(100), Ok(()));
        assert_eq!(w.check_and_insert(36), Err(Replay::TooOld));
        assert_eq!(w.check_and_insert(37), Ok(()));
        assert_eq!(w.check_and_insert(37), Err(Replay::Duplicate));
        assert_eq!(w.check_and_insert(500), Ok(()));
        assert_eq!(w.check_and_insert(100), Err(Replay::TooOld));
    }
}
