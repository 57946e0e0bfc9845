//! `--key value` arguments (and bare `--flag`s); every value is checked where it is used.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    pub fn parse(argv: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut values = HashMap::new();
        let mut argv = argv.peekable();
        while let Some(arg) = argv.next() {
            let key = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {arg:?}"))?;
            let value = match argv.peek() {
                Some(next) if !next.starts_with("--") => argv.next().unwrap_or_default(),
                _ => "true".to_string(),
            };
            values.insert(key.to_string(), value);
        }
        Ok(Args { values })
    }

    pub fn optional(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }

    pub fn string(&self, key: &str) -> Result<String, String> {
        self.optional(key)
            .ok_or_else(|| format!("--{key} is required"))
    }

    pub fn number(&self, key: &str) -> Result<u64, String> {
        self.string(key)?
            .parse()
            .map_err(|_| format!("--{key} must be a whole number"))
    }

    pub fn number_or(&self, key: &str, default: u64) -> Result<u64, String> {
        match self.values.get(key) {
            Some(_) => self.number(key),
            None => Ok(default),
        }
    }

    pub fn flag(&self, key: &str) -> bool {
        self.values.get(key).is_some_and(|v| v == "true")
    }

    /// A comma-separated list of whole numbers.
    pub fn list(&self, key: &str) -> Result<Vec<u64>, String> {
        self.string(key)?
            .split(',')
            .map(|item| {
                item.trim()
                    .parse()
                    .map_err(|_| format!("--{key}: {item:?} is not a whole number"))
            })
            .collect()
    }
}
