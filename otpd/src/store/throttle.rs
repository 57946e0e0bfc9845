//! Backoff after failed attempts: pure arithmetic over the configured limits.
//! docs/throttling.md publishes the bound on an online guesser that these defaults give.

use kron_common::config::ThrottleConfig;

/// Seconds to wait before the next attempt after `failures` consecutive failures (counting the
/// attempt just made): none during the free attempts, then `base_delay` doubling per failure,
/// never above `max_delay`.
pub fn delay_after(failures: u32, config: &ThrottleConfig) -> u64 {
    if failures < config.free_attempts {
        return 0;
    }
    let doublings = failures - config.free_attempts;
    let factor = 1u64.checked_shl(doublings).unwrap_or(u64::MAX);
    config
        .base_delay
        .saturating_mul(factor)
        .min(config.max_delay)
}

/// Guesses an attacker gets in `horizon` seconds when every guess is wrong and each one is made
/// the moment it is allowed: the worst case the published bound is about.
pub fn max_guesses(config: &ThrottleConfig, horizon: u64) -> u64 {
    let (mut now, mut failures, mut guesses) = (0u64, 0u32, 0u64);
    while now < horizon {
        guesses += 1;
        failures = failures.saturating_add(1);
        now = now.saturating_add(delay_after(failures, config).max(1));
        if delay_after(failures, config) == config.max_delay {
            // Steady state: one guess per max_delay for the rest of the horizon.
            return guesses + (horizon - now.min(horizon)).div_ceil(config.max_delay);
        }
    }
    guesses
}

#[cfg(test)]
mod tests {
    use super::*;

    const YEAR: u64 = 365 * 24 * 3600;

    #[test]
    fn delay_grows_then_caps() {
        let config = ThrottleConfig::default();
        let delays: Vec<u64> = (1..=12).map(|f| delay_after(f, &config)).collect();
        assert_eq!(
            delays,
            [0, 0, 30, 60, 120, 240, 480, 960, 1920, 3840, 7680, 14400]
        );
        assert_eq!(delay_after(u32::MAX, &config), config.max_delay);
    }

    #[test]
    fn defaults_bound_an_online_guesser_below_one_percent_a_year() {
        let config = ThrottleConfig::default();
        let guesses = max_guesses(&config, YEAR);
        // Each guess matches one of (2 * skew + 1) = 3 valid codes out of 10^6.
        let success = guesses as f64 * 3.0 / 1e6;
        assert!(success < 0.01, "{guesses} guesses a year give {success}");
        // The number docs/throttling.md publishes.
        assert_eq!(guesses, 2200);
    }

    #[test]
    fn simulation_matches_closed_form() {
        let config = ThrottleConfig {
            free_attempts: 1,
            base_delay: 10,
            max_delay: 40,
        };
        // delays after failures 1..: 10, 20, 40, 40, ...; guesses at t = 0, 10, 30, 70, 110, ...
        assert_eq!(max_guesses(&config, 70), 3);
        assert_eq!(max_guesses(&config, 71), 4);
        assert_eq!(max_guesses(&config, 111), 5);
    }
}
