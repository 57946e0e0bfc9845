//! pam-host's command line.

/// One run of logins for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub user: String,
    pub count: u64,
}

/// Parsed command line.
#[derive(Debug, Default)]
pub struct Args {
    pub confdir: String,
    pub service: String,
    pub plans: Vec<Plan>,
    pub rhost: Option<String>,
    pub tty: Option<String>,
    pub answers: Vec<String>,
    pub answers_stdin: bool,
    pub quiet: bool,
}

pub const USAGE: &str = "usage: pam-host --confdir DIR --service NAME --user USER [--repeat N] \
[--user USER [--repeat N]]... [--rhost HOST] [--tty TTY] [--answer TEXT]... [--answers-stdin] [--quiet]

Runs pam_authenticate for each --user (--repeat times each, in order) in this one process.
Prompts are answered from the --answer list in order across all logins, then from stdin
(one line per prompt) with --answers-stdin. Prints INFO:/ERROR:/PROMPT:/PROMPT_ECHO: lines
(\"| \" continues a multi-line text), RESULT: PAM_NAME per login, and for more than one login
TASKS: and FDS: counts (before the first login, after it, after the last).
Exits with the PAM code of the last login.";

impl Args {
    pub fn parse(mut words: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut args = Args::default();
        while let Some(flag) = words.next() {
            let mut value = || words.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--confdir" => args.confdir = value()?,
                "--service" => args.service = value()?,
                "--user" => args.plans.push(Plan {
                    user: value()?,
                    count: 1,
                }),
                "--repeat" => {
                    let count = value()?
                        .parse()
                        .map_err(|_| "--repeat needs a number".to_string())?;
                    args.plans
                        .last_mut()
                        .ok_or("--repeat must follow --user")?
                        .count = count;
                }
                "--rhost" => args.rhost = Some(value()?),
                "--tty" => args.tty = Some(value()?),
                "--answer" => args.answers.push(value()?),
                "--answers-stdin" => args.answers_stdin = true,
                "--quiet" => args.quiet = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if args.confdir.is_empty() || args.service.is_empty() || args.plans.is_empty() {
            return Err("--confdir, --service and --user are required".into());
        }
        Ok(args)
    }

    /// How many logins the plans add up to.
    pub fn total_logins(&self) -> u64 {
        self.plans.iter().map(|plan| plan.count).sum()
    }
}
