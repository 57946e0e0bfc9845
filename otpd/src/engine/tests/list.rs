//! Listing the store: a page at a time (`ListPage`), and whole in one answer (`List`, and
//! `Export`'s one message) only up to a bound.

use super::*;
use kron_proto::{MAX_LIST_PAGE, MAX_ONE_MESSAGE_USERS, MAX_USER_LEN, UserStatus};

const ADMIN: Caller = Caller::new(1003);

/// Stores `count` users named `user00000`, `user00001`, … (imported: no accounts needed).
fn store_users(engine: &Engine, count: u32) {
    engine
        .import_tokens(ROOT, tokens(numbered_users(count), 0), false, false, NOW)
        .unwrap();
}

fn names(page: &[UserStatus]) -> Vec<String> {
    page.iter().map(|status| status.user.clone()).collect()
}

/// Every user, following `next` from the first page, and the pages it took.
fn walk(engine: &Engine, caller: Caller, limit: u32) -> (Vec<String>, usize) {
    let (mut users, mut pages, mut after) = (Vec::new(), 0, String::new());
    loop {
        let (page, next) = engine.list_page(caller, &after, limit, NOW).unwrap();
        assert!(page.len() <= limit as usize);
        pages += 1;
        users.extend(names(&page));
        if next.is_empty() {
            return (users, pages);
        }
        assert_eq!(Some(&next), users.last(), "next is the page's last user");
        after = next;
    }
}

#[test]
fn pages_follow_each_other_and_the_last_says_so() {
    let f = fixture(Config::default());
    let e = &f.engine;
    store_users(e, 25);
    let all: Vec<String> = (0..25).map(|i| format!("user{i:05}")).collect();
    assert_eq!(names(&e.list(ROOT, NOW).unwrap()), all);

    assert_eq!(walk(e, ROOT, 10), (all.clone(), 3));
    // A store that fills its last page exactly needs no call that finds nothing.
    assert_eq!(walk(e, ROOT, 5), (all.clone(), 5));
    assert_eq!(walk(e, ROOT, 25), (all.clone(), 1));
    assert_eq!(walk(e, ROOT, MAX_LIST_PAGE), (all.clone(), 1));
    // An admin who is not root pages the same.
    assert_eq!(walk(e, ADMIN, 7), (all.clone(), 4));

    // `after` is a position: the users after it, whether or not it names one.
    let (page, next) = e.list_page(ROOT, "user00009", 3, NOW).unwrap();
    assert_eq!(names(&page), ["user00010", "user00011", "user00012"]);
    assert_eq!(next, "user00012");
    let (page, _) = e.list_page(ROOT, "user00009x", 1, NOW).unwrap();
    assert_eq!(names(&page), ["user00010"]);
    let (page, _) = e.list_page(ROOT, "a", 1, NOW).unwrap();
    assert_eq!(names(&page), ["user00000"]);
    let (page, next) = e.list_page(ROOT, "user00024", 10, NOW).unwrap();
    assert!(page.is_empty() && next.is_empty());
    let (page, next) = e.list_page(ROOT, "zzz", 10, NOW).unwrap();
    assert!(page.is_empty() && next.is_empty());

    // A page shows what `Status` shows.
    let (page, _) = e.list_page(ROOT, "", 1, NOW).unwrap();
    assert_eq!(page[0], e.status(ROOT, "user00000", NOW).unwrap());
    assert!(page[0].enrolled);
}

#[test]
fn an_empty_store_is_one_empty_page() {
    let f = fixture(Config::default());
    let (page, next) = f.engine.list_page(ROOT, "", 10, NOW).unwrap();
    assert!(page.is_empty() && next.is_empty());
}

#[test]
fn a_page_is_bounded_and_a_bad_one_refused_without_echo() {
    let f = fixture(Config::default());
    let e = &f.engine;
    store_users(e, 3);
    for limit in [0, MAX_LIST_PAGE + 1, u32::MAX] {
        match e.list_page(ROOT, "", limit, NOW) {
            Err(Error::InvalidArgument(text)) => {
                assert!(text.contains(&MAX_LIST_PAGE.to_string()), "{text}");
                assert!(!text.contains(&limit.to_string()) || limit == 0, "{text}");
            }
            other => panic!("limit {limit}: {other:?}"),
        }
    }
    let long = "ECHO-MARKER".repeat(MAX_USER_LEN / 11 + 1);
    match e.list_page(ROOT, &long, 10, NOW) {
        Err(Error::InvalidArgument(text)) => assert!(!text.contains("ECHO"), "{text}"),
        other => panic!("{other:?}"),
    }
    // The longest name is a position like any other.
    let longest = "z".repeat(MAX_USER_LEN);
    assert!(e.list_page(ROOT, &longest, 10, NOW).unwrap().0.is_empty());
}

/// Authorize first, then validate: a caller without the right learns nothing from the error,
/// whatever it sent.
#[test]
fn only_admins_may_list_and_others_are_refused_before_their_arguments_are_looked_at() {
    let f = fixture(Config::default());
    let e = &f.engine;
    store_users(e, 3);
    let long = "x".repeat(MAX_USER_LEN * 4);
    for caller in [ALICE, BOB] {
        for (after, limit) in [("", 10), ("", 0), (long.as_str(), 10), ("", u32::MAX)] {
            assert!(
                matches!(
                    e.list_page(caller, after, limit, NOW),
                    Err(Error::AccessDenied(_))
                ),
                "uid {} after {} bytes, limit {limit}",
                caller.uid,
                after.len()
            );
        }
        assert!(matches!(e.list(caller, NOW), Err(Error::AccessDenied(_))));
    }
}

/// `List` and `Export` answer in one message: up to their bound, and past it they refuse and
/// name the paged or streamed method, having read no more than one user past the bound.
#[test]
fn whole_store_answers_are_refused_past_their_bound() {
    let f = fixture(Config::default());
    let e = &f.engine;
    let bound = u32::try_from(MAX_ONE_MESSAGE_USERS).unwrap();
    store_users(e, bound + 1);
    match e.list(ROOT, NOW) {
        Err(Error::Conflict(text)) => assert!(text.contains("ListPage"), "{text}"),
        other => panic!("{:?}", other.map(|l| l.len())),
    }
    match e.export(ROOT, "", "a pass phrase", NOW) {
        Err(Error::Conflict(text)) => assert!(text.contains("ExportBegin"), "{text}"),
        other => panic!("{:?}", other.map(|l| l.len())),
    }
    // One user's export is no whole-store answer.
    assert!(e.export(ROOT, "user00000", "a pass phrase", NOW).is_ok());
    // Pages read any size.
    let (users, pages) = walk(e, ADMIN, MAX_LIST_PAGE);
    assert_eq!(users.len(), MAX_ONE_MESSAGE_USERS + 1);
    assert_eq!(pages, MAX_ONE_MESSAGE_USERS / MAX_LIST_PAGE as usize + 1);

    assert!(e.reset(ROOT, "user00000").unwrap());
    assert_eq!(e.list(ROOT, NOW).unwrap().len(), MAX_ONE_MESSAGE_USERS);
}
