//! The file format of google-authenticator (libpam-google-authenticator), as its CLI writes it
//! and its PAM module reads and rewrites it:
//!
//! ```text
//! QIYPSYQ6RMBXKMBSNHIOWV5BBI          line 1: the base32 secret
//! " RATE_LIMIT 3 30 1795446538        options: `" KEY value...`, anywhere after line 1
//! " WINDOW_SIZE 17
//! " DISALLOW_REUSE 59848217           time steps already used (the module appends each login's)
//! " TOTP_AUTH                         time-based; counter-based files have `" HOTP_COUNTER n`
//! 40560847                            eight-digit scratch codes, one per line, each used once
//! ```
//!
//! Codes are always six digits of HMAC-SHA1; `" STEP_SIZE n` (1..=60, default 30) sets the
//! period; `" TIME_SKEW n` is a per-user clock correction the module learns by itself.
//! Parsing is pure: no file access here, and no part of the file's text ever appears in a
//! message (a user's file could hold anything, including someone else's secret).
#![forbid(unsafe_code)]

use zeroize::Zeroizing;

use super::{Parsed, Token};

/// Largest file accepted; pam_google_authenticator itself refuses anything above 64 KiB.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;
/// Most scratch codes carried over; the CLI makes at most 10.
pub const MAX_SCRATCH_CODES: usize = 32;
/// The module's default window: the current step and one on each side.
const DEFAULT_WINDOW: u32 = 3;

/// Reads one `~/.google_authenticator`-format file: the token to enroll, or why it cannot be.
pub fn parse(text: &[u8]) -> Parsed {
    let mut notes = Vec::new();
    let token = parse_token(text, &mut notes);
    Parsed { token, notes }
}

fn parse_token(text: &[u8], notes: &mut Vec<String>) -> Result<Token, String> {
    let text = std::str::from_utf8(text)
        .map_err(|_| "malformed: the file is not text (invalid UTF-8)".to_string())?;
    if text.contains('\0') {
        return Err("malformed: the file contains NUL bytes".into());
    }
    let mut lines = text.split('\n').map(|line| line.trim_end_matches('\r'));
    let first = lines.next().unwrap_or_default();
    let secret =
        decode_base32(first).ok_or("malformed: line 1 is not a base32 secret".to_string())?;

    let mut options = Options::default();
    let mut scratch = Zeroizing::new(Vec::new());
    for (index, line) in lines.enumerate() {
        let number = index + 2;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(option) = line.strip_prefix("\" ") {
            options.read(option, number, notes)?;
        } else if line.starts_with('"') {
            // The module skips any line starting with a quote.
            continue;
        } else if is_scratch_code(line) {
            if scratch.len() == MAX_SCRATCH_CODES {
                return Err(format!(
                    "malformed: more than {MAX_SCRATCH_CODES} scratch codes"
                ));
            }
            scratch.push(line.to_owned());
        } else {
            return Err(format!(
                "malformed: line {number} is neither an option nor an 8-digit scratch code"
            ));
        }
    }

    if !options.totp {
        return Err(if options.hotp_counter.is_some() {
            "unsupported: counter-based (HOTP) token; kron supports time-based tokens only".into()
        } else {
            "unsupported: neither TOTP_AUTH nor HOTP_COUNTER (only scratch codes work there)".into()
        });
    }
    if options.hotp_counter.is_some() {
        notes.push("HOTP_COUNTER ignored: the file also says TOTP_AUTH".into());
    }
    let period = match options.step_size {
        None | Some(30) => 30,
        Some(60) => 60,
        Some(other) => {
            return Err(format!(
                "unsupported: STEP_SIZE {other}; kron supports 30 and 60 seconds"
            ));
        }
    };
    if let Some(window) = options.window.filter(|&w| w > DEFAULT_WINDOW) {
        notes.push(format!(
            "WINDOW_SIZE {window} not carried over: otpd's [totp] skew applies to every token"
        ));
    }
    if let Some(skew) = options.time_skew.filter(|&s| s != 0) {
        notes.push(format!(
            "TIME_SKEW {skew} not carried over: the device's clock is {} steps off; \
             correct it if codes are refused",
            skew.unsigned_abs()
        ));
    }
    super::check_secret_len(&secret)?;
    Ok(Token {
        secret,
        digits: 6,
        period,
        last_step: options.used_steps.unwrap_or(0),
        recovery_codes: scratch,
    })
}

/// What the option lines say.
#[derive(Debug, Default)]
struct Options {
    totp: bool,
    hotp_counter: Option<u64>,
    step_size: Option<u64>,
    window: Option<u32>,
    time_skew: Option<i64>,
    /// The highest step listed by DISALLOW_REUSE.
    used_steps: Option<u64>,
}

impl Options {
    fn read(&mut self, option: &str, line: usize, notes: &mut Vec<String>) -> Result<(), String> {
        let mut words = option.split_ascii_whitespace();
        let key = words.next().unwrap_or_default();
        let malformed = || format!("malformed: line {line}: invalid {key} option");
        let number = |word: Option<&str>| -> Result<u64, String> {
            word.and_then(|w| w.parse::<u64>().ok())
                .ok_or_else(malformed)
        };
        match key {
            "TOTP_AUTH" => self.totp = true,
            "HOTP_COUNTER" => {
                let counter = number(words.next())?;
                // The module treats a counter below 1 as "not counter-based".
                self.hotp_counter = (counter >= 1).then_some(counter);
            }
            "STEP_SIZE" => {
                let step = number(words.next())?;
                if !(1..=60).contains(&step) {
                    return Err(malformed());
                }
                self.step_size = Some(step);
            }
            "WINDOW_SIZE" => {
                let window = number(words.next())?;
                if !(1..=100).contains(&window) {
                    return Err(malformed());
                }
                self.window = Some(window as u32);
            }
            "DISALLOW_REUSE" => {
                let mut highest = self.used_steps;
                for word in words {
                    let step = number(Some(word))?;
                    highest = highest.max(Some(step));
                }
                self.used_steps = highest;
            }
            "TIME_SKEW" => {
                let skew = words
                    .next()
                    .and_then(|w| w.parse::<i64>().ok())
                    .ok_or_else(malformed)?;
                self.time_skew = Some(skew);
            }
            // Handled by kron's own throttling, or module bookkeeping with no meaning here.
            "RATE_LIMIT" | "RESETTING_TIME_SKEW" => {}
            other => {
                let shown: String = other
                    .chars()
                    .take(32)
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                notes.push(format!("unknown option {shown} on line {line} ignored"));
            }
        }
        Ok(())
    }
}

/// A scratch code as the module accepts it: eight digits, the first not zero.
fn is_scratch_code(line: &str) -> bool {
    line.len() == 8 && line.bytes().all(|b| b.is_ascii_digit()) && !line.starts_with('0')
}

/// Base32 (RFC 4648 alphabet) the way pam_google_authenticator decodes its secret, so kron
/// computes codes from exactly the bytes it did: either case, blanks and `-` ignored, the
/// look-alikes `0`, `1`, `8` read as `O`, `L`, `B`, trailing bits dropped. Trailing `=`
/// padding is accepted too. `None` for anything else, or no secret at all.
///
/// The module's spelling rules are applied here; the decoding is the `base32` crate's, which
/// like the module takes any number of characters and drops the bits left over.
pub fn decode_base32(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let body = text.trim_end_matches(['=', ' ', '\t']);
    let mut canonical = Zeroizing::new(String::with_capacity(body.len()));
    for c in body.chars() {
        match c {
            ' ' | '\t' | '-' => {}
            '0' => canonical.push('O'),
            '1' => canonical.push('L'),
            '8' => canonical.push('B'),
            // Anything outside the alphabet (`9`, `=`, ...) is refused by the decoder.
            other => canonical.push(other.to_ascii_uppercase()),
        }
    }
    let alphabet = base32::Alphabet::Rfc4648 { padding: false };
    let secret = Zeroizing::new(base32::decode(alphabet, &canonical)?);
    (!secret.is_empty()).then_some(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `google-authenticator -t -d -f -r 3 -R 30 -w 17 -e 10 -q -C`, then one login
    /// with a code and one with a scratch code through pam_google_authenticator.
    const USED: &str = "QIYPSYQ6RMBXKMBSNHIOWV5BBI\n\
\" RATE_LIMIT 3 30 1795446538 1795446538 1795446538\n\
\" WINDOW_SIZE 17\n\
\" DISALLOW_REUSE 59848217\n\
\" TOTP_AUTH\n\
32144938\n63147235\n14476854\n86102690\n42600275\n90682647\n96717907\n75453650\n59226273";

    /// `google-authenticator -c -f -e 3 -w 5 -u -q -C`
    const HOTP: &str = "BVXFC4UTJ7TUA6P7ESWPGCPABU\n\
\" WINDOW_SIZE 5\n\
\" HOTP_COUNTER 1\n\
97103328\n90507891\n55835244\n";

    fn token(text: &str) -> Token {
        parse(text.as_bytes()).token.unwrap()
    }

    fn reason(text: &str) -> String {
        parse(text.as_bytes()).token.unwrap_err()
    }

    #[test]
    fn a_used_file_keeps_secret_used_step_and_scratch_codes() {
        let parsed = parse(USED.as_bytes());
        let token = parsed.token.unwrap();
        assert_eq!(
            *token.secret,
            decode_base32("QIYPSYQ6RMBXKMBSNHIOWV5BBI")
                .unwrap()
                .to_vec()
        );
        assert_eq!(token.secret.len(), 16);
        assert_eq!((token.digits, token.period), (6, 30));
        assert_eq!(token.last_step, 59_848_217);
        assert_eq!(token.recovery_codes.len(), 9);
        assert_eq!(token.recovery_codes[0], "32144938");
        assert_eq!(
            parsed.notes,
            ["WINDOW_SIZE 17 not carried over: otpd's [totp] skew applies to every token"]
        );
    }

    #[test]
    fn fresh_files_have_no_used_step() {
        let fresh = "M3F7ULEGLQODOJOP7QWLXGZVFU\n\" RATE_LIMIT 3 30\n\" WINDOW_SIZE 3\n\
                     \" DISALLOW_REUSE\n\" TOTP_AUTH\n70930771\n82225760\n";
        let parsed = parse(fresh.as_bytes());
        assert!(parsed.notes.is_empty(), "{:?}", parsed.notes);
        let token = parsed.token.unwrap();
        assert_eq!(token.last_step, 0);
        assert_eq!(token.recovery_codes.len(), 2);
    }

    #[test]
    fn step_size_sets_the_period() {
        let sixty = "ODWDXK6RQ63F7HRLN7FHFZLEEE\n\" WINDOW_SIZE 3\n\" STEP_SIZE 60\n\
                     \" DISALLOW_REUSE 29924110 29924111\n\" TOTP_AUTH\n";
        let token = token(sixty);
        assert_eq!(token.period, 60);
        assert_eq!(token.last_step, 29_924_111, "the highest used step");
        assert!(token.recovery_codes.is_empty());
        let odd = "ODWDXK6RQ63F7HRLN7FHFZLEEE\n\" STEP_SIZE 45\n\" TOTP_AUTH\n";
        assert_eq!(
            reason(odd),
            "unsupported: STEP_SIZE 45; kron supports 30 and 60 seconds"
        );
        assert!(
            reason("ODWDXK6RQ63F7HRLN7FHFZLEEE\n\" STEP_SIZE 0\n\" TOTP_AUTH\n")
                .starts_with("malformed: line 2")
        );
    }

    #[test]
    fn counter_based_and_untyped_files_are_unsupported() {
        assert!(reason(HOTP).starts_with("unsupported: counter-based (HOTP)"));
        assert!(reason("ODWDXK6RQ63F7HRLN7FHFZLEEE\n12345678\n").contains("neither TOTP_AUTH"));
        // HOTP_COUNTER 0 means "not counter-based" to the module.
        let both = "ODWDXK6RQ63F7HRLN7FHFZLEEE\n\" HOTP_COUNTER 0\n\" TOTP_AUTH\n";
        assert!(parse(both.as_bytes()).notes.is_empty());
        let both = "ODWDXK6RQ63F7HRLN7FHFZLEEE\n\" HOTP_COUNTER 4\n\" TOTP_AUTH\n";
        let parsed = parse(both.as_bytes());
        assert!(parsed.token.is_ok());
        assert_eq!(parsed.notes.len(), 1);
    }

    #[test]
    fn malformed_files_are_refused_without_quoting_them() {
        for (text, expected) in [
            ("", "malformed: line 1 is not a base32 secret"),
            (
                "root:$y$j9T$secret:19000:0:99999:7:::\n",
                "malformed: line 1",
            ),
            ("JBSWY3DPEHPK3PXP!\n\" TOTP_AUTH\n", "malformed: line 1"),
            (
                "ODWDXK6RQ63F7HRLN7FHFZLEEE\n\" TOTP_AUTH\n1234567\n",
                "malformed: line 3 is neither",
            ),
            (
                "ODWDXK6RQ63F7HRLN7FHFZLEEE\n\" TOTP_AUTH\n01234567\n",
                "malformed: line 3",
            ),
            (
                "ODWDXK6RQ63F7HRLN7FHFZLEEE\n\" DISALLOW_REUSE 12 x\n\" TOTP_AUTH\n",
                "malformed: line 2: invalid DISALLOW_REUSE option",
            ),
            (
                "ODWDXK6RQ63F7HRLN7FHFZLEEE\n\" TOTP_AUTH\0\n",
                "malformed: the file contains NUL bytes",
            ),
            ("JBSWY3DP\n\" TOTP_AUTH\n", "secret of 5 bytes"),
        ] {
            let got = reason(text);
            assert!(got.contains(expected), "{text:?}: {got}");
            assert!(
                !got.contains("secret:19000") && !got.contains("x\""),
                "{got}"
            );
        }
        assert!(parse(b"\xff\xfe").token.unwrap_err().contains("not text"));
        let many: String =
            std::iter::once("ODWDXK6RQ63F7HRLN7FHFZLEEE\n\" TOTP_AUTH\n".to_string())
                .chain((0..=MAX_SCRATCH_CODES).map(|i| format!("{}\n", 10_000_000 + i)))
                .collect();
        assert!(reason(&many).contains("more than 32 scratch codes"));
    }

    #[test]
    fn crlf_blank_lines_unknown_options_and_skew_are_tolerated() {
        let text = "ODWDXK6RQ63F7HRLN7FHFZLEEE\r\n\r\n\" TOTP_AUTH\r\n\" TIME_SKEW -2\r\n\
                    \" RESETTING_TIME_SKEW 59848217+2\r\n\" FUTURE_THING\x1b[31m 1\r\n\"comment\r\n\
                    12345678\r\n";
        let parsed = parse(text.as_bytes());
        let token = parsed.token.unwrap();
        assert_eq!(*token.recovery_codes, ["12345678"]);
        assert_eq!(parsed.notes.len(), 2, "{:?}", parsed.notes);
        assert_eq!(
            parsed.notes[0],
            "unknown option FUTURE_THING31m on line 6 ignored"
        );
        assert!(
            parsed.notes[1]
                .starts_with("TIME_SKEW -2 not carried over: the device's clock is 2 steps off")
        );
    }

    #[test]
    fn base32_matches_the_module() {
        assert_eq!(
            *decode_base32("JBSWY3DPEHPK3PXP").unwrap(),
            b"Hello!\xde\xad\xbe\xef"
        );
        assert_eq!(
            decode_base32("jbsw y3dp-ehpk 3pxp"),
            decode_base32("JBSWY3DPEHPK3PXP")
        );
        assert_eq!(decode_base32("GEZDGNBV"), decode_base32("GEZDGNBV=="));
        // Look-alikes, as the module reads them.
        assert_eq!(decode_base32("0L8"), decode_base32("OLB"));
        assert_eq!(decode_base32(""), None);
        assert_eq!(decode_base32("AB9C"), None);
        assert_eq!(decode_base32("AB=C"), None);
    }

    #[test]
    fn base32_of_any_length_drops_the_leftover_bits_like_the_module() {
        // 17, 19 and 22 characters: lengths no base32 encoder writes; the module reads them.
        let ten = decode_base32("JBSWY3DPEHPK3PXP").unwrap();
        assert_eq!(decode_base32("JBSWY3DPEHPK3PXPA"), Some(ten.clone()));
        assert_eq!(decode_base32("JBSWY3DPEHPK3PXPAAA").unwrap().len(), 11);
        assert_eq!(decode_base32("JBSWY3DPEHPK3PXPAAAAAA").unwrap().len(), 13);
        assert_eq!(decode_base32("JBSWY3DPEHPK3PX").unwrap()[..9], ten[..9]);
    }
}
