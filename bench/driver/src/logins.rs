//! PAM logins, one after another (latency) or from many threads at once (throughput).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::pam::{self, Service};
use crate::population::{self, PERIOD};
use crate::stats::Summary;

/// What a run of logins measured.
#[derive(Debug, Default)]
pub struct Run {
    pub total: Vec<Duration>,
    pub authenticate: Vec<Duration>,
    pub failed: u64,
    /// The first few failures, for the log.
    pub failures: Vec<String>,
    pub elapsed: Duration,
}

impl Run {
    fn record(&mut self, user: &str, outcome: pam::Outcome) {
        if outcome.ok() && outcome.prompts == 1 {
            self.total.push(outcome.total);
            self.authenticate.push(outcome.authenticate);
        } else {
            self.failed += 1;
            if self.failures.len() < 5 {
                self.failures.push(format!(
                    "{user}: {} after {} prompt(s)",
                    pam::describe(outcome.code),
                    outcome.prompts
                ));
            }
        }
    }

    fn merge(&mut self, other: Run) {
        self.total.extend(other.total);
        self.authenticate.extend(other.authenticate);
        self.failed += other.failed;
        self.failures.extend(
            other
                .failures
                .into_iter()
                .take(5usize.saturating_sub(self.failures.len())),
        );
    }

    pub fn summary(&self) -> Summary {
        Summary::of(&self.total)
    }
}

/// Logs in each of `users` once, in order, until they or `budget` run out.
pub fn sequential(service: &Service, users: &[u64], budget: Duration) -> Run {
    let mut run = Run::default();
    let started = Instant::now();
    for &index in users {
        if started.elapsed() > budget {
            break;
        }
        let name = population::name(index);
        let outcome = service.login(&name, &population::secret(index));
        run.record(&name, outcome);
    }
    run.elapsed = started.elapsed();
    run
}

/// `callers` threads logging in users from `users` (each once) until they or `budget` run out.
pub fn concurrent(
    services: &[Arc<Service>],
    users: &[u64],
    callers: usize,
    budget: Duration,
) -> Run {
    let users = Arc::new(users.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..callers)
        .map(|caller| {
            // Callers spread evenly over the services (the hosts of a fleet).
            let service = services[caller % services.len()].clone();
            let (users, next) = (users.clone(), next.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut run = Run::default();
                    loop {
                        let slot = next.fetch_add(1, Ordering::Relaxed);
                        if slot >= users.len() || started.elapsed() > budget {
                            return run;
                        }
                        let name = population::name(users[slot]);
                        let outcome = service.login(&name, &population::secret(users[slot]));
                        run.record(&name, outcome);
                    }
                })
                .expect("spawn a caller thread")
        })
        .collect();
    let mut run = Run::default();
    for thread in threads {
        if let Ok(part) = thread.join() {
            run.merge(part);
        } else {
            run.failed += 1;
        }
    }
    run.elapsed = started.elapsed();
    run
}

/// Sleeps until the next TOTP step begins, so users logged in before can log in again
/// without their code being (rightly) refused as a replay.
pub fn wait_for_next_step() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let next = (now.as_secs() / PERIOD + 1) * PERIOD;
    let wait = Duration::from_secs(next) - now + Duration::from_millis(50);
    eprintln!(
        "kron-bench: waiting {:.1} s for a fresh time step",
        wait.as_secs_f64()
    );
    std::thread::sleep(wait);
}
