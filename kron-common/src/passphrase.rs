//! How strong the passphrase of an export must be. Anyone with the file and the passphrase has
//! every token secret, and the file may sit on a backup server for years, so a guessable
//! passphrase is refused (otpd refuses it; kronctl says so before it asks otpd).
//!
//! The rule (docs/security.md): at least [`MIN_CHARS`] characters and an estimated
//! [`MIN_BITS`] bits. The estimate is the number of characters that do not merely repeat or
//! continue the one before (`aaaa`, `abcd`, `4321` count once), times log2 of the alphabet the
//! passphrase draws on (lower case 26, upper case 26, digits 10, other ASCII 33, anything else
//! 100). Five random words, or 12 random characters mixing letters, digits and signs, pass;
//! `password1234` does not. It is a floor against mistakes, not a guarantee: age stretches the
//! passphrase with scrypt (about a second per guess on one core) on top.

/// Fewest characters (not bytes) of a passphrase.
pub const MIN_CHARS: usize = 12;
/// Fewest estimated bits.
pub const MIN_BITS: u32 = 60;

/// `Ok` for a strong enough passphrase; otherwise the reason and what would pass.
pub fn check_strength(passphrase: &str) -> Result<(), String> {
    let chars: Vec<char> = passphrase.chars().collect();
    if chars.len() < MIN_CHARS {
        return Err(format!(
            "the passphrase is too short: use at least {MIN_CHARS} characters (five random \
             words, say)"
        ));
    }
    let bits = estimate_bits(&chars);
    if bits < f64::from(MIN_BITS) {
        return Err(format!(
            "the passphrase is too easy to guess (about {bits:.0} bits, at least {MIN_BITS} \
             needed): use five random words, or more characters mixing letters, digits and signs"
        ));
    }
    Ok(())
}

/// The estimate of the module comment.
fn estimate_bits(chars: &[char]) -> f64 {
    let mut classes = [false; 5];
    for &c in chars {
        classes[class(c)] = true;
    }
    let alphabet: u32 = [26, 26, 10, 33, 100]
        .iter()
        .zip(classes)
        .filter(|(_, used)| *used)
        .map(|(size, _)| size)
        .sum();
    let counted = chars
        .iter()
        .enumerate()
        .filter(|&(i, &c)| {
            i == 0 || {
                let step = i64::from(u32::from(c)) - i64::from(u32::from(chars[i - 1]));
                let before = if i >= 2 {
                    i64::from(u32::from(chars[i - 1])) - i64::from(u32::from(chars[i - 2]))
                } else {
                    step
                };
                // A repeat, or a run continuing in the direction it started.
                !(step == 0 || (step.abs() == 1 && (i == 1 || before == step)))
            }
        })
        .count();
    counted as f64 * f64::from(alphabet.max(1)).log2()
}

fn class(c: char) -> usize {
    match c {
        'a'..='z' => 0,
        'A'..='Z' => 1,
        '0'..='9' => 2,
        c if c.is_ascii() => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_passphrases_are_refused_with_a_reason() {
        for weak in [
            "x",
            "Tr0ub4dor&3",
            "password1234",
            "aaaaaaaaaaaaaaaaaaaaaaaa",
            "abcdefghijklmnopqrstuvwx",
            "123456789012345678",
            "qwerqwerqwer",
        ] {
            let error = check_strength(weak).expect_err(weak);
            assert!(error.contains("passphrase"), "{error}");
        }
        assert!(check_strength("short").unwrap_err().contains("at least 12"));
    }

    #[test]
    fn strong_passphrases_pass() {
        for strong in [
            "correct horse battery staple",
            "gLx7#qP2!vT9",
            "ukhwmzqrtpeyfb",
            "zwölf Boxkämpfer jagen",
        ] {
            check_strength(strong).unwrap_or_else(|e| panic!("{strong}: {e}"));
        }
    }
}
