//! Every account NSS can list (`getpwent`), for `kronctl import --all-homes`.
#![allow(unsafe_code)]

use std::ffi::{CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// An account as `--all-homes` looks at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
}

/// Every account NSS lists (`getpwent`): local ones, and directory services that enumerate.
pub fn accounts() -> Vec<Account> {
    let mut accounts = Vec::new();
    // SAFETY: setpwent/getpwent/endpwent share one static iterator in the C library; kronctl
    // calls them only here, from its one thread, before any other thread exists (the D-Bus
    // connection is made later). Each returned record is copied out before the next call.
    unsafe {
        libc::setpwent();
        loop {
            let entry = libc::getpwent();
            if entry.is_null() {
                break;
            }
            let entry = &*entry;
            if entry.pw_name.is_null() || entry.pw_dir.is_null() {
                continue;
            }
            let name = CStr::from_ptr(entry.pw_name).to_string_lossy().into_owned();
            let home = PathBuf::from(OsStr::from_bytes(CStr::from_ptr(entry.pw_dir).to_bytes()));
            accounts.push(Account {
                name,
                uid: entry.pw_uid,
                home,
            });
        }
        libc::endpwent();
    }
    accounts
}
