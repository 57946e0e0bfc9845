//! Whose subordinate uids are whose (`/etc/subuid`), so that the login socket charges a
//! connection from a rootless container's uid to the person who owns that uid's range.
//!
//! The socket's thread serves every login and must never wait: it only looks a uid up in a
//! table held in memory ([`SubordinateUids::owner_of`], a binary search). A task on otpd's
//! runtime keeps that table: every few seconds it checks the file (a few `stat`s) and reads it
//! again, asking NSS for its owners' uids, only when the file changed.
//!
//! - The file is trusted only if root owns it and nobody else can write it or the path to it
//!   (design invariant 11). A file that is not trusted, missing, unreadable or larger than
//!   [`MAX_BYTES`] gives no ranges: every uid is charged as itself. Each such state is logged
//!   once, when it begins.
//! - A line is `owner:first:count`, the owner a name (looked up through NSS) or a uid. A
//!   malformed line, or one whose range runs past the last uid, is skipped. Lines whose ranges
//!   overlap give the uids of all of them no owner (newuidmap grants each owner their line
//!   whatever the others say). A range whose owner NSS does not know gives its uids no owner:
//!   each is charged as itself. Blank lines and
//!   lines starting with `#` are ignored. Such lines are logged, with their numbers, once per
//!   version of the file.
//! - Ranges owned by root are left out: their uids are charged as themselves, not to root,
//!   whose connections (sshd's, sudo's) have a limit of their own that a container of root's
//!   must not eat. Root itself and an owner's own uid are always charged as themselves.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use kron_common::trust;

/// Where the subordinate uids of each user are listed (shadow's `useradd`, `usermod -v`).
pub const SUBUID: &str = "/etc/subuid";
/// How often the file is looked at. A range added by `useradd` counts within this.
const LOOK_EVERY: Duration = Duration::from_secs(5);
/// Largest file read. A range a line takes about 30 bytes: this is over a hundred thousand.
const MAX_BYTES: u64 = 4 << 20;
/// Most ranges kept; the lines after are skipped. 65,536 ranges of 65,536 uids (`useradd`'s
/// default) are every uid there is.
const MAX_RANGES: usize = 65_536;
/// Faulty lines logged one by one, per version of the file; the rest are counted.
const MAX_FAULTS_LOGGED: usize = 5;

/// The table the login socket looks uids up in, shared with the task that keeps it.
#[derive(Clone, Default)]
pub struct SubordinateUids {
    current: Arc<RwLock<Ranges>>,
}

impl SubordinateUids {
    /// The owner whose connections `uid`'s count as, if `uid` is someone's subordinate uid.
    pub fn owner_of(&self, uid: u32) -> Option<u32> {
        let ranges = self.current.read().unwrap_or_else(PoisonError::into_inner);
        ranges.owner_of(uid)
    }

    /// A table of the ranges of `text` that never changes (unit tests; owners are uids).
    #[cfg(test)]
    pub fn fixed(text: &str) -> SubordinateUids {
        let parsed = parse(text.as_bytes(), &mut |_: &str| Ok(None));
        SubordinateUids {
            current: Arc::new(RwLock::new(parsed.ranges)),
        }
    }

    /// Starts keeping a table of the ranges in `path` on `runtime`, saying what becomes of
    /// the file to `log`; the table is empty until the file is first read.
    pub fn watch(
        path: PathBuf,
        runtime: &tokio::runtime::Handle,
        log: impl Fn(&str) + Send + Sync + 'static,
    ) -> SubordinateUids {
        let uids = SubordinateUids::default();
        let mut watcher = Watcher::new(path, uids.clone(), Box::new(log), Box::new(nss_uid));
        runtime.spawn(async move {
            loop {
                // The file and NSS may make a thread wait: never one of the runtime's workers.
                watcher = match tokio::task::spawn_blocking(move || {
                    watcher.look();
                    watcher
                })
                .await
                {
                    Ok(watcher) => watcher,
                    // A panic (none is known): the table stays as it was, for otpd's life.
                    Err(_) => return,
                };
                tokio::time::sleep(LOOK_EVERY).await;
            }
        });
        uids
    }

    /// Puts `ranges` in place unless they are those in place already.
    fn replace(&self, ranges: Ranges) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if *current != ranges {
            *current = ranges;
        }
    }
}

/// One range, its owner's uid known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    first: u32,
    last: u32,
    owner: u32,
}

/// The ranges of one reading of the file that charge their uids to someone else: sorted by
/// their first uid, none overlapping another.
#[derive(Debug, Default, PartialEq, Eq)]
struct Ranges {
    sorted: Vec<Range>,
}

impl Ranges {
    /// The owner of the range `uid` is in, unless that is `uid` itself; never for root.
    fn owner_of(&self, uid: u32) -> Option<u32> {
        let after = self.sorted.partition_point(|range| range.first <= uid);
        let range = self.sorted.get(after.checked_sub(1)?)?;
        (uid != 0 && uid <= range.last && range.owner != uid).then_some(range.owner)
    }

    fn owners(&self) -> usize {
        let owners: HashSet<u32> = self.sorted.iter().map(|range| range.owner).collect();
        owners.len()
    }
}

/// What is wrong with a line of the file: it is skipped, or its uids get no owner.
#[derive(Debug)]
enum Fault {
    /// Not `owner:first:count` with decimal numbers and a count of at least one.
    Malformed,
    /// `first + count` is past the last uid.
    PastLastUid,
    /// Its range overlaps that of the line with this number: newuidmap grants both, so the
    /// uids of both (and of any other line they overlap) are owned by nobody.
    Overlaps(usize),
    /// NSS knows no user of that name: the range is kept, its uids owned by nobody.
    UnknownOwner,
    /// NSS could not answer (a directory server down): the file is read again later.
    Lookup(nix::Error),
    /// [`MAX_RANGES`] ranges came before it.
    TooMany,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Malformed => f.write_str("not owner:first:count; line skipped"),
            Fault::PastLastUid => f.write_str("the range runs past the last uid; line skipped"),
            Fault::Overlaps(line) => write!(
                f,
                "the range overlaps that of line {line}; the uids of both count as themselves"
            ),
            Fault::UnknownOwner => f.write_str("no such user; its uids count as themselves"),
            Fault::Lookup(e) => write!(
                f,
                "the owner could not be looked up ({e}); its uids count as themselves until it can"
            ),
            Fault::TooMany => write!(f, "more than {MAX_RANGES} ranges; the rest skipped"),
        }
    }
}

/// What one reading made of the file.
#[derive(Debug, Default)]
struct Parsed {
    ranges: Ranges,
    /// The lines not taken as written (numbered from 1), in file order.
    faults: Vec<(usize, Fault)>,
}

impl Parsed {
    /// Whether an owner could not be looked up, so that the same file is to be read again.
    fn incomplete(&self) -> bool {
        self.faults
            .iter()
            .any(|(_, why)| matches!(why, Fault::Lookup(_)))
    }
}

/// `count` `thing`s, in words.
fn counted(count: usize, thing: &str) -> String {
    match count {
        1 => format!("1 {thing}"),
        _ => format!("{count} {thing}s"),
    }
}

/// The uid of the user `name` through NSS.
fn nss_uid(name: &str) -> Result<Option<u32>, nix::Error> {
    Ok(nix::unistd::User::from_name(name)?.map(|user| user.uid.as_raw()))
}

/// A decimal number, digits only (`str::parse` would take a sign too).
fn number(text: &str) -> Option<u32> {
    text.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse().ok())
        .flatten()
}

/// A line's owner (as written) and range, or what is wrong with it.
fn fields(line: &str) -> Result<(&str, u32, u32), Fault> {
    let mut parts = line.split(':');
    let (Some(owner), Some(first), Some(count), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Fault::Malformed);
    };
    let (Some(first), Some(count)) = (number(first), number(count)) else {
        return Err(Fault::Malformed);
    };
    if owner.is_empty() || count == 0 {
        return Err(Fault::Malformed);
    }
    let last = first.checked_add(count - 1).ok_or(Fault::PastLastUid)?;
    Ok((owner, first, last))
}

/// Reads the lines of `text`, owners' names looked up with `resolve` (once per name).
fn parse(text: &[u8], resolve: &mut dyn FnMut(&str) -> Result<Option<u32>, nix::Error>) -> Parsed {
    let mut parsed = Parsed::default();
    // Every range that counts, by first uid: its last uid, its owner (`None`: unknown, its
    // uids charged as themselves) and its line.
    let mut taken: BTreeMap<u32, (u32, Option<u32>, usize)> = BTreeMap::new();
    let mut known: HashMap<String, Option<u32>> = HashMap::new();
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        let Ok(line) = std::str::from_utf8(line) else {
            parsed.faults.push((number, Fault::Malformed));
            continue;
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if taken.len() >= MAX_RANGES {
            parsed.faults.push((number, Fault::TooMany));
            break;
        }
        let (owner, first, last) = match fields(line) {
            Ok(fields) => fields,
            Err(why) => {
                parsed.faults.push((number, why));
                continue;
            }
        };
        // The ranges taken are disjoint and sorted: those that reach into this one are the
        // last ones starting at or before `last`, back to the first that ends before `first`.
        // newuidmap lets each owner map their line whatever the others say, so a uid two lines
        // claim is nobody's to be charged to: the overlapping lines become one range of
        // nobody's, which a later line overlapping it joins too.
        let overlapped: Vec<(u32, u32, usize)> = taken
            .range(..=last)
            .rev()
            .take_while(|(_, (end, _, _))| *end >= first)
            .map(|(&start, &(end, _, line))| (start, end, line))
            .collect();
        if let Some(&(_, _, earlier)) = overlapped.last() {
            parsed.faults.push((number, Fault::Overlaps(earlier)));
            let start = overlapped.iter().map(|o| o.0).fold(first, u32::min);
            let end = overlapped.iter().map(|o| o.1).fold(last, u32::max);
            for (start, _, _) in &overlapped {
                taken.remove(start);
            }
            taken.insert(start, (end, None, number));
            continue;
        }
        let uid = match number_or_name(owner, &mut known, resolve) {
            Ok(uid) => Some(uid),
            Err(why) => {
                parsed.faults.push((number, why));
                None
            }
        };
        taken.insert(first, (last, uid, number));
    }
    parsed.ranges.sorted = taken
        .into_iter()
        .filter_map(|(first, (last, owner, _))| {
            Some(Range {
                first,
                last,
                owner: owner?,
            })
        })
        // Root's ranges charge their uids as themselves (see the top of this file).
        .filter(|range| range.owner != 0)
        .collect();
    parsed
}

/// The uid of `owner`: a number as it is, a name through `resolve` (remembered in `known`).
fn number_or_name(
    owner: &str,
    known: &mut HashMap<String, Option<u32>>,
    resolve: &mut dyn FnMut(&str) -> Result<Option<u32>, nix::Error>,
) -> Result<u32, Fault> {
    if let Some(uid) = number(owner) {
        return Ok(uid);
    }
    let uid = match known.get(owner) {
        Some(uid) => *uid,
        None => {
            let uid = resolve(owner).map_err(Fault::Lookup)?;
            known.insert(owner.to_owned(), uid);
            uid
        }
    };
    uid.ok_or(Fault::UnknownOwner)
}

/// A version of the file: it is read again only when this changes (`ctime` changes with its
/// owner and mode too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Version {
    fn of(meta: &std::fs::Metadata) -> Version {
        Version {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// How owners' names become uids: NSS, or a fake in tests.
type Resolve = Box<dyn FnMut(&str) -> Result<Option<u32>, nix::Error> + Send>;

/// Keeps a [`SubordinateUids`] in step with the file.
struct Watcher {
    path: PathBuf,
    uids: SubordinateUids,
    log: Box<dyn Fn(&str) + Send + Sync>,
    resolve: Resolve,
    /// The version whose ranges are in place, unless an owner could not be looked up.
    read: Option<Version>,
    /// The version whose faults were logged.
    reported: Option<Version>,
    /// What was last said of the file, so that each state is said once.
    said: String,
}

impl Watcher {
    fn new(
        path: PathBuf,
        uids: SubordinateUids,
        log: Box<dyn Fn(&str) + Send + Sync>,
        resolve: Resolve,
    ) -> Watcher {
        Watcher {
            path,
            uids,
            log,
            resolve,
            read: None,
            reported: None,
            said: String::new(),
        }
    }

    /// Looks at the file, and reads it if it changed.
    fn look(&mut self) {
        match self.read_if_changed() {
            Ok(None) => {}
            Ok(Some((version, parsed))) => {
                if self.reported != Some(version) {
                    self.report_faults(&parsed.faults);
                    self.reported = Some(version);
                }
                // An owner NSS could not look up is looked up again at the next look.
                self.read = (!parsed.incomplete()).then_some(version);
                let ranges = parsed.ranges;
                let state = match ranges.sorted.len() {
                    0 => format!("{} lists no subordinate uids", self.path.display()),
                    count => format!(
                        "{} lists {} of {}; a connection to the login socket from one of their \
                         uids counts as its owner's",
                        self.path.display(),
                        counted(count, "range"),
                        counted(ranges.owners(), "user"),
                    ),
                };
                self.uids.replace(ranges);
                self.say(state);
            }
            Err(why) => {
                self.read = None;
                self.uids.replace(Ranges::default());
                self.say(format!(
                    "{why}; every uid's connections to the login socket count as its own"
                ));
            }
        }
    }

    /// The file's version and what it holds, if it is trusted and changed since it was read;
    /// else why it gives no ranges.
    fn read_if_changed(&mut self) -> Result<Option<(Version, Parsed)>, String> {
        let path = self.path.display();
        // The path each time too (a few `stat`s): a directory on the way made writable counts.
        trust::check(
            &self.path,
            trust::Kind::File,
            trust::Owners::root_and_me(),
            true,
        )
        .map_err(|untrusted| format!("refusing to use {untrusted}"))?;
        // What is read is what is checked: the opened file, not whatever is at the path now.
        let (file, meta) = trust::open_trusted(
            &self.path,
            trust::Kind::File,
            trust::Owners::root_and_me(),
            trust::FinalLink::Follow,
        )
        .map_err(|untrusted| match &untrusted.problem {
            trust::Problem::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
                format!("{path} does not exist")
            }
            trust::Problem::Io(e) => format!("cannot read {path}: {e}"),
            _ => format!("refusing to use {untrusted}"),
        })?;
        let version = Version::of(&meta);
        if self.read == Some(version) {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        file.take(MAX_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {path}: {e}"))?;
        if bytes.len() as u64 > MAX_BYTES {
            return Err(format!("{path} is larger than {} MiB", MAX_BYTES >> 20));
        }
        Ok(Some((version, parse(&bytes, &mut self.resolve))))
    }

    fn report_faults(&self, faults: &[(usize, Fault)]) {
        let path = self.path.display();
        for (line, why) in faults.iter().take(MAX_FAULTS_LOGGED) {
            (self.log)(&format!("{path}:{line}: {why}"));
        }
        if faults.len() > MAX_FAULTS_LOGGED {
            (self.log)(&format!(
                "{path}: {} more lines not taken as written",
                faults.len() - MAX_FAULTS_LOGGED
            ));
        }
    }

    fn say(&mut self, state: String) {
        if state != self.said {
            (self.log)(&format!("subordinate uids: {state}"));
            self.said = state;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// NSS of the tests: alice is 1000, bob 1001, toor 0; "down" cannot be looked up.
    fn fake_nss(name: &str) -> Result<Option<u32>, nix::Error> {
        match name {
            "alice" => Ok(Some(1000)),
            "bob" => Ok(Some(1001)),
            "toor" => Ok(Some(0)),
            "down" => Err(nix::Error::ETIMEDOUT),
            _ => Ok(None),
        }
    }

    fn parsed(text: &str) -> Parsed {
        parse(text.as_bytes(), &mut fake_nss)
    }

    /// The faulty lines' numbers and faults, as the log words them.
    fn faults(parsed: &Parsed) -> Vec<(usize, String)> {
        let faults = parsed.faults.iter();
        faults.map(|(line, why)| (*line, why.to_string())).collect()
    }

    #[test]
    fn names_and_numbers_own_ranges_and_comments_and_blank_lines_are_ignored() {
        let parsed = parsed(
            "# useradd's ranges\n\nalice:100000:65536\n  \n1001:165536:65536\r\n\
             carol:231072:10\n2000:300000:1\n",
        );
        assert_eq!(
            faults(&parsed),
            [(6, "no such user; its uids count as themselves".to_string())],
            "carol is unknown to NSS"
        );
        let ranges = &parsed.ranges;
        assert_eq!(ranges.owner_of(100_000), Some(1000));
        assert_eq!(ranges.owner_of(165_535), Some(1000));
        assert_eq!(ranges.owner_of(165_536), Some(1001), "by uid");
        assert_eq!(ranges.owner_of(231_071), Some(1001));
        assert_eq!(ranges.owner_of(231_072), None, "carol's: as themselves");
        assert_eq!(
            ranges.owner_of(300_000),
            Some(2000),
            "a uid NSS need not know"
        );
        for outside in [0, 1000, 99_999, 300_001, u32::MAX] {
            assert_eq!(ranges.owner_of(outside), None, "{outside}");
        }
        assert_eq!(ranges.owners(), 3);
    }

    #[test]
    fn malformed_lines_are_skipped_with_their_numbers() {
        let mut text = String::from("alice:100000:65536\n");
        for line in [
            "alice:200000",
            "alice:200000:10:1",
            ":200000:10",
            "alice:x:10",
            "alice:+200000:10",
            "alice:-1:10",
            "alice:200000:0",
            "alice:200000: 10",
            "alice:99999999999:10",
        ] {
            text.push_str(line);
            text.push('\n');
        }
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(b"alice:\xff:1\nbob:300000:10\n");
        let parsed = parse(&bytes, &mut fake_nss);
        let lines: Vec<usize> = parsed.faults.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, (2..=11).collect::<Vec<_>>());
        assert!(
            faults(&parsed)
                .iter()
                .all(|(_, why)| why == "not owner:first:count; line skipped")
        );
        assert_eq!(parsed.ranges.owner_of(100_000), Some(1000));
        assert_eq!(parsed.ranges.owner_of(300_009), Some(1001), "after them");
        assert_eq!(parsed.ranges.owner_of(200_000), None);
    }

    #[test]
    fn a_range_past_the_last_uid_is_skipped_and_one_up_to_it_is_kept() {
        let parsed = parsed("alice:4294967295:2\nalice:4294967000:300\nbob:4294967295:1\n");
        assert_eq!(
            faults(&parsed),
            [
                (
                    1,
                    "the range runs past the last uid; line skipped".to_string()
                ),
                (
                    2,
                    "the range runs past the last uid; line skipped".to_string()
                ),
            ]
        );
        assert_eq!(parsed.ranges.owner_of(u32::MAX), Some(1001));
        assert_eq!(parsed.ranges.owner_of(4_294_967_000), None);
    }

    #[test]
    fn uids_two_lines_claim_are_nobodys() {
        let parsed = parsed(
            "alice:100000:100\nbob:100050:100\n1002:300000:10\n1003:300020:10\n\
             1004:300005:20\nbob:400000:10\n",
        );
        let overlap = |line: usize| {
            format!("the range overlaps that of line {line}; the uids of both count as themselves")
        };
        assert_eq!(
            faults(&parsed),
            [(2, overlap(1)), (5, overlap(3))],
            "line 5 reaches into lines 3 and 4: the first of them is named"
        );
        let ranges = &parsed.ranges;
        // Neither alice nor bob may charge the other: bob could map alice's uids, and alice his.
        for uid in [100_000, 100_049, 100_050, 100_099, 100_149] {
            assert_eq!(ranges.owner_of(uid), None, "{uid}");
        }
        assert_eq!(ranges.owner_of(100_150), None, "past both");
        // Three lines joined into one range of nobody's.
        for uid in [300_000, 300_005, 300_024, 300_029] {
            assert_eq!(ranges.owner_of(uid), None, "{uid}");
        }
        // A line of bob's that overlaps nothing still counts.
        assert_eq!(ranges.owner_of(400_005), Some(1001));
    }

    #[test]
    fn root_and_owners_count_as_themselves() {
        let parsed = parsed("0:100000:10\ntoor:200000:10\nalice:0:1001\nbob:1001:1\n");
        assert!(parsed.faults.is_empty());
        let ranges = &parsed.ranges;
        assert_eq!(ranges.owner_of(100_005), None, "root's range");
        assert_eq!(ranges.owner_of(200_005), None, "root's range, by name");
        assert_eq!(ranges.owner_of(0), None, "root, in alice's range");
        assert_eq!(ranges.owner_of(1000), None, "alice, in her own range");
        assert_eq!(ranges.owner_of(500), Some(1000));
        assert_eq!(ranges.owner_of(1001), None, "bob, his own range");
    }

    #[test]
    fn an_owner_nss_cannot_look_up_leaves_the_reading_incomplete() {
        let parsed = parsed("down:100000:10\nalice:200000:10\n");
        assert!(parsed.incomplete());
        assert_eq!(parsed.faults.len(), 1);
        assert_eq!(parsed.ranges.owner_of(200_000), Some(1000));
        assert!(!self::parsed("alice:200000:10\n").incomplete());
    }

    #[test]
    fn each_name_is_looked_up_once_and_ranges_past_the_most_are_skipped() {
        let mut lookups = 0;
        let mut text = String::new();
        for index in 0..=MAX_RANGES as u32 {
            text.push_str(&format!("alice:{}:10\n", 100_000 + index * 10));
        }
        let parsed = parse(text.as_bytes(), &mut |name: &str| {
            lookups += 1;
            fake_nss(name)
        });
        assert_eq!(lookups, 1);
        assert_eq!(parsed.ranges.sorted.len(), MAX_RANGES);
        assert_eq!(
            faults(&parsed),
            [(
                MAX_RANGES + 1,
                format!("more than {MAX_RANGES} ranges; the rest skipped")
            )]
        );
    }

    /// What a watcher logged.
    type Lines = Arc<Mutex<Vec<String>>>;

    /// A watcher of `path` with [`fake_nss`], its log lines and the lookups it made.
    fn watcher(path: &Path) -> (Watcher, Lines, Arc<AtomicUsize>) {
        let lines = Lines::default();
        let lookups = Arc::new(AtomicUsize::new(0));
        let log = {
            let lines = lines.clone();
            Box::new(move |line: &str| lines.lock().unwrap().push(line.to_owned()))
        };
        let resolve = {
            let lookups = lookups.clone();
            Box::new(move |name: &str| {
                lookups.fetch_add(1, Ordering::Relaxed);
                fake_nss(name)
            })
        };
        let watcher = Watcher::new(path.to_owned(), SubordinateUids::default(), log, resolve);
        (watcher, lines, lookups)
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn the_file_is_read_when_it_changes_and_each_state_is_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subuid");
        let (mut watcher, lines, lookups) = watcher(&path);
        let uids = watcher.uids.clone();

        watcher.look();
        watcher.look();
        assert_eq!(uids.owner_of(100_000), None);
        std::fs::write(&path, "alice:100000:65536\nnonsense\n").unwrap();
        chmod(&path, 0o644);
        watcher.look();
        assert_eq!(uids.owner_of(100_000), Some(1000));
        watcher.look();
        watcher.look();
        assert_eq!(
            lookups.load(Ordering::Relaxed),
            1,
            "read once while unchanged"
        );
        std::fs::write(&path, "alice:100000:65536\nbob:200000:10\nnonsense\n").unwrap();
        watcher.look();
        assert_eq!(uids.owner_of(200_000), Some(1001));
        let path_text = path.display();
        assert_eq!(
            *lines.lock().unwrap(),
            [
                format!(
                    "subordinate uids: {path_text} does not exist; every uid's connections to \
                     the login socket count as its own"
                ),
                format!("{path_text}:2: not owner:first:count; line skipped"),
                format!(
                    "subordinate uids: {path_text} lists 1 range of 1 user; a connection to \
                     the login socket from one of their uids counts as its owner's"
                ),
                format!("{path_text}:3: not owner:first:count; line skipped"),
                format!(
                    "subordinate uids: {path_text} lists 2 ranges of 2 users; a connection to \
                     the login socket from one of their uids counts as its owner's"
                ),
            ]
        );
    }

    #[test]
    fn a_file_others_may_change_or_too_large_gives_no_ranges_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subuid");
        std::fs::write(&path, "alice:100000:65536\n").unwrap();
        chmod(&path, 0o644);
        let (mut watcher, lines, _) = watcher(&path);
        let uids = watcher.uids.clone();
        watcher.look();
        assert_eq!(uids.owner_of(100_000), Some(1000));

        chmod(&path, 0o666);
        watcher.look();
        watcher.look();
        assert_eq!(uids.owner_of(100_000), None, "writable by others");
        chmod(&path, 0o644);
        watcher.look();
        assert_eq!(uids.owner_of(100_000), Some(1000), "trusted again");
        chmod(dir.path(), 0o777);
        watcher.look();
        assert_eq!(
            uids.owner_of(100_000),
            None,
            "its directory writable by others"
        );
        chmod(dir.path(), 0o700);

        let mut large = "alice:100000:65536\n".repeat(1 + MAX_BYTES as usize / 19);
        large.truncate(MAX_BYTES as usize + 1);
        std::fs::write(&path, large).unwrap();
        watcher.look();
        watcher.look();
        assert_eq!(uids.owner_of(100_000), None, "too large");

        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(
            lines[1].contains("is writable by group or others"),
            "{lines:#?}"
        );
        assert!(lines[1].ends_with("count as its own"), "{lines:#?}");
        assert!(lines[3].contains("the directory"), "{lines:#?}");
        assert!(lines[4].contains("is larger than 4 MiB"), "{lines:#?}");
    }
}
