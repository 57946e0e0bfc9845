//! One-time enrollment links in a real browser (docs/delivery.md, "Enrollment links"): the real
//! kron-web serving HTTPS with a certificate from a test CA, as a test user whom the shipped
//! D-Bus policy (with that user in kron-web's place) lets call the link methods; the real otpd;
//! Debian's headless Chromium driven through chromedriver.
//!
//! Covered: a link opened in the browser (nothing secret until its button is pressed), its QR
//! code decoded from the screenshot's pixels, the code computed by oathtool and typed into the
//! form, and a PAM login with that token; a link
//! sent by email (the test SMTP server) carries the URL and nothing secret; the link
//! a second time, an expired, a revoked and an unknown link all give the same neutral page;
//! five wrong codes kill the link; the page makes no request beyond its own origin and sends
//! its security headers; kron-web killed mid-request leaves the link unconsumed; only
//! kron-web's user (and root) may call ShowLink on the bus; the page is read and confirmed in
//! a text browser (lynx) too; kron-web refuses a key, a certificate or a config its own user
//! could change.

use std::time::Duration;

use kron_tests::browser::Browser;
use kron_tests::bus::Bus;
use kron_tests::mailbox::Mailbox;
use kron_tests::messages::otpauth_secret;
use kron_tests::otpd::Otpd;
use kron_tests::pam::Stack;
use kron_tests::process::{self, Identity};
use kron_tests::totp::{self, Oath};
use kron_tests::web::{self, KronWeb, TestCa};
use kron_tests::{TestUser, Transport, World, ports, scratch, world};
use serde_json::Value;
use tempfile::TempDir;

/// A phone's viewport, in CSS pixels.
const PHONE: (u32, u32) = (412, 915);
/// The neutral page's heading.
const NEUTRAL: &str = "This link is not valid";

/// otpd, kron-web and a user to enroll, on one private bus.
struct Setup {
    web: KronWeb,
    ca: TestCa,
    world: World,
    user: TestUser,
    web_user: TestUser,
    _policy: TempDir,
}

impl Setup {
    /// `web_extra` goes into `[web]` (e.g. `link_validity`).
    fn start(web_extra: &str) -> Setup {
        Setup::with_sections(web_extra, "")
    }

    /// As [`Setup::start`], with more tables for otpd (`[contacts]`, `[email]`).
    fn with_sections(web_extra: &str, sections: &str) -> Setup {
        let web_user = TestUser::new();
        let Identity::User { gid, .. } = web_user.identity() else {
            unreachable!("a test user");
        };
        let policy = scratch::public_dir("kron-policy.");
        let bus = Bus::start_with_policy(&web::policy_for(web_user.name(), policy.path()));
        let ca = TestCa::new(gid);
        let port = ports::free_port();
        let section = web::web_section(port, &ca, web_extra);
        let otpd = Otpd::start(
            &bus,
            &format!("default_mode = \"require\"\n{section}\n{sections}"),
        );
        let transport = Transport::Socket;
        let pam = world::stack(&bus, &otpd, transport, world::SERVICE, Stack::Probe);
        let world = World {
            pam,
            otpd,
            bus,
            transport,
        };
        let web = KronWeb::start(&section, port, world.bus.address(), web_user.identity());
        Setup {
            web,
            ca,
            world,
            user: TestUser::new(),
            web_user,
            _policy: policy,
        }
    }

    /// `kronctl --json enroll USER --link`: the URL from its "link" field.
    fn link(&self) -> String {
        let value = self
            .world
            .kronctl()
            .json(&["enroll", self.user.name(), "--link"]);
        let link = value["link"]
            .as_str()
            .unwrap_or_else(|| panic!("no \"link\" in {value}"))
            .to_owned();
        assert!(
            link.starts_with(&format!("{}/enroll/", self.web.origin())),
            "{link}"
        );
        link
    }

    fn browser(&self) -> Browser {
        Browser::start(&self.ca.ca_pem(), PHONE.0, PHONE.1)
    }
}

/// The text of the QR code in a PNG screenshot, read from its pixels.
fn qr_in(png_bytes: &[u8]) -> String {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().expect("a PNG screenshot");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader
        .next_frame(&mut pixels)
        .expect("the screenshot's pixels");
    let channels = frame.color_type.samples();
    let (width, height) = (frame.width as usize, frame.height as usize);
    let luma = |x: usize, y: usize| {
        let at = (y * width + x) * channels;
        let rgb = &pixels[at..at + channels.min(3)];
        (rgb.iter().map(|&c| u32::from(c)).sum::<u32>() / rgb.len() as u32) as u8
    };
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, luma);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code on the page");
    grids[0].decode().expect("a readable QR code").1
}

/// Presses the opening page's button, which shows the key (the QR code, the text, the form).
fn reveal(browser: &Browser) {
    browser.submit_with(&browser.find("button[type=submit]"));
    assert!(
        browser.source().contains("name=\"code\""),
        "{}",
        browser.text()
    );
}

/// Fills the code field and submits the form.
fn submit(browser: &Browser, code: &str) {
    let field = browser.find("input[name=code]");
    browser.type_into(&field, code);
    browser.submit_with(&browser.find("button[type=submit]"));
}

fn page_text(browser: &Browser) -> String {
    browser.text()
}

/// kron-web trusts a file only if root alone can change it (design invariant 11): a key or a
/// certificate that its own user owns (and so could replace), or a config it could change
/// (whose `bus` decides where every link's token goes), stops it at start with the reason.
#[test]
fn kron_web_refuses_files_its_own_user_could_change() {
    let web_user = TestUser::new();
    let identity = web_user.identity();
    let Identity::User { uid, gid, .. } = identity else {
        unreachable!("a test user");
    };
    let ca = TestCa::new(gid);
    let section = web::web_section(ports::free_port(), &ca, "");
    let give = |path: &std::path::Path, owner: u32| {
        std::os::unix::fs::chown(path, Some(owner), None).expect("chown");
    };

    give(&ca.key(), uid);
    let error = web::refused(&section, &identity, 0);
    assert!(
        error.contains("web.key") && error.contains(&format!("owned by uid {uid}, not root")),
        "{error}"
    );
    give(&ca.key(), 0);

    give(&ca.cert(), uid);
    let error = web::refused(&section, &identity, 0);
    assert!(
        error.contains("web.crt") && error.contains(&format!("owned by uid {uid}, not root")),
        "{error}"
    );
    give(&ca.cert(), 0);

    let error = web::refused(&section, &identity, uid);
    assert!(
        error.contains("otpd.toml") && error.contains(&format!("owned by uid {uid}, not root")),
        "{error}"
    );
}

#[test]
fn a_link_in_the_browser_enrolls_a_token_that_logs_in() {
    let setup = Setup::start("");
    let link = setup.link();
    let browser = setup.browser();
    browser.goto(&link);
    let text = page_text(&browser);
    assert!(text.contains("Set up your authenticator"), "{text}");
    assert!(text.contains(setup.user.name()), "{text}");
    assert!(text.contains("UTC"), "the expiry: {text}");
    // Opening the link shows nothing secret (what a mail scanner fetches); the button does.
    let opening = browser.source();
    assert!(
        !opening.contains("<svg") && !opening.contains("name=\"code\""),
        "{opening}"
    );
    reveal(&browser);
    let text = page_text(&browser);

    let screenshot = browser.screenshot();
    // Kept in cargo's directory for integration tests' files (for docs/kron-web-page.png), not
    // in the machine's shared temp directory: it shows a secret, if a test user's.
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kron-web-page.png");
    std::fs::write(&out, &screenshot).expect("keep the screenshot");
    let uri = qr_in(&screenshot);
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let secret = otpauth_secret(&uri).expect("a secret in the QR code");
    // The key for manual entry is the same secret, in groups of four.
    let grouped: Vec<String> = secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert!(text.contains(&grouped.join(" ")), "{text}");
    // Fits a phone: nothing wider than the screen.
    let overflow = browser.execute(
        "return document.documentElement.scrollWidth - window.innerWidth;",
        serde_json::json!([]),
    );
    assert!(overflow.as_i64().is_some_and(|o| o <= 0), "{overflow}");
    // No JavaScript, no external requests, the security headers, no CSP complaints.
    assert!(!browser.source().contains("<script"));
    let origin = setup.web.origin();
    let events = browser.network_events();
    check_requests_and_headers(&events, &origin, &link);
    let console = browser.console();
    assert!(
        console
            .iter()
            .all(|m| !m.contains("Content Security Policy")),
        "{console:?}"
    );

    let token = Oath::new(&secret);
    let step = totp::steady_step();
    submit(&browser, &token.code_for_step(step - 1));
    let done = page_text(&browser);
    assert!(done.contains("Your authenticator is set up"), "{done}");
    let status = setup.world.kronctl().json(&["status", setup.user.name()]);
    assert_eq!(status["enrolled"], true, "{status}");
    assert_eq!(status["link"], Value::Null, "{status}");

    // Used: the same neutral page as any other dead link.
    browser.goto(&link);
    assert!(page_text(&browser).contains(NEUTRAL));

    // The token passes a real PAM login; the confirming code's step is used up.
    setup
        .world
        .login(setup.user.name())
        .answer(&token.code_for_step(step - 1))
        .run()
        .assert_denied();
    setup
        .world
        .login(setup.user.name())
        .answer(&token.code_for_step(step))
        .run()
        .assert_accepted();
    // The URL never reaches a log.
    let token_part = link.rsplit('/').next().unwrap_or_default();
    assert!(!setup.world.otpd.stderr().contains(token_part));
    assert!(!setup.web.log().contains(token_part));
}

/// Every request the page made went to kron-web's origin, and its response carried the
/// security headers.
fn check_requests_and_headers(events: &[Value], origin: &str, link: &str) {
    let requests: Vec<&str> = events
        .iter()
        .filter(|e| e["method"] == "Network.requestWillBeSent")
        .filter_map(|e| e["params"]["request"]["url"].as_str())
        .collect();
    assert!(requests.contains(&link), "{requests:?}");
    // Chromium's own pages (chrome://) are not network requests.
    let network = requests
        .iter()
        .filter(|url| !url.starts_with("chrome:") && !url.starts_with("about:"));
    for url in network {
        assert!(
            url.starts_with(&format!("{origin}/")) || url.starts_with("data:"),
            "a request beyond the page's origin: {url}"
        );
    }
    let response = events
        .iter()
        .find(|e| {
            e["method"] == "Network.responseReceived" && e["params"]["response"]["url"] == link
        })
        .unwrap_or_else(|| panic!("no response for the link in {events:?}"));
    let headers = &response["params"]["response"]["headers"];
    let header = |name: &str| {
        headers
            .as_object()
            .and_then(|map| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .and_then(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} header in {headers}"))
            .to_owned()
    };
    let csp = header("content-security-policy");
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(
        csp.contains("form-action 'self'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert_eq!(header("cache-control"), "no-store");
    assert!(header("strict-transport-security").starts_with("max-age="));
    assert_eq!(header("x-content-type-options"), "nosniff");
}

#[test]
fn a_link_sent_by_email_carries_only_the_url_and_opens_the_page() {
    let mailbox = Mailbox::start();
    let setup = Setup::with_sections(
        "",
        &format!(
            "[contacts]\nemail = \"{{user}}@example.test\"\n{}",
            mailbox.config_section()
        ),
    );
    let sent = setup.world.kronctl().json(&[
        "enroll",
        setup.user.name(),
        "--send",
        "link",
        "--via",
        "email",
    ]);
    assert_eq!(
        sent["link"],
        Value::Null,
        "the admin does not see it: {sent}"
    );
    assert_eq!(sent["channel"], "email", "{sent}");
    let mail = mailbox.wait_for(&format!("{}@example.test", setup.user.name()));
    let prefix = format!("{}/enroll/", setup.web.origin());
    let link = mail
        .text
        .split_whitespace()
        .find(|word| word.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no link in the mail:\n{}", mail.text))
        .to_owned();
    assert!(!mail.text.contains("otpauth://"), "no secret in the mail");
    let status = setup.world.kronctl().json(&["status", setup.user.name()]);
    assert_eq!(status["link"]["channel"], "email", "{status}");
    let browser = setup.browser();
    browser.goto(&link);
    reveal(&browser);
    let secret = otpauth_secret(&qr_in(&browser.screenshot())).expect("a secret");
    assert!(!mail.text.contains(&secret), "no key in the mail");
    submit(&browser, &Oath::new(&secret).code_now());
    assert!(page_text(&browser).contains("Your authenticator is set up"));
}

/// `lynx -dump` of `url` (a POST of `post` when given), trusting the test CA.
fn lynx(setup: &Setup, url: &str, post: Option<&str>) -> String {
    let home = scratch::private_dir("kron-lynx.");
    let mut command = std::process::Command::new("lynx");
    command
        .env("HOME", home.path())
        .env("SSL_CERT_FILE", setup.ca.ca_pem())
        .args(["-dump", "-nolist", "-width=100"]);
    let input = match post {
        Some(body) => {
            command.arg("-post_data");
            format!("{body}\n---\n")
        }
        None => String::new(),
    };
    command.arg(url);
    let output = process::run_with_input(&mut command, &input);
    output.assert_success("lynx");
    output.stdout
}

#[test]
fn the_page_works_in_a_text_browser() {
    let setup = Setup::start("");
    let link = setup.link();
    let opening = lynx(&setup, &link, None);
    assert!(opening.contains("Set up your authenticator"), "{opening}");
    assert!(opening.contains(setup.user.name()), "{opening}");
    assert!(opening.contains("Show the key"), "{opening}");
    let page = lynx(&setup, &link, Some("show=key"));
    assert!(page.contains("Confirm"), "{page}");
    // The key, typed from the text: the line after "enter this key by hand".
    let key: String = page
        .lines()
        .skip_while(|line| !line.contains("enter this key by hand"))
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(key.len(), 32, "a 160-bit key in base32: {page}");
    let code = Oath::new(&key).code_now();
    let done = lynx(&setup, &link, Some(&format!("code={code}")));
    assert!(done.contains("Your authenticator is set up"), "{done}");
}

#[test]
fn expired_revoked_and_unknown_links_get_the_same_neutral_page() {
    let setup = Setup::start("link_validity = 10\n");
    let browser = setup.browser();
    let expired = setup.link();
    browser.goto(&expired);
    assert!(page_text(&browser).contains("Set up your authenticator"));
    std::thread::sleep(Duration::from_secs(11));
    browser.goto(&expired);
    let neutral = browser.source();
    assert!(neutral.contains(NEUTRAL), "{neutral}");

    let revoked = setup.link();
    setup
        .world
        .kronctl()
        .run(&["revoke-link", setup.user.name()])
        .assert_success("kronctl revoke-link");
    let origin = setup.web.origin();
    let (prefix, random) = revoked.rsplit_once('.').expect("a token");
    let forged = format!("{prefix}.{}", random.chars().rev().collect::<String>());
    for url in [
        revoked.clone(),
        forged,
        format!("{origin}/enroll/nonsense"),
        format!("{origin}/enroll/{}", "A".repeat(500)),
        format!("{origin}/"),
    ] {
        browser.goto(&url);
        assert_eq!(browser.source(), neutral, "{url}");
    }
}

#[test]
fn five_wrong_codes_kill_the_link() {
    let setup = Setup::start("");
    let link = setup.link();
    let browser = setup.browser();
    browser.goto(&link);
    reveal(&browser);
    let secret = otpauth_secret(&qr_in(&browser.screenshot())).expect("a secret");
    let right = Oath::new(&secret).code_now();
    let wrong = totp::wrong_code(&right);
    for left in (1..5).rev() {
        submit(&browser, &wrong);
        let text = page_text(&browser);
        let more = format!("{left} more wrong code");
        assert!(
            text.contains(&more),
            "{text}\n{}\n{}",
            setup.world.otpd.stderr(),
            setup.web.log()
        );
        assert!(!browser.source().contains(&wrong), "the code is not echoed");
    }
    submit(&browser, &wrong);
    assert!(page_text(&browser).contains(NEUTRAL));
    browser.goto(&link);
    assert!(page_text(&browser).contains(NEUTRAL));
    let status = setup.world.kronctl().json(&["status", setup.user.name()]);
    assert_eq!(status["pending"], false, "{status}");
    assert_eq!(status["link"], Value::Null, "{status}");
}

#[test]
fn kron_web_killed_mid_request_leaves_the_link_unconsumed() {
    let mut setup = Setup::start("");
    let link = setup.link();
    let browser = setup.browser();
    browser.goto(&link);
    reveal(&browser);
    let secret = otpauth_secret(&qr_in(&browser.screenshot())).expect("a secret");
    let token = Oath::new(&secret);
    let step = totp::steady_step();
    // kron-web stops before it reads the form; the browser's POST waits in its socket.
    process::send_signal(setup.web.pid(), libc::SIGSTOP);
    browser.page_load_timeout(Duration::from_secs(2));
    let field = browser.find("input[name=code]");
    browser.type_into(&field, &token.code_for_step(step - 1));
    let click = browser.find("button[type=submit]");
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| browser.click(&click)));
    setup.web.kill();
    let status = setup.world.kronctl().json(&["status", setup.user.name()]);
    assert_eq!(
        (status["enrolled"].clone(), status["pending"].clone()),
        (Value::Bool(false), Value::Bool(true)),
        "{status}"
    );

    setup.web.start_again();
    browser.page_load_timeout(Duration::from_secs(60));
    browser.goto(&link);
    assert!(page_text(&browser).contains("Set up your authenticator"));
    reveal(&browser);
    submit(&browser, &token.code_for_step(step));
    assert!(page_text(&browser).contains("Your authenticator is set up"));
}

#[test]
fn only_kron_webs_user_and_root_may_call_the_link_methods() {
    let setup = Setup::start("");
    let link = setup.link();
    let token = link.rsplit('/').next().unwrap_or_default().to_owned();
    let show = |identity: Identity| {
        process::run(
            identity
                .command("dbus-send")
                .arg(format!("--bus={}", setup.world.bus.address()))
                .args([
                    "--print-reply",
                    "--dest=io.kron.Otpd",
                    "/io/kron/Otpd",
                    "io.kron.Otpd1.ShowLink",
                ])
                .arg(format!("string:{token}"))
                .arg("string:127.0.0.1"),
        )
    };
    let stranger = show(TestUser::new().identity());
    stranger.assert_failure("ShowLink by another user");
    assert!(
        stranger.stderr.contains("AccessDenied"),
        "{}",
        stranger.describe()
    );
    show(setup.web_user.identity()).assert_success("ShowLink by kron-web's user");
    show(Identity::Root).assert_success("ShowLink by root");
}

/// A client that sends its form's body a byte at a time gets 408 and loses the connection
/// (otherwise 256 such clients would hold every slot), and one address cannot hold more than
/// its share of connections: the one over it is closed at once. The page still serves.
#[test]
fn slow_clients_and_one_address_cannot_hold_the_page() {
    use std::io::{Read, Write};
    let setup = Setup::start("");
    let link = setup.link();
    let origin = setup.web.origin();
    let path = link.strip_prefix(&origin).expect("the link's path");
    let port = origin.rsplit(':').next().expect("a port");
    let address = format!("127.0.0.1:{port}");

    let mut slow = tls_client(&setup, &address);
    let mut stdin = slow.stdin.take().expect("stdin");
    write!(
        stdin,
        "POST {path} HTTP/1.1\r\nHost: localhost:{port}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nc"
    )
    .expect("write the request's head");
    stdin.flush().expect("flush");
    let mut stdout = slow.stdout.take().expect("stdout");
    let (sender, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = sender.send(text);
    });
    // The rest of the body never comes; stdin stays open until the answer is in.
    let text = answer
        .recv_timeout(Duration::from_secs(90))
        .expect("kron-web answered the stalled request");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    drop(stdin);
    process::wait_bounded(&mut slow, Duration::from_secs(30)).expect("s_client ended");

    // One address's share: kron-web's MAX_PER_CLIENT.
    let held: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(&address).expect("connect"))
        .collect();
    // A ninth takes the place of the address's own connection idle longest, the first.
    let over = std::net::TcpStream::connect(&address).expect("connect");
    let mut first = &held[0];
    first
        .set_read_timeout(Some(Duration::from_secs(8)))
        .expect("read timeout");
    let mut byte = [0u8; 1];
    assert_eq!(
        first.read(&mut byte).expect("closed, not held"),
        0,
        "the address's connection idle longest is closed for its ninth"
    );
    drop(over);
    drop(held);
    let page = lynx(&setup, &link, None);
    assert!(page.contains("Set up your authenticator"), "{page}");

    // A connection serves at most 16 requests (kron-web's MAX_REQUESTS), so one client cannot
    // keep a connection, and the place it holds, forever: the 16th answer says
    // `Connection: close` and the connection ends though more requests were sent.
    let mut client = tls_client(&setup, &address);
    let mut stdin = client.stdin.take().expect("stdin");
    let mut stdout = client.stdout.take().expect("stdout");
    let (sender, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = sender.send(text);
    });
    for _ in 0..20 {
        write!(
            stdin,
            "GET /enroll/none HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
        )
        .expect("write a request");
    }
    stdin.flush().expect("flush");
    let text = answer
        .recv_timeout(Duration::from_secs(60))
        .expect("kron-web closed the connection");
    let answers: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 16, "{text}");
    let last_head = answers[15].split("\r\n\r\n").next().unwrap_or_default();
    assert!(
        last_head.to_ascii_lowercase().contains("connection: close"),
        "{last_head}"
    );
    assert!(
        answers[..15]
            .iter()
            .all(|a| !a.to_ascii_lowercase().contains("connection: close")),
        "{text}"
    );
    drop(stdin);
    process::wait_bounded(&mut client, Duration::from_secs(30)).expect("s_client ended");
}

/// `openssl s_client` on kron-web at `address`, trusting the test CA, its stdin and stdout
/// piped: a client that writes exactly the bytes a test gives it.
fn tls_client(setup: &Setup, address: &str) -> std::process::Child {
    std::process::Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            address,
            "-servername",
            "localhost",
        ])
        .arg("-CAfile")
        .arg(setup.ca.ca_pem())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start openssl s_client")
}
