//! RTT estimation and the probe timeout (RFC 6298 / RFC 9002), congestion control (CUBIC,
//! RFC 9438, and NewReno) and the replay window.

use std::time::{Duration, Instant};

use crate::config::CongestionControl;

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

/// The congestion controller a connection runs (`PROTOCOL.md` section 8).
#[derive(Debug, Clone)]
pub(crate) enum Controller {
    /// CUBIC (RFC 9438), the default.
    Cubic(Cubic),
    /// NewReno (RFC 5681 / 6582).
    NewReno(NewReno),
}

impl Controller {
    pub(crate) fn new(kind: CongestionControl, mss: usize) -> Self {
        match kind {
            CongestionControl::Cubic => Controller::Cubic(Cubic::new(mss)),
            CongestionControl::NewReno => Controller::NewReno(NewReno::new(mss)),
        }
    }

    /// Congestion window, bytes.
    pub(crate) fn cwnd(&self) -> u64 {
        match self {
            Controller::Cubic(cc) => cc.cwnd(),
            Controller::NewReno(cc) => cc.cwnd,
        }
    }

    /// Slow-start threshold, bytes.
    pub(crate) fn ssthresh(&self) -> u64 {
        match self {
            Controller::Cubic(cc) => cc.ssthresh,
            Controller::NewReno(cc) => cc.ssthresh,
        }
    }

    /// `acked` bytes of a segment last sent with send order `order` were newly acknowledged
    /// at `now`; `rtt` is the smoothed RTT. A sender that did not use its window
    /// (`Utilization::Underused`) does not grow it (RFC 9002 section 7.8).
    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        acked: u64,
        order: u64,
        rtt: Duration,
        use_of_window: Utilization,
    ) {
        match self {
            Controller::Cubic(cc) => cc.on_ack(now, acked, order, rtt, use_of_window),
            Controller::NewReno(cc) => cc.on_ack(acked, order, use_of_window),
        }
    }

    /// Segments were declared lost, the newest of them sent with send order `largest_lost`;
    /// `next_order` is the send order of the next transmission. Returns whether this started
    /// a new recovery period (a congestion event).
    pub(crate) fn on_loss(&mut self, largest_lost: u64, next_order: u64) -> bool {
        match self {
            Controller::Cubic(cc) => cc.on_loss(largest_lost, next_order),
            Controller::NewReno(cc) => cc.on_loss(largest_lost, next_order),
        }
    }

    /// Persistent congestion (RFC 9002 section 7.6): the window drops to the minimum.
    pub(crate) fn on_persistent_congestion(&mut self) {
        match self {
            Controller::Cubic(cc) => cc.on_persistent_congestion(),
            Controller::NewReno(cc) => cc.on_persistent_congestion(),
        }
    }
}

/// Whether the sender filled its congestion window since the last acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Utilization {
    /// Data waited for the window: growing it would be used.
    Full,
    /// The sender ran out of data (or of the peer's window) before the window was full.
    Underused,
}

/// Multiplicative decrease of CUBIC (`β_cubic`).
const CUBIC_BETA: f64 = 0.7;
/// Scaling constant of CUBIC's window function, segments per second cubed (`C`).
const CUBIC_C: f64 = 0.4;
/// Additive increase of the Reno-friendly estimate, segments per RTT:
/// `3·(1 − β)/(1 + β)` (RFC 9438 section 4.3).
const CUBIC_ALPHA: f64 = 3.0 * (1.0 - CUBIC_BETA) / (1.0 + CUBIC_BETA);

/// CUBIC (RFC 9438) in bytes, with the same recovery periods as [`NewReno`].
///
/// After a congestion event the window follows `W_cubic(t) = C·(t − K)³ + W_max` (in
/// segments, `t` in seconds since the epoch began), concave up to the window before the
/// reduction and convex beyond it, but never below the Reno-friendly estimate `W_est`, which
/// grows by `α_cubic` segments per RTT (1 once it passed the window before the reduction).
/// On tiny RTTs (loopback) `W_est` dominates: per loss the window keeps `β = 0.7` instead of
/// NewReno's half.
#[derive(Debug, Clone)]
pub(crate) struct Cubic {
    /// Congestion window, bytes (fractional: growth per ack is a fraction of a byte at
    /// large windows).
    window: f64,
    /// Slow-start threshold, bytes.
    pub(crate) ssthresh: u64,
    /// Segment size, bytes.
    mss: f64,
    /// In recovery since this transmission (send order), as for [`NewReno`].
    recovery_start: Option<u64>,
    /// `W_max`: the window before the last reduction (less with fast convergence), bytes;
    /// 0 before the first congestion event.
    w_max: f64,
    /// `cwnd_prior`: the window just before the last reduction, bytes.
    cwnd_prior: f64,
    /// Start of the current congestion-avoidance epoch; `None` until the first ack in
    /// congestion avoidance after slow start or a reduction.
    epoch_start: Option<Instant>,
    /// `K`: seconds from the epoch start until `W_cubic` is back at `W_max`.
    k: f64,
    /// `W_est`: the Reno-friendly window estimate, bytes.
    w_est: f64,
}

impl Cubic {
    pub(crate) fn new(mss: usize) -> Self {
        let initial = NewReno::new(mss).cwnd;
        Self {
            window: initial as f64,
            ssthresh: u64::MAX,
            mss: mss as f64,
            recovery_start: None,
            w_max: 0.0,
            cwnd_prior: 0.0,
            epoch_start: None,
            k: 0.0,
            w_est: 0.0,
        }
    }

    /// Congestion window, bytes.
    pub(crate) fn cwnd(&self) -> u64 {
        self.window as u64
    }

    /// The minimum window: two segments.
    fn minimum_window(&self) -> f64 {
        2.0 * self.mss
    }

    /// `W_cubic(t)` in bytes, `t` seconds since the epoch began.
    fn w_cubic(&self, t: f64) -> f64 {
        CUBIC_C * (t - self.k).powi(3) * self.mss + self.w_max
    }

    /// `acked` bytes of a segment last sent with send order `order` were newly acknowledged
    /// at `now`; `rtt` is the smoothed RTT.
    pub(crate) fn on_ack(
        &mut self,
        now: Instant,
        acked: u64,
        order: u64,
        rtt: Duration,
        use_of_window: Utilization,
    ) {
        if let Some(start) = self.recovery_start {
            if order < start {
                return;
            }
            self.recovery_start = None;
        }
        if use_of_window == Utilization::Underused {
            return;
        }
        let acked = acked as f64;
        if self.window < self.ssthresh as f64 {
            self.window += acked;
            return;
        }
        let epoch_start = *self.epoch_start.get_or_insert_with(|| {
            // A new epoch (RFC 9438 section 4.2): K from the window it starts with.
            if self.window < self.w_max {
                self.k = ((self.w_max - self.window) / self.mss / CUBIC_C).cbrt();
            } else {
                self.k = 0.0;
                self.w_max = self.window;
            }
            self.w_est = self.window;
            now
        });
        let t = now.saturating_duration_since(epoch_start).as_secs_f64();
        let alpha = if self.w_est >= self.cwnd_prior {
            1.0
        } else {
            CUBIC_ALPHA
        };
        self.w_est += alpha * acked * self.mss / self.window;
        if self.w_cubic(t) < self.w_est {
            // Reno-friendly region.
            self.window = self.w_est;
        } else {
            // Concave or convex region: towards W_cubic one RTT ahead, at most 1.5 times the
            // window per RTT.
            let target = self
                .w_cubic(t + rtt.as_secs_f64())
                .clamp(self.window, 1.5 * self.window);
            self.window += (target - self.window) * acked / self.window;
        }
    }

    /// Segments were declared lost; as [`NewReno::on_loss`], with CUBIC's reduction: `W_max`
    /// is the window before it (less with fast convergence, when the window had not regained
    /// the previous `W_max`), and the window keeps `β = 0.7`.
    pub(crate) fn on_loss(&mut self, largest_lost: u64, next_order: u64) -> bool {
        if self
            .recovery_start
            .is_some_and(|start| largest_lost < start)
        {
            return false;
        }
        self.epoch_start = None;
        self.cwnd_prior = self.window;
        self.w_max = if self.window < self.w_max {
            self.window * (1.0 + CUBIC_BETA) / 2.0
        } else {
            self.window
        };
        self.window = (self.window * CUBIC_BETA)
            .round()
            .max(self.minimum_window());
        self.ssthresh = self.window as u64;
        self.recovery_start = Some(next_order);
        true
    }

    /// Persistent congestion (RFC 9002 section 7.6): the window drops to the minimum; slow
    /// start runs up to the threshold the congestion event set, then a new epoch begins.
    pub(crate) fn on_persistent_congestion(&mut self) {
        self.window = self.minimum_window();
        self.epoch_start = None;
        self.recovery_start = None;
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
    pub(crate) fn on_ack(&mut self, acked: u64, order: u64, use_of_window: Utilization) {
        if let Some(start) = self.recovery_start {
            if order < start {
                return;
            }
            // A segment sent during recovery arrived: the recovery period is over.
            self.recovery_start = None;
        }
        if use_of_window == Utilization::Underused {
            return;
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
        cc.on_ack(1000, 0, Utilization::Full);
        assert_eq!(cc.cwnd, 11_000);
        // Loss of the segment sent 5th; 50 transmissions so far.
        assert!(cc.on_loss(5, 50));
        assert_eq!((cc.cwnd, cc.ssthresh), (5_500, 5_500));
        // Further losses of segments sent before the recovery started: no further cut.
        assert!(!cc.on_loss(49, 50));
        assert_eq!(cc.cwnd, 5_500);
        cc.on_ack(1000, 20, Utilization::Full);
        assert_eq!(
            cc.cwnd, 5_500,
            "no growth for segments sent before recovery"
        );
        // An ack of a segment sent during recovery ends it; congestion avoidance follows.
        cc.on_ack(5_500, 50, Utilization::Full);
        assert_eq!(cc.cwnd, 6_500, "avoidance after recovery");
        // A loss of a segment sent after the recovery started is a new congestion event.
        assert!(cc.on_loss(60, 70));
        assert_eq!(cc.cwnd, 3_250);
        cc.on_persistent_congestion();
        assert_eq!((cc.cwnd, cc.ssthresh), (2000, 3_250));
        cc.on_ack(1000, 80, Utilization::Full);
        assert_eq!(cc.cwnd, 3000, "slow start again below ssthresh");
    }

    const FULL: Utilization = Utilization::Full;

    /// A CUBIC controller in congestion avoidance with a window of `segments` segments of
    /// 1000 bytes.
    fn cubic_at(segments: u64) -> Cubic {
        let mut cc = Cubic::new(1000);
        cc.window = (segments * 1000) as f64;
        cc.ssthresh = 1000;
        cc
    }

    /// Acks one window's worth of segments per `rtt`, `rounds` times, returning the window
    /// (in segments) after each round and the time of each.
    fn ack_rounds(cc: &mut Cubic, start: Instant, rtt: Duration, rounds: u32) -> Vec<(f64, f64)> {
        let mut now = start;
        let mut trace = Vec::new();
        for _ in 0..rounds {
            now += rtt;
            for _ in 0..cc.cwnd() / 1000 {
                cc.on_ack(now, 1000, u64::MAX, rtt, FULL);
            }
            trace.push(((now - start).as_secs_f64(), cc.window / 1000.0));
        }
        trace
    }

    #[test]
    fn cubic_reduces_by_beta_with_fast_convergence_once_per_recovery() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(10);
        let mut cc = Cubic::new(1000);
        assert_eq!(cc.cwnd(), 10_000);
        // Slow start: the window grows by the bytes acknowledged, unless it was underused.
        cc.on_ack(t0, 1000, 0, rtt, FULL);
        assert_eq!(cc.cwnd(), 11_000);
        cc.on_ack(t0, 1000, 1, rtt, Utilization::Underused);
        assert_eq!(cc.cwnd(), 11_000);
        // A congestion event keeps β = 0.7 of the window; W_max is the window before it.
        assert!(cc.on_loss(5, 50));
        assert_eq!((cc.cwnd(), cc.ssthresh), (7_700, 7_700));
        assert_eq!(cc.w_max, 11_000.0);
        // Losses and acks of transmissions from before the recovery period change nothing.
        assert!(!cc.on_loss(49, 50));
        cc.on_ack(t0, 1000, 20, rtt, FULL);
        assert_eq!(cc.cwnd(), 7_700);
        // A loss before the window regained W_max: fast convergence lowers W_max to
        // (1 + β)/2 of the window (RFC 9438 section 4.7).
        assert!(cc.on_loss(60, 70));
        assert!((cc.w_max - 7_700.0 * 0.85).abs() < 1e-6, "{}", cc.w_max);
        assert_eq!(cc.cwnd(), 5_390);
        // Never below the minimum window.
        let mut small = cubic_at(2);
        assert!(small.on_loss(0, 1));
        assert_eq!(small.cwnd(), 2_000);
        // Persistent congestion: the minimum window, slow start up to ssthresh.
        cc.on_persistent_congestion();
        assert_eq!((cc.cwnd(), cc.ssthresh), (2_000, 5_390));
        cc.on_ack(t0, 1000, 80, rtt, FULL);
        assert_eq!(cc.cwnd(), 3_000);
    }

    #[test]
    fn cubic_window_follows_the_cubic_function_on_a_long_rtt() {
        // W_max = 100 segments, 70 after the reduction: K = cbrt(30 / 0.4) ≈ 4.22 s. With a
        // 100 ms RTT the Reno-friendly estimate (0.53 segments per RTT) stays below W_cubic.
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut cc = cubic_at(100);
        assert!(cc.on_loss(0, 1));
        assert_eq!(cc.cwnd(), 70_000);
        let trace = ack_rounds(&mut cc, t0, rtt, 80);
        let k = (30.0f64 / CUBIC_C).cbrt();
        assert!((cc.k - k).abs() < 1e-9, "{} {k}", cc.k);
        // The epoch starts at the first ack, one RTT in.
        let w_cubic = |t: f64| CUBIC_C * (t - rtt.as_secs_f64() - k).powi(3) + 100.0;
        for &(t, w) in &trace {
            // The window tracks W_cubic one RTT ahead, within a segment or two, until W_est
            // (growing by one segment per RTT once past the old window, after about 5.7 s)
            // overtakes it.
            let expected = w_cubic(t + rtt.as_secs_f64());
            assert!(w > expected - 2.0, "t {t}: {w} vs {expected}");
            if t < 5.5 {
                assert!((w - expected).abs() < 2.0, "t {t}: {w} vs {expected}");
            }
        }
        // Concave up to W_max (growth slows down), a plateau near it, convex beyond.
        let growth = |i: usize| trace[i + 1].1 - trace[i].1;
        assert!(growth(2) > 5.0 * growth(41), "{trace:?}");
        assert!(growth(75) > 5.0 * growth(41), "{trace:?}");
        let at_k = trace[42].1;
        assert!((98.0..102.0).contains(&at_k), "{at_k}");
        // Never more than 1.5 times the window per RTT.
        assert!(trace.windows(2).all(|w| w[1].1 <= 1.5 * w[0].1));
    }

    #[test]
    fn cubic_is_reno_friendly_on_a_tiny_rtt() {
        // At 100 µs per RTT W_cubic hardly moves; the window grows with W_est: α_cubic =
        // 3·(1 − β)/(1 + β) ≈ 0.53 segments per RTT up to the window before the reduction
        // (20 segments), one segment per RTT after that (RFC 9438 section 4.3).
        let t0 = Instant::now();
        let rtt = Duration::from_micros(100);
        let mut cc = cubic_at(20);
        assert!(cc.on_loss(0, 1));
        assert_eq!(cc.cwnd(), 14_000);
        let trace = ack_rounds(&mut cc, t0, rtt, 40);
        // 10 rounds: 14 + 10 · 0.53 segments (one round per window of acks, so the window
        // grows a little less than α per round as it grows within the round).
        let after_10 = trace[9].1;
        assert!((18.8..=19.3).contains(&after_10), "{after_10}");
        // Past 20 segments: one segment per round.
        let late = trace[39].1 - trace[29].1;
        assert!((9.5..=10.05).contains(&late), "{late}");
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
