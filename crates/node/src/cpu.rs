//! The sustained CPU budget of a plugin (`limits.cpu`).
//!
//! Each plugin runs on a thread of its own, so the thread's CPU clock
//! (`CLOCK_THREAD_CPUTIME_ID`) measures everything done for the plugin:
//! its calls, the host functions they make (logging, metric series, map
//! access) and the draining of its event sources. The worker charges that
//! time to a token bucket that earns `limits.cpu` millicores of CPU time per
//! second of wall time, holding at most [`BURST`] worth of it; once the
//! bucket is in debt the worker makes no call into the plugin until the
//! debt is paid back. A single call is still bounded by
//! `limits.callTimeoutMs`; its CPU time is paid back afterwards, so the
//! long-run share is the budget. Why this and not cgroup `cpu.max`:
//! docs/src/design.md ("CPU budgets").

use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};

/// Wall time whose worth of budget an idle plugin may save up and then
/// spend at once (CFS's default `cpu.max` period).
pub const BURST: Duration = Duration::from_millis(100);

/// CPU time used by the calling thread so far.
pub fn thread_cpu_time() -> Duration {
    // Cannot fail for the calling thread's own clock on Linux; should it
    // ever, no time is charged.
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// What one [`CpuAccount::charge`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Charge {
    /// CPU time the thread used since the previous charge.
    pub used: Duration,
    /// Until when the plugin may not be called (the budget is in debt).
    pub paused_until: Option<Instant>,
}

/// The CPU time of one worker thread and, with a limit, its budget. Create
/// and charge it on the thread it measures.
#[derive(Debug)]
pub struct CpuAccount {
    /// CPUs the plugin may use (`limits.cpu` / 1000); `None`: unlimited.
    share: Option<f64>,
    /// Seconds of CPU time in the bucket; negative while in debt.
    credit: f64,
    last_cpu: Duration,
    last_wall: Instant,
}

impl CpuAccount {
    /// Start measuring the calling thread, with `millicores` of budget.
    pub fn new(millicores: Option<u32>) -> Self {
        let share = millicores.map(|m| f64::from(m.clamp(1, 1000)) / 1000.0);
        Self {
            share,
            credit: share.map_or(0.0, |s| s * BURST.as_secs_f64()),
            last_cpu: thread_cpu_time(),
            last_wall: Instant::now(),
        }
    }

    /// Change the budget (an update of the plugin); what was saved or owed
    /// is kept, within the new burst.
    pub fn set_limit(&mut self, millicores: Option<u32>) {
        self.share = millicores.map(|m| f64::from(m.clamp(1, 1000)) / 1000.0);
        self.credit = match self.share {
            Some(s) => self.credit.min(s * BURST.as_secs_f64()),
            None => 0.0,
        };
    }

    pub fn limited(&self) -> bool {
        self.share.is_some()
    }

    /// Charge the CPU time used since the last charge at wall time `now`.
    pub fn charge(&mut self, now: Instant) -> Charge {
        let cpu = thread_cpu_time();
        let used = cpu.saturating_sub(self.last_cpu);
        self.last_cpu = cpu;
        let wall = now.saturating_duration_since(self.last_wall);
        self.last_wall = self.last_wall.max(now);
        let Some(share) = self.share else {
            return Charge {
                used,
                paused_until: None,
            };
        };
        let burst = share * BURST.as_secs_f64();
        self.credit = (self.credit + share * wall.as_secs_f64()).min(burst) - used.as_secs_f64();
        let paused_until =
            (self.credit < 0.0).then(|| now + Duration::from_secs_f64(-self.credit / share));
        Charge { used, paused_until }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn burn(cpu: Duration) {
        let start = thread_cpu_time();
        while thread_cpu_time() - start < cpu {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn unlimited_threads_are_measured_but_never_paused() {
        let mut account = CpuAccount::new(None);
        burn(Duration::from_millis(20));
        let charge = account.charge(Instant::now());
        assert!(charge.used >= Duration::from_millis(20), "{charge:?}");
        assert_eq!(charge.paused_until, None);
    }

    #[test]
    fn debt_pauses_for_the_time_the_share_needs_to_earn_it_back() {
        // 100 millicores: 10 ms of CPU past the 10 ms burst is paid back
        // in ~100 ms of wall time. The wall time the burn took is earned
        // too, so the pause is computed from a fixed `now`.
        let mut account = CpuAccount::new(Some(100));
        let now = account.last_wall;
        burn(Duration::from_millis(30));
        let charge = account.charge(now);
        let used = charge.used.as_secs_f64();
        let pause = charge
            .paused_until
            .expect("30 ms of CPU is past a 10 ms burst")
            .duration_since(now)
            .as_secs_f64();
        // Owed: used - 10 ms of burst, earned back at 0.1 CPU.
        let expected = (used - 0.010) / 0.1;
        assert!((pause - expected).abs() < 1e-6, "{pause} vs {expected}");
    }

    #[test]
    fn idle_time_is_saved_only_up_to_the_burst() {
        let mut account = CpuAccount::new(Some(500));
        let later = account.last_wall + Duration::from_secs(60);
        let charge = account.charge(later);
        assert_eq!(charge.paused_until, None);
        assert!(account.credit <= 0.5 * BURST.as_secs_f64());
    }
}
