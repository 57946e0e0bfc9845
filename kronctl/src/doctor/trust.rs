//! `file-trust`: otpd refuses to start when one of its files, or a directory on the way to
//! it, could be changed by anyone but root (like sshd's StrictModes); this reports the same,
//! with the same code (`kron_common::trust`) and the same list of files.

use std::path::Path;

use kron_common::config::DEFAULT_CONFIG_PATH;
use kron_common::trust::{self, Owners};

use super::config::Policy;
use super::{Finding, Findings, Root};

const CHECK: &str = "file-trust";

/// Checks the config (`--config FILE`, or the default under the root if it exists) and, when
/// the config could be read, the state directory, key, store and secret files it names.
pub fn check(root: &Root, explicit: Option<&Path>, policy: &Policy, out: &mut Findings) {
    if !out.wants(CHECK) {
        return;
    }
    // The default config by its plain path under the root (not one with its links already
    // resolved), so the walk below sees every link and directory on the way, as otpd's does.
    // An explicit `--config` is this machine's file, read as such.
    let config_path = match explicit {
        Some(path) => Some(path.to_path_buf()),
        None => root
            .exists(DEFAULT_CONFIG_PATH)
            .then(|| root.dir().join(DEFAULT_CONFIG_PATH.trim_start_matches('/'))),
    };
    let files = match &policy.config {
        Some(config) => trust::otpd_files(config, config_path.as_deref(), root.dir()),
        None => config_path
            .into_iter()
            .map(|path| (path, trust::Kind::File, false))
            .collect(),
    };
    let mut trusted = 0;
    // One finding per place at fault: a directory on the way to several files is named once.
    let mut reported = Vec::new();
    for (path, kind, missing_ok) in &files {
        let checked = if explicit == Some(path.as_path()) {
            trust::check(path, *kind, Owners::root(), *missing_ok)
        } else {
            trust::check_within(root.dir(), path, *kind, Owners::root(), *missing_ok)
        };
        match checked {
            Ok(()) => trusted += 1,
            Err(untrusted) if reported.contains(&untrusted.at) => {}
            Err(untrusted) => {
                reported.push(untrusted.at.clone());
                out.push(Finding::error(
                    CHECK,
                    format!("otpd refuses to start: {}", untrusted.what()),
                    untrusted.fix(),
                ));
            }
        }
    }
    if trusted == files.len() {
        out.push(Finding::ok(
            CHECK,
            format!(
                "otpd's config, state directory, key, store and secret files ({trusted}) and \
                 the directories on the way to them can be changed by root alone"
            ),
        ));
    }
}
