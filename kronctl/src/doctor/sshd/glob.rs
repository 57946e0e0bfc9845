//! The `Include` patterns of sshd_config: glob(3) over the tree under `--root`.
#![forbid(unsafe_code)]

use crate::doctor::files::Root;

/// The files matching `pattern` (an absolute system path with `*`, `?` and `[...]` in any
/// component), sorted as glob(3) does.
pub fn glob(root: &Root, pattern: &str) -> Vec<String> {
    let mut found = vec![String::new()];
    for component in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for prefix in &found {
            if !component.contains(['*', '?', '[']) {
                next.push(format!("{prefix}/{component}"));
                continue;
            }
            let dir = if prefix.is_empty() {
                "/"
            } else {
                prefix.as_str()
            };
            let Ok(entries) = root.path(dir).and_then(std::fs::read_dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if (!name.starts_with('.') || component.starts_with('.'))
                    && wildcard_match(component.as_bytes(), name.as_bytes())
                {
                    next.push(format!("{prefix}/{name}"));
                }
            }
        }
        found = next;
    }
    let mut files: Vec<String> = found
        .into_iter()
        .filter(|path| root.path(path).is_ok_and(|path| path.is_file()))
        .collect();
    files.sort();
    files
}

/// fnmatch(3) for one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
pub(super) fn wildcard_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| wildcard_match(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && wildcard_match(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some(close) = rest.iter().skip(1).position(|&b| b == b']').map(|i| i + 1) else {
                return name.first() == Some(&b'[') && wildcard_match(rest, &name[1..]);
            };
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            let (negate, set) = match rest[..close].split_first() {
                Some((b'!' | b'^', set)) => (true, set),
                _ => (false, &rest[..close]),
            };
            let mut matched = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    matched |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    matched |= set[i] == c;
                    i += 1;
                }
            }
            matched != negate && wildcard_match(&rest[close + 1..], name_rest)
        }
        Some((&literal, rest)) => {
            name.first() == Some(&literal) && wildcard_match(rest, &name[1..])
        }
    }
}
