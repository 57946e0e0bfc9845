//! Replays every committed corpus file of every fuzz target (`fuzz/corpus/<target>/*`) on
//! stable Rust: what the fuzzer found once (crashes included, after the fix) is run by every
//! `cargo test`, so a regression fails CI without nightly or a fuzzing run.

use std::path::Path;

#[test]
fn every_corpus_file_runs_without_a_panic() {
    let corpora = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    for (name, target) in kron_fuzz_targets::TARGETS {
        let dir = corpora.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("read the corpus directory").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} has no corpus", dir.display());
        for file in files {
            let data = std::fs::read(&file).expect("read a corpus file");
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} panics", file.display());
        }
    }
}
