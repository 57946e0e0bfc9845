//! Talking to otpd directly over D-Bus: enrolling the population through `ImportTokens` (the
//! migration path), waiting for start-up, and callers that keep one connection open.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kron_proto::{OtpdProxy, StepKind, TokenImport};
use zbus::connection::Builder;
use zbus::proxy::CacheProperties;

use crate::oath;
use crate::population::{self, PERIOD};
use crate::stats::Summary;

async fn connect(bus: &str, timeout: Duration) -> Result<OtpdProxy<'static>, String> {
    let conn = Builder::address(bus)
        .method_timeout(timeout)
        .build()
        .await
        .map_err(|e| format!("cannot connect to {bus}: {e}"))?;
    OtpdProxy::builder(&conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| e.to_string())
}

/// Imports users `from..to` in batches of `batch`, `parallel` calls at a time.
/// Returns the number imported (users already enrolled are skipped by otpd).
pub fn import(bus: &str, from: u64, to: u64, batch: u64, parallel: usize) -> Result<u64, String> {
    let next = Arc::new(AtomicU64::new(from));
    let imported = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..parallel.max(1))
        .map(|_| {
            let (bus, next, imported) = (bus.to_string(), next.clone(), imported.clone());
            std::thread::spawn(move || -> Result<(), String> {
                zbus::block_on(async {
                    let proxy = connect(&bus, Duration::from_secs(1800)).await?;
                    loop {
                        let start = next.fetch_add(batch, Ordering::Relaxed);
                        if start >= to {
                            return Ok(());
                        }
                        let tokens: Vec<TokenImport> = (start..(start + batch).min(to))
                            .map(|index| TokenImport {
                                user: population::name(index),
                                secret: population::secret(index).to_vec(),
                                algorithm: "SHA1".into(),
                                digits: 6,
                                period: PERIOD,
                                last_step: 0,
                                recovery_codes: vec![],
                            })
                            .collect();
                        let results = proxy
                            .import_tokens(tokens, false, false)
                            .await
                            .map_err(|e| format!("ImportTokens: {e}"))?;
                        let done = results.iter().filter(|r| r.outcome == "imported").count();
                        imported.fetch_add(done as u64, Ordering::Relaxed);
                    }
                })
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| "import thread panicked".to_string())??;
    }
    Ok(imported.load(Ordering::Relaxed))
}

/// Polls otpd's `Version` property until it answers; the time from `since_unix_ns` (when the
/// caller started otpd) to the first answer.
pub fn wait_ready(bus: &str, since_unix_ns: u128, limit: Duration) -> Result<Duration, String> {
    let deadline = Instant::now() + limit;
    loop {
        let answered = zbus::block_on(async {
            let proxy = connect(bus, Duration::from_secs(5)).await?;
            proxy.version().await.map_err(|e| e.to_string())
        });
        if answered.is_ok() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_nanos();
            return Ok(Duration::from_nanos(
                u64::try_from(now.saturating_sub(since_unix_ns)).unwrap_or(u64::MAX),
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "otpd did not answer within {limit:?}: {answered:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `callers` threads, each with one kept connection, verifying users from `users` (each once):
/// BeginLogin + Answer with the current code. Stops when the users or `budget` run out.
/// Returns the latency of accepted verifications, the failed ones, the time taken and the
/// callers the bus refused to connect.
pub fn kept_connection_load(
    bus: &str,
    users: &[u64],
    callers: usize,
    budget: Duration,
) -> Result<(Summary, u64, Duration, u64), String> {
    let users = Arc::new(users.to_vec());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..callers)
        .map(|_| {
            let (bus, users, next) = (bus.to_string(), users.clone(), next.clone());
            std::thread::spawn(move || -> (Vec<Duration>, u64, bool) {
                zbus::block_on(async {
                    // A caller the bus refuses (its per-user connection limit) is reported,
                    // not fatal: it is one of the things this measures.
                    let Ok(proxy) = connect(&bus, Duration::from_secs(30)).await else {
                        return (Vec::new(), 0, false);
                    };
                    let (mut samples, mut failed) = (Vec::new(), 0u64);
                    loop {
                        let slot = next.fetch_add(1, Ordering::Relaxed) as usize;
                        if slot >= users.len() || started.elapsed() > budget {
                            return (samples, failed, true);
                        }
                        let index = users[slot];
                        let begin = Instant::now();
                        let accepted = verify(&proxy, index).await;
                        if accepted {
                            samples.push(begin.elapsed());
                        } else {
                            failed += 1;
                        }
                    }
                })
            })
        })
        .collect();
    let (mut samples, mut failed, mut unconnected) = (Vec::new(), 0, 0);
    for worker in workers {
        let (s, f, connected) = worker
            .join()
            .map_err(|_| "caller thread panicked".to_string())?;
        samples.extend(s);
        failed += f;
        unconnected += u64::from(!connected);
    }
    if unconnected > 0 {
        eprintln!("kron-bench: {unconnected} of {callers} callers could not connect to the bus");
    }
    Ok((
        Summary::of(&samples),
        failed,
        started.elapsed(),
        unconnected,
    ))
}

async fn verify(proxy: &OtpdProxy<'static>, index: u64) -> bool {
    let user = population::name(index);
    let Ok(step) = proxy.begin_login(&user, "kron-bench", "", "").await else {
        return false;
    };
    if step.kind != StepKind::Prompt as u32 {
        return false;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let Ok(code) = oath::totp(&population::secret(index), now, PERIOD) else {
        return false;
    };
    matches!(proxy.answer(&step.handle, &code).await, Ok(step) if step.kind == StepKind::Accept as u32)
}

/// Where the time of one verification goes, measured from a client with a kept connection:
/// a D-Bus round trip to otpd that zbus answers itself (Peer.Ping), a property read, and the
/// two calls of a login. `users` are verified once each.
pub fn breakdown(bus: &str, users: &[u64]) -> Result<Vec<(&'static str, Summary)>, String> {
    zbus::block_on(async {
        let proxy = connect(bus, Duration::from_secs(30)).await?;
        let peer = zbus::fdo::PeerProxy::builder(proxy.inner().connection())
            .destination(kron_proto::BUS_NAME)
            .path(kron_proto::OBJECT_PATH)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| e.to_string())?;
        let (mut ping, mut version, mut begin, mut answer) = (vec![], vec![], vec![], vec![]);
        for &index in users {
            let t = Instant::now();
            peer.ping().await.map_err(|e| e.to_string())?;
            ping.push(t.elapsed());
            let t = Instant::now();
            proxy.version().await.map_err(|e| e.to_string())?;
            version.push(t.elapsed());
            let user = population::name(index);
            let t = Instant::now();
            let step = proxy
                .begin_login(&user, "kron-bench", "", "")
                .await
                .map_err(|e| e.to_string())?;
            begin.push(t.elapsed());
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let code = oath::totp(&population::secret(index), now, PERIOD)?;
            let t = Instant::now();
            let done = proxy
                .answer(&step.handle, &code)
                .await
                .map_err(|e| e.to_string())?;
            answer.push(t.elapsed());
            if done.kind != StepKind::Accept as u32 {
                return Err(format!("{user} was not accepted"));
            }
        }
        Ok(vec![
            ("Peer.Ping (zbus answers)", Summary::of(&ping)),
            ("Version property", Summary::of(&version)),
            ("BeginLogin", Summary::of(&begin)),
            (
                "Answer (code checked, step stored durably)",
                Summary::of(&answer),
            ),
        ])
    })
}
