//! Streamed export and import: pieces, checks before any write, handles bound to their caller.

use super::{ALICE, NOW, ROOT, enroll, fixture, fixture_keyed};
use crate::error::Error;
use kron_common::config::Config;

const PASS: &str = "a pass phrase";

/// The whole file from a streamed export, and the pieces it came in.
fn export_all(engine: &super::Engine) -> (Vec<u8>, usize) {
    let handle = engine.export_begin(ROOT, "", PASS, NOW).unwrap();
    let (mut file, mut pieces) = (Vec::new(), 0);
    loop {
        let (piece, _, done) = engine.export_next(ROOT, &handle, NOW).unwrap();
        assert!(piece.len() <= kron_proto::MAX_CHUNK_BYTES);
        file.extend(piece);
        pieces += 1;
        if done {
            return (file, pieces);
        }
    }
}

/// Sends `file` in pieces of `size` and ends it: the users checked, or why not.
fn send(engine: &super::Engine, file: &[u8], size: usize) -> (String, Result<u64, Error>) {
    let handle = engine.import_begin(ROOT, PASS, false, false, NOW).unwrap();
    for piece in file.chunks(size) {
        if let Err(e) = engine.import_chunk(ROOT, &handle, piece.to_vec(), NOW) {
            return (handle, Err(e));
        }
    }
    let checked = engine.import_end(ROOT, &handle, NOW);
    (handle, checked)
}

#[test]
fn a_streamed_export_imports_elsewhere_only_once_checked_whole() {
    let here = fixture(Config::default());
    let tokens = (0..300)
        .map(|index: u32| kron_proto::TokenImport {
            user: format!("user{index:03}"),
            secret: index.to_be_bytes().repeat(5),
            algorithm: "SHA1".into(),
            digits: 6,
            period: 30,
            last_step: 0,
            recovery_codes: vec![format!("{:08}", 10_000_000 + index)],
        })
        .collect();
    here.engine
        .import_tokens(ROOT, tokens, false, false, NOW)
        .unwrap();
    enroll(&here.engine, "alice");
    let (file, pieces) = export_all(&here.engine);
    assert!(pieces >= 1);
    let one_shot = crate::engine::backup_io::open(&file, PASS).unwrap();
    assert_eq!(one_shot.users.len(), 301, "the same file as Export writes");

    let there = fixture_keyed(Config::default(), 11);
    // A truncated or modified file stores nothing, however it is cut into pieces.
    let (_, truncated) = send(&there.engine, &file[..file.len() - 40], 1000);
    assert!(truncated.is_err(), "{truncated:?}");
    let mut modified = file.clone();
    let at = modified.len() / 2;
    modified[at] ^= 1;
    let (_, modified) = send(&there.engine, &modified, 777);
    assert!(modified.is_err(), "{modified:?}");
    assert!(
        there.engine.list(ROOT, NOW).unwrap().is_empty(),
        "nothing stored"
    );

    let (handle, checked) = send(&there.engine, &file, 4096);
    assert_eq!(checked.unwrap(), 301);
    assert!(
        there.engine.list(ROOT, NOW).unwrap().is_empty(),
        "not before ImportApply"
    );
    assert!(matches!(
        there.engine.import_apply(ALICE, &handle, 10, NOW),
        Err(Error::AccessDenied(_))
    ));
    let mut imported = 0;
    loop {
        let (results, done) = there.engine.import_apply(ROOT, &handle, 128, NOW).unwrap();
        imported += results.iter().filter(|r| r.outcome == "imported").count();
        if done {
            break;
        }
    }
    assert_eq!(imported, 301);
    assert_eq!(there.engine.list(ROOT, NOW).unwrap().len(), 301);
    assert!(
        matches!(
            there.engine.import_apply(ROOT, &handle, 10, NOW),
            Err(Error::NotFound(_))
        ),
        "the session ended with its last user"
    );
}

#[test]
fn transfers_are_roots_and_bound_to_their_caller() {
    let f = fixture(Config::default());
    assert!(matches!(
        f.engine.export_begin(ALICE, "", PASS, NOW),
        Err(Error::AccessDenied(_))
    ));
    assert!(matches!(
        f.engine.import_begin(ALICE, PASS, false, false, NOW),
        Err(Error::AccessDenied(_))
    ));
    let handle = f.engine.export_begin(ROOT, "", PASS, NOW).unwrap();
    assert!(matches!(
        f.engine
            .export_next(crate::policy::authz::Caller::new(0), "made-up", NOW),
        Err(Error::NotFound(_))
    ));
    assert!(f.engine.export_next(ROOT, &handle, NOW).is_ok());
    assert!(matches!(
        f.engine.export_begin(ROOT, "", "weak", NOW),
        Err(Error::InvalidArgument(_))
    ));
}
