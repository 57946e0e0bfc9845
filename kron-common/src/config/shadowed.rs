//! `[[group]]` rules that can never match. Rules are tried in file order and the first match
//! wins, so a rule is dead when an earlier one names the same group (or `*`, which matches
//! everyone) and covers every service it names. Such a rule was written to do something and
//! silently did nothing; now it is an error with its file:line.

use super::{ConfigError, GroupRule, line_of};
use serde::Deserialize;

/// Only where each `[[group]]` entry is in the file.
#[derive(Deserialize)]
struct Places {
    #[serde(default)]
    group: Vec<toml::Spanned<toml::Value>>,
}

/// The first rule that an earlier rule always wins over, as an error.
pub(super) fn check(rules: &[GroupRule], text: &str, origin: &str) -> Result<(), ConfigError> {
    let lines: Vec<usize> = toml::from_str::<Places>(text)
        .map(|places| {
            places
                .group
                .iter()
                .map(|entry| line_of(text, entry.span().start))
                .collect()
        })
        .unwrap_or_default();
    let line = |index: usize| lines.get(index).copied().unwrap_or(1);
    for (later_index, later) in rules.iter().enumerate() {
        let earlier = rules[..later_index]
            .iter()
            .position(|earlier| hides(earlier, later));
        if let Some(earlier_index) = earlier {
            let earlier = &rules[earlier_index];
            let whom = match earlier.name.as_str() {
                "*" => "everyone (\"*\")".to_owned(),
                name => format!("group {name:?}"),
            };
            let services = match &earlier.services {
                None => "every service".to_owned(),
                Some(list) => format!("services {}", list.join(", ")),
            };
            return Err(ConfigError(format!(
                "{origin}:{}: this [[group]] rule for {:?} can never match: the rule at line {} \
                 for {whom} comes first and covers {services}; remove one or merge them",
                line(later_index),
                later.name,
                line(earlier_index),
            )));
        }
    }
    Ok(())
}

/// Whether `earlier` matches every login `later` could.
fn hides(earlier: &GroupRule, later: &GroupRule) -> bool {
    let same_people = earlier.name == later.name || earlier.name == "*";
    let covers_services = match (&earlier.services, &later.services) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(first), Some(second)) => second.iter().all(|s| first.contains(s)),
    };
    same_people && covers_services
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn error_of(text: &str) -> String {
        match Config::parse(text, "otpd.toml") {
            Err(ConfigError(message)) => message,
            Ok(_) => panic!("accepted:\n{text}"),
        }
    }

    #[test]
    fn a_rule_behind_one_for_the_same_group_and_services_is_an_error_at_its_line() {
        let same = "[[group]]\nname = \"wheel\"\nmode = \"require\"\n\n\
                    [[group]]\nname = \"wheel\"\nmode = \"exempt\"\n";
        let error = error_of(same);
        assert!(error.starts_with("otpd.toml:5: "), "{error}");
        assert!(error.contains("line 1"), "{error}");
        let subset = "[[group]]\nname = \"wheel\"\nmode = \"require\"\nservices = [\"sudo\", \"sshd\"]\n\
                      [[group]]\nname = \"wheel\"\nmode = \"exempt\"\nservices = [\"sshd\"]\n";
        assert!(error_of(subset).starts_with("otpd.toml:5: "));
        let everyone = "[[group]]\nname = \"*\"\nmode = \"optional\"\n\
                        [[group]]\nname = \"wheel\"\nmode = \"require\"\nservices = [\"sudo\"]\n";
        assert!(error_of(everyone).contains("everyone"));
        let inline = "group = [{ name = \"a\", mode = \"require\" },\n  { name = \"a\", mode = \"exempt\" }]\n";
        assert!(error_of(inline).starts_with("otpd.toml:"));
    }

    #[test]
    fn rules_that_can_still_match_are_fine() {
        for text in [
            // Other services.
            "[[group]]\nname = \"wheel\"\nmode = \"require\"\nservices = [\"sudo\"]\n\
             [[group]]\nname = \"wheel\"\nmode = \"exempt\"\nservices = [\"sshd\"]\n",
            // A wider rule after a narrower one.
            "[[group]]\nname = \"wheel\"\nmode = \"require\"\nservices = [\"sudo\"]\n\
             [[group]]\nname = \"wheel\"\nmode = \"exempt\"\n",
            // Another group, and `*` last.
            "[[group]]\nname = \"wheel\"\nmode = \"require\"\n\
             [[group]]\nname = \"staff\"\nmode = \"optional\"\n\
             [[group]]\nname = \"*\"\nmode = \"exempt\"\n",
        ] {
            Config::parse(text, "otpd.toml").unwrap_or_else(|e| panic!("{e}:\n{text}"));
        }
    }
}
