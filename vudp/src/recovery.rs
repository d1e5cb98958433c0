//! RTT estimation (RFC 6298), NewReno congestion control and the replay window.

use std::time::Duration;

/// Clock granularity `G` of RFC 6298.
const GRANULARITY: Duration = Duration::from_millis(1);

/// Smoothed RTT, variation and the retransmission timeout with its backoff.
#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    /// Smoothed RTT; `None` before the first sample.
    srtt: Option<Duration>,
    /// RTT variation.
    rttvar: Duration,
    /// RTO before backoff.
    base_rto: Duration,
    /// Number of doublings since the last sample.
    backoff: u32,
    /// Lower bound.
    min_rto: Duration,
    /// Upper bound.
    max_rto: Duration,
}

impl RttEstimator {
    pub(crate) fn new(initial: Duration, min_rto: Duration, max_rto: Duration) -> Self {
        Self {
            srtt: None,
            rttvar: Duration::ZERO,
            base_rto: initial,
            backoff: 0,
            min_rto,
            max_rto,
        }
    }

    /// Takes an RTT sample (never from a retransmitted segment) and ends the backoff.
    pub(crate) fn on_sample(&mut self, rtt: Duration) {
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
        let srtt = self.srtt.unwrap_or(rtt);
        self.base_rto =
            (srtt + (self.rttvar * 4).max(GRANULARITY)).clamp(self.min_rto, self.max_rto);
        self.backoff = 0;
    }

    /// Doubles the RTO once (one timer event), up to the maximum.
    pub(crate) fn on_timeout(&mut self) {
        if self.rto() < self.max_rto {
            self.backoff += 1;
        }
    }

    /// The current RTO, backoff included.
    pub(crate) fn rto(&self) -> Duration {
        let factor = 1u32 << self.backoff.min(20);
        self.base_rto.saturating_mul(factor).min(self.max_rto)
    }

    pub(crate) fn srtt(&self) -> Duration {
        self.srtt.unwrap_or(Duration::ZERO)
    }

    pub(crate) fn rttvar(&self) -> Duration {
        self.rttvar
    }
}

/// NewReno in bytes, with SACK-based loss detection feeding it (`PROTOCOL.md` section 8).
#[derive(Debug, Clone)]
pub(crate) struct NewReno {
    /// Congestion window, bytes.
    pub(crate) cwnd: u64,
    /// Slow-start threshold, bytes.
    pub(crate) ssthresh: u64,
    /// Segment size, bytes.
    mss: u64,
    /// In recovery until the cumulative ack reaches this offset.
    recovery_until: Option<u64>,
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
            recovery_until: None,
            avoidance_credit: 0,
        }
    }

    /// `acked` bytes newly acknowledged; `snd_una` the cumulative ack.
    pub(crate) fn on_ack(&mut self, acked: u64, snd_una: u64) {
        if let Some(until) = self.recovery_until {
            if snd_una >= until {
                self.recovery_until = None;
            } else {
                return;
            }
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

    /// A fast-retransmit loss; `sent_end` is the end of everything sent so far.
    pub(crate) fn on_loss(&mut self, sent_end: u64) {
        if self.recovery_until.is_some() {
            return;
        }
        self.ssthresh = (self.cwnd / 2).max(2 * self.mss);
        self.cwnd = self.ssthresh;
        self.avoidance_credit = 0;
        self.recovery_until = Some(sent_end);
    }

    /// The retransmission timer expired with `flight` bytes in flight.
    pub(crate) fn on_timeout(&mut self, flight: u64) {
        self.ssthresh = (flight / 2).max(2 * self.mss);
        self.cwnd = self.mss;
        self.avoidance_credit = 0;
        self.recovery_until = None;
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
    fn rfc6298_formulas_and_backoff() {
        let ms = Duration::from_millis;
        let mut rtt = RttEstimator::new(ms(1000), ms(200), ms(60_000));
        assert_eq!(rtt.rto(), ms(1000));
        rtt.on_sample(ms(100));
        assert_eq!(rtt.srtt(), ms(100));
        assert_eq!(rtt.rttvar(), ms(50));
        assert_eq!(rtt.rto(), ms(300));
        rtt.on_sample(ms(200));
        // rttvar = 3/4*50 + 1/4*100 = 62.5; srtt = 7/8*100 + 1/8*200 = 112.5
        assert_eq!(rtt.rttvar(), Duration::from_micros(62_500));
        assert_eq!(rtt.srtt(), Duration::from_micros(112_500));
        rtt.on_timeout();
        rtt.on_timeout();
        assert_eq!(rtt.rto(), ms(362) * 4 + Duration::from_micros(500 * 4));
        for _ in 0..30 {
            rtt.on_timeout();
        }
        assert_eq!(rtt.rto(), ms(60_000));
        rtt.on_sample(ms(10));
        assert!(rtt.rto() < ms(1000));
        assert!(rtt.rto() >= ms(200));
    }

    #[test]
    fn newreno_halves_once_per_recovery() {
        let mut cc = NewReno::new(1000);
        assert_eq!(cc.cwnd, 10_000);
        cc.on_ack(1000, 1000);
        assert_eq!(cc.cwnd, 11_000);
        cc.on_loss(50_000);
        assert_eq!(cc.cwnd, 5_500);
        cc.on_loss(50_000);
        assert_eq!(cc.cwnd, 5_500);
        cc.on_ack(1000, 20_000);
        assert_eq!(cc.cwnd, 5_500, "no growth during recovery");
        cc.on_ack(5_500, 50_000);
        assert_eq!(cc.cwnd, 6_500, "avoidance after recovery");
        cc.on_timeout(4000);
        assert_eq!((cc.cwnd, cc.ssthresh), (1000, 2000));
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
