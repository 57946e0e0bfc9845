//! Pushing a host's local tokens into its fleet: a page at a time (`FleetPushPage`), and in one
//! answer (`FleetPush`) only up to a bound. The fleet here is a second engine's sled store: it
//! takes an import as the fleet's database does (`imported`, or `kept` where a token exists),
//! and the push between the two is the code `kronctl fleet push` runs; tests/tests/fleet.rs
//! pushes into a real PostgreSQL.

use super::*;
use kron_proto::{ImportResult, MAX_ONE_MESSAGE_USERS, MAX_PUSH_PAGE, MAX_USER_LEN};

const ADMIN: Caller = Caller::new(1003);
/// Local users with a token; `alice` has only a pending enrollment.
const LOCAL: u32 = 25;
/// Users the fleet has already, with tokens of its own.
const IN_THE_FLEET: [&str; 2] = ["user00003", "user00010"];

/// A host's own store: `count` users with tokens, and `alice` with none (same host key as
/// [`fleet`]'s, as on one host).
fn local_host(count: u32) -> Fixture {
    let f = fixture(Config::default());
    f.import_tokens(ROOT, tokens(numbered_users(count), 1), false, false, NOW)
        .unwrap();
    f.enroll(ROOT, "alice", "", NOW).unwrap();
    f
}

/// The fleet, holding [`IN_THE_FLEET`] with tokens of its own.
fn fleet() -> Fixture {
    let f = fixture(Config::default());
    let theirs = tokens(IN_THE_FLEET.map(String::from), 2);
    f.import_tokens(ROOT, theirs, false, false, NOW).unwrap();
    f
}

/// Every result, following `next` from the first page, and the pages it took.
fn walk(fleet: &Engine, local: &Engine, limit: u32) -> (Vec<ImportResult>, usize) {
    let (mut results, mut pages, mut after) = (Vec::new(), 0, String::new());
    loop {
        let (page, next) = fleet.push_page(ROOT, &*local.store, &after, limit).unwrap();
        assert!(page.len() <= limit as usize);
        pages += 1;
        results.extend(page);
        if next.is_empty() {
            return (results, pages);
        }
        assert_eq!(
            Some(&next),
            results.last().map(|r| &r.user),
            "next is the page's last user"
        );
        after = next;
    }
}

/// What pushing [`local_host`] into [`fleet`] answers, in the order of names.
fn expected() -> Vec<ImportResult> {
    let result = |user: &str, outcome: &str, reason: &str| ImportResult {
        user: user.into(),
        outcome: outcome.into(),
        reason: reason.into(),
    };
    let mut all = vec![result(
        "alice",
        "skipped",
        "no confirmed token on this host",
    )];
    all.extend(
        numbered_users(LOCAL).map(|user| match IN_THE_FLEET.contains(&user.as_str()) {
            true => result(
                &user,
                "conflict",
                "already enrolled in the fleet; the fleet's token stays",
            ),
            false => result(&user, "pushed", ""),
        }),
    );
    all
}

/// The seed the fleet holds for `user`.
fn seed(fleet: &Engine, user: &str) -> Vec<u8> {
    let token = fleet.store.get(user).unwrap().unwrap().token.unwrap();
    fleet.key.open(user, &token.secret).unwrap().to_vec()
}

#[test]
fn pages_push_every_local_user_once_and_the_fleet_keeps_its_own_tokens() {
    let local = local_host(LOCAL);
    let users = LOCAL as usize + 1;
    for (limit, pages) in [
        (1, users),
        (4, users.div_ceil(4)),
        // A store that fills its last page exactly needs no call that finds nothing.
        (13, 2),
        (26, 1),
        (MAX_PUSH_PAGE, 1),
    ] {
        let fleet = fleet();
        assert_eq!(
            walk(&fleet, &local, limit),
            (expected(), pages),
            "pages of {limit}"
        );
        assert_eq!(seed(&fleet, "user00005"), seed(&local, "user00005"));
        assert_ne!(seed(&fleet, "user00003"), seed(&local, "user00003"));
        assert!(fleet.store.get("alice").unwrap().is_none());
    }
    // The one-message push answers the same.
    let fleet = fleet();
    assert_eq!(fleet.push_whole(ROOT, &*local.store).unwrap(), expected());
}

#[test]
fn after_is_a_position_and_a_page_pushes_only_its_own_users() {
    let local = local_host(LOCAL);
    let fleet = fleet();
    let names = |page: &[ImportResult]| -> Vec<String> {
        page.iter().map(|result| result.user.clone()).collect()
    };
    let (page, next) = fleet
        .push_page(ROOT, &*local.store, "user00009", 3)
        .unwrap();
    assert_eq!(names(&page), ["user00010", "user00011", "user00012"]);
    assert_eq!(page[0].outcome, "conflict");
    assert_eq!(next, "user00012");
    assert!(fleet.store.get("user00009").unwrap().is_none());
    assert!(fleet.store.get("user00013").unwrap().is_none());
    let (page, _) = fleet
        .push_page(ROOT, &*local.store, "user00009x", 1)
        .unwrap();
    assert_eq!(names(&page), ["user00010"]);
    let (page, _) = fleet.push_page(ROOT, &*local.store, "b", 1).unwrap();
    assert_eq!(names(&page), ["user00000"]);
    for after in ["user00024", "zzz"] {
        let (page, next) = fleet.push_page(ROOT, &*local.store, after, 10).unwrap();
        assert!(page.is_empty() && next.is_empty(), "after {after}");
    }
    let empty = fixture(Config::default());
    assert_eq!(
        fleet.push_page(ROOT, &*empty.store, "", 10).unwrap(),
        (Vec::new(), String::new())
    );
}

/// Running the push again (after a failure half-way, say) changes nothing in the fleet: the
/// users pushed before are conflicts, their fleet token the one pushed.
#[test]
fn pushing_again_changes_nothing() {
    let local = local_host(LOCAL);
    let fleet = fleet();
    walk(&fleet, &local, 7);
    let before = fleet.store.page(None, 100).unwrap();
    let (again, _) = walk(&fleet, &local, 7);
    assert_eq!(fleet.store.page(None, 100).unwrap(), before);
    assert_eq!(again[0].outcome, "skipped");
    assert!(again[1..].iter().all(|result| result.outcome == "conflict"));
    assert_eq!(again.len(), LOCAL as usize + 1);
}

/// `FleetPush` answers in one message: up to its bound, and past it refuses, naming the paged
/// method, before anything is pushed.
#[test]
fn the_one_message_push_is_refused_past_its_bound_before_it_pushes() {
    let bound = u32::try_from(MAX_ONE_MESSAGE_USERS).unwrap();
    // With alice, one user more than the bound.
    let local = local_host(bound);
    let fleet = fixture(Config::default());
    match fleet.push_whole(ROOT, &*local.store) {
        Err(Error::Conflict(text)) => assert!(text.contains("FleetPushPage"), "{text}"),
        other => panic!("{:?}", other.map(|results| results.len())),
    }
    assert!(fleet.store.page(None, 1).unwrap().is_empty(), "pushed");

    assert!(local.reset(ROOT, "alice").unwrap());
    let results = fleet.push_whole(ROOT, &*local.store).unwrap();
    assert_eq!(results.len(), MAX_ONE_MESSAGE_USERS);
    assert!(results.iter().all(|result| result.outcome == "pushed"));
}

/// Authorize first, then validate: only root may push, and a caller without the right learns
/// nothing from the error, whatever it sent; root's bad arguments are refused without echo.
#[test]
fn only_root_may_push_and_others_are_refused_before_their_arguments_are_looked_at() {
    let f = local_host(3);
    let e = &f.engine;
    let long = "ECHO-MARKER".repeat(MAX_USER_LEN / 11 + 1);
    for caller in [ALICE, BOB, ADMIN] {
        for (after, limit) in [("", 10), ("", 0), (long.as_str(), 10), ("", u32::MAX)] {
            assert!(
                matches!(
                    e.fleet_push_page(caller, after, limit),
                    Err(Error::AccessDenied(_))
                ),
                "uid {} after {} bytes, limit {limit}",
                caller.uid,
                after.len()
            );
        }
        assert!(matches!(e.fleet_push(caller), Err(Error::AccessDenied(_))));
    }
    for limit in [0, MAX_PUSH_PAGE + 1, u32::MAX] {
        match e.fleet_push_page(ROOT, "", limit) {
            Err(Error::InvalidArgument(text)) => {
                assert!(text.contains(&MAX_PUSH_PAGE.to_string()), "{text}");
                assert!(!text.contains(&limit.to_string()) || limit == 0, "{text}");
            }
            other => panic!("limit {limit}: {other:?}"),
        }
    }
    match e.fleet_push_page(ROOT, &long, 10) {
        Err(Error::InvalidArgument(text)) => assert!(!text.contains("ECHO"), "{text}"),
        other => panic!("{other:?}"),
    }
    // Good arguments on a host without a fleet: nothing to push to.
    for refused in [
        e.fleet_push_page(ROOT, "", 10).map(drop),
        e.fleet_push(ROOT).map(drop),
    ] {
        match refused {
            Err(Error::Conflict(text)) => assert!(text.contains("[fleet]"), "{text}"),
            other => panic!("{other:?}"),
        }
    }
}
