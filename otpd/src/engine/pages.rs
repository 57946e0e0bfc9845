//! Reading a store a page at a time, for every method that walks it (`ListPage`,
//! `FleetPushPage`) and for those that answer in one message (`List`, `Export`, `FleetPush`):
//! the bounds on a page's arguments, the page with where the next one begins, and the bounded
//! read behind a one-message answer. otpd never reads a store whole.

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::record::UserRecord;
use kron_proto::{MAX_ONE_MESSAGE_USERS, MAX_USER_LEN};

/// Refuses a page's arguments out of bounds: `limit` 1 to `max` users, `after` no longer than a
/// user name. Called after the caller is authorized; the errors repeat neither argument.
pub(super) fn check(after: &str, limit: u32, max: u32) -> Result<()> {
    if !(1..=max).contains(&limit) {
        return Err(Error::InvalidArgument(format!(
            "a page holds 1 to {max} users"
        )));
    }
    // A position between names, not a name that must exist: only its length is bounded.
    if after.len() > MAX_USER_LEN {
        return Err(Error::InvalidArgument(format!(
            "a page starts after a name of at most {MAX_USER_LEN} bytes"
        )));
    }
    Ok(())
}

/// Up to `limit` users of `store` after the name `after` ("" = from the first), and the
/// `after` of the next page: "" when this one is the last. `after` and `limit` as
/// [`check`] passed them.
pub(super) fn page(
    store: &dyn Store,
    after: &str,
    limit: u32,
) -> Result<(Vec<(String, UserRecord)>, String)> {
    let limit = limit as usize;
    // One user more than the page tells whether another page follows, so the last page says
    // so itself and the caller needs no extra call that finds nothing.
    let mut page = store.page(Some(after).filter(|a| !a.is_empty()), limit + 1)?;
    let next = match page.len() > limit {
        true => {
            page.truncate(limit);
            page.last()
                .map(|(user, _)| user.clone())
                .unwrap_or_default()
        }
        false => String::new(),
    };
    Ok((page, next))
}

/// Every user of `store` for an answer in one message, or `None` when it holds more than
/// [`MAX_ONE_MESSAGE_USERS`] (the caller refuses, naming its paged successor). Read as one page
/// of one user more than that: a larger store is never read whole into memory for an answer
/// the bus could not carry anyway.
pub(super) fn one_message(store: &dyn Store) -> Result<Option<Vec<(String, UserRecord)>>> {
    let page = store.page(None, MAX_ONE_MESSAGE_USERS + 1)?;
    Ok((page.len() <= MAX_ONE_MESSAGE_USERS).then_some(page))
}
