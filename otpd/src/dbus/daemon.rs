//! Start-up and shutdown of otpd: arguments, config, state directory, key, store, bus.

use crate::audit::Audit;
use crate::clock::unix_now;
use crate::dbus::service::CallSlots;
use crate::dbus::{bus, listen};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::store::crypto::SecretKey;
use crate::store::health::{Report, StoreEvent};
use crate::store::offline::{Offline, local::Local, sync};
use crate::store::postgres::audit::FleetAudit;
use crate::store::{FleetStore, PgStore, SledStore};
use clap::Parser;
use kron_common::config::{Config, DEFAULT_CONFIG_PATH};
use kron_common::daemon_args::OtpdArgs as Args;
use kron_common::trust;
use kron_common::users::{Directory, Nss};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Runs otpd; returns the process exit code.
pub fn main() -> i32 {
    keep_secrets_in_memory();
    let args = Args::parse();
    let path = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let config = match Config::load(&path, args.config.is_some()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("otpd: {e}");
            return 1;
        }
    };
    // Like sshd's StrictModes: no file (or directory on the way to one) that anyone but root
    // could change. Checked before anything is created or read from the state directory.
    let config_path = path.exists().then_some(path.as_path());
    if let Err(untrusted) =
        trust::check_otpd_files(&config, config_path, trust::Owners::root_and_me())
    {
        eprintln!("otpd: refusing to use {untrusted}");
        return 1;
    }
    if args.check_config {
        // The secret files of [email] and [sms] are read at start: check them now too.
        if let Err(e) = check_senders(&config).and_then(|()| check_fleet(&config)) {
            eprintln!("otpd: {e}");
            return 1;
        }
        for warning in config_warnings(&config, &Nss) {
            eprintln!("otpd: warning: {}: {warning}", path.display());
        }
        println!("ok");
        return 0;
    }
    match serve(config, &args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("otpd: {e}");
            1
        }
    }
}

/// Builds the email and SMS senders once, as a start would, so unreadable or insecure secret
/// files are reported by `--check-config`.
fn check_senders(config: &Config) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::System(format!("cannot start the runtime: {e}")))?;
    crate::delivery::Deliverer::new(
        config.email.as_ref(),
        config.sms.as_ref(),
        &config.issuer,
        "localhost",
        runtime.handle().clone(),
    )
    .map(drop)
}

/// Reads the files of `[fleet]` as a start would (the CA, the client certificate and key, the
/// password file), so `--check-config` reports a missing, loose or malformed one.
fn check_fleet(config: &Config) -> Result<()> {
    let Some(fleet) = &config.fleet else {
        return Ok(());
    };
    let client_cert = match (&fleet.cert_file, &fleet.key_file) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        _ => None,
    };
    crate::store::postgres::target::Target::new(
        &fleet.url,
        &fleet.ca_file,
        fleet.password_file.as_deref(),
        client_cert,
    )?;
    if let Some(path) = &fleet.password_file {
        crate::store::postgres::tls::read_file(path, true)?;
    }
    Ok(())
}

/// Things that are valid but probably not meant: groups NSS does not know.
pub fn config_warnings(config: &Config, directory: &dyn Directory) -> Vec<String> {
    let mut warnings = Vec::new();
    for rule in config.groups.iter().filter(|r| r.name != "*") {
        if !matches!(directory.group_gid(&rule.name), Ok(Some(_))) {
            warnings.push(format!(
                "group {:?} is unknown to NSS; its rule matches nobody",
                rule.name
            ));
        }
    }
    if !matches!(directory.group_gid(&config.admin_group), Ok(Some(_))) {
        warnings.push(format!(
            "admin_group {:?} does not exist; only root can manage tokens",
            config.admin_group
        ));
    }
    warnings
}

fn serve(config: Config, args: &Args) -> Result<()> {
    tune_malloc();
    listen::raise_descriptor_limit();
    // Everything otpd creates (store files, key) is private to root.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // First, so a socket systemd passed is taken before anything else could touch fd 3.
    let (listener, origin) = listen::open(&config.socket)?;
    let socket = config.socket.clone();
    prepare_state_dir(&config.state_dir)?;
    let key = SecretKey::load_or_create(&config.state_dir.join("secret.key"))?;
    let address = config.bus_address(args.bus.as_deref());
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .map_err(|e| Error::System(format!("cannot start the runtime: {e}")))?;
    let (store, audit, store_fatal) = open_store(&config, args, &hostname, runtime.handle())?;
    release_freed_memory();
    let delivery = crate::delivery::Deliverer::new(
        config.email.as_ref(),
        config.sms.as_ref(),
        &config.issuer,
        &hostname,
        runtime.handle().clone(),
    )?;
    let engine = Arc::new(Engine::new(
        config,
        store,
        key,
        Box::new(Nss),
        audit,
        hostname,
        Box::new(delivery),
    ));
    let calls = Arc::new(CallSlots::default());
    let login_ended = listen::serve(
        listener,
        socket.clone(),
        engine.clone(),
        runtime.handle().clone(),
        calls.clone(),
    )?;
    engine.log_event(&format!(
        "serving the login socket {} ({})",
        socket.display(),
        match origin {
            listen::Origin::Activated => "from systemd",
            listen::Origin::Bound => "bound by otpd",
        }
    ));
    runtime.block_on(async {
        // Ready once the socket serves logins and the store is open; the bus follows on its own.
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        let handle = tokio::runtime::Handle::current();
        let outcome = tokio::select! {
            () = bus::serve(engine.clone(), address, handle, calls) => Ok(()),
            () = wait_for_stop() => Ok(()),
            () = store_fatal.notified() => Err(Error::System(
                "the store, or a task it needs, failed and did not recover; see the log above".into(),
            )),
            _ = login_ended => {
                // Every login would time out from now on: better restarted than up and broken.
                let why = "the login socket stopped serving; exiting so otpd is restarted";
                engine.log_event(why);
                Err(Error::System(why.into()))
            }
        };
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        engine.log_event("stopping");
        outcome
    })
}

/// Where a sled store's events go: one daemon line each (`prefix` names the store: "store: …",
/// "offline store: …"), with its own audit connection (a store sits below the engine), and
/// `fatal` fires on the failure it will not recover from.
fn store_report(prefix: &'static str, stderr: bool, fatal: &Arc<tokio::sync::Notify>) -> Report {
    let fatal = fatal.clone();
    let audit = Audit::new(stderr);
    Box::new(move |event| {
        audit.daemon(&format!("{prefix}{event}"));
        if matches!(event, StoreEvent::Fatal { .. }) {
            fatal.notify_one();
        }
    })
}

/// The store the config asks for: sled in the state directory, or a fleet's database (whose
/// audit table then gets every decision too). The notification fires when the store reports a
/// failure it will not recover from: otpd then exits non-zero so its supervisor restarts it.
/// sled's failures and recoveries are logged once each, with their own audit connection (the
/// store sits below the engine); the fleet's database reconnects by itself.
fn open_store(
    config: &Config,
    args: &Args,
    hostname: &str,
    runtime: &tokio::runtime::Handle,
) -> Result<(
    Box<dyn crate::store::Store>,
    Audit,
    Arc<tokio::sync::Notify>,
)> {
    let fatal = Arc::new(tokio::sync::Notify::new());
    let Some(fleet) = &config.fleet else {
        let store = SledStore::open_reporting(
            &config.state_dir.join("store"),
            store_report("", args.log_stderr, &fatal),
        )?;
        return Ok((Box::new(store), Audit::new(args.log_stderr), fatal));
    };
    let host = fleet.host.clone().unwrap_or_else(|| hostname.to_owned());
    let logger = |stderr: bool| -> Box<dyn Fn(&str) + Send + Sync> {
        let audit = Audit::new(stderr);
        Box::new(move |line: &str| audit.daemon(line))
    };
    let store = PgStore::open(
        fleet,
        host.clone(),
        runtime.clone(),
        logger(args.log_stderr),
    )?;
    let link = store.link().clone();
    let sink = FleetAudit::start(link.clone(), logger(args.log_stderr), fatal.clone());
    let audit = Audit::new(args.log_stderr).with_sink(Box::new(sink));
    audit.daemon(&format!(
        "fleet mode: host {host}, database {} (checked at the first login)",
        link.target().url
    ));
    // The offline side (docs/fleet.md, "Offline logins"): sealed under the same key as a sled
    // store's seeds; opened even with offline_window = 0, so a journal left from before is
    // still replayed and old packs are dropped.
    let key = SecretKey::load_or_create(&config.state_dir.join("secret.key"))?;
    let local = Local::open(
        &config.state_dir.join("offline"),
        key,
        store_report("offline ", args.log_stderr, &fatal),
    )?;
    let offline = Arc::new(Offline::new(
        local,
        fleet.offline_window,
        fleet.offline_keep,
        unix_now(),
    ));
    sync::start(
        offline.clone(),
        link,
        config.throttle.clone(),
        logger(args.log_stderr),
        fatal.clone(),
    );
    let store = FleetStore::new(store, offline, config.totp.skew, Box::new(unix_now));
    Ok((Box::new(store), audit, fatal))
}

/// Secrets stay in memory: no core dump of otpd (its memory holds the key and token secrets)
/// and no reading of its memory by processes of the same uid that lack CAP_SYS_PTRACE. First
/// thing in `main`, before the key is read. The unit adds `LimitCORE=0` for good measure.
fn keep_secrets_in_memory() {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) only changes this process's dumpable flag; the unused
    // arguments are zero as the kernel requires. It cannot fail with these arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// Keeps glibc's allocator from holding on to what otpd frees. Runs before any thread starts.
///
/// - One arena, shared by every thread. By default glibc gives up to eight per core to the
///   threads that allocate (otpd's blocking pool has up to 64), and each keeps the memory it
///   freed. A second arena alone held 17 MiB at a million users, more than half of it holes
///   between live blocks that the main heap's free space could have taken; with one, threads
///   fill those instead: a million users' peak 64 → 61 MiB, and 83 → 70 MiB after 64 callers.
///   glibc's per-thread cache serves most small blocks without the arena's lock, and the
///   benchmark saw no cost in speed.
/// - Free memory at the top of the heap goes back to the kernel above 128 KiB, glibc's
///   default, for good. Left alone, glibc raises that threshold to twice the largest block it
///   ever handed back with `munmap` (sled's 512 KiB log buffers, the import's big vectors), and
///   then keeps megabytes it no longer uses: 65.5 → 62.5 MiB at a million users. Fixing it
///   also fixes glibc's mmap threshold at 128 KiB, so sled's log buffers are mapped and
///   unmapped each time; the benchmark saw no cost in that.
///
/// Both measured in docs/performance.md ("What was tried").
fn tune_malloc() {
    // SAFETY: mallopt only sets allocator parameters; M_ARENA_MAX and M_TRIM_THRESHOLD with
    // positive values are valid at any time, and no other thread exists yet to race with them.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// Hands the memory freed so far back to the kernel. Opening the store (sled's recovery) frees
/// most of what it allocated, but glibc keeps freed heap for reuse: at a million users that was
/// 7 MiB of otpd's resident memory for the rest of its life (docs/performance.md).
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes the allocator's
    // own locks and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn wait_for_stop() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers otpd still serves; systemd's SIGKILL ends it and every
        // reported change is already durable.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// Creates the state directory 0700, or tightens an existing one we own; then checks it as
/// the start did with the part that existed: a directory someone else made in the meantime (in
/// a parent others may write to) is refused, not used.
fn prepare_state_dir(dir: &Path) -> Result<()> {
    let io = |e: std::io::Error| Error::System(format!("state directory {}: {e}", dir.display()));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    trust::check(dir, trust::Kind::Dir, trust::Owners::root_and_me(), false)
        .map_err(|untrusted| Error::System(format!("refusing to use {untrusted}")))
}
