//! The UI in real headless Chromium, driven over WebDriver (chromedriver):
//! the versions page of a served repository; a commit with an error appears
//! as rejected without a reload; its page shows the diagnostic with the
//! highlighted line; a fix shows the semantic diff; the proxies page; no
//! errors in the browser console. Screenshots go to
//! `target/ui-screenshots/`.
//!
//! Debian's `chromium` and `chromium-driver` are installed with apt-get when
//! chromedriver is missing (as root), the way the pre-commit test installs
//! pre-commit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meshc_dataplane::http::{Clients, send};
use serde_json::{Value, json};

mod common;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

fn ensure_browser() {
    if Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists() {
        return;
    }
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-q", "chromium", "chromium-driver"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        // The package lists may be stale on a fresh machine.
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-q", "chromium", "chromium-driver"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "installing chromium and chromium-driver with apt-get failed (root is needed)"
        );
    }
}

struct Driver {
    child: Child,
    addr: SocketAddr,
    client: Clients,
    session: String,
}

/// Ending the session closes Chromium; killing only chromedriver would
/// leave the browser running. Plain blocking HTTP, as `drop` cannot await.
impl Drop for Driver {
    fn drop(&mut self) {
        use std::io::{Read, Write};
        if !self.session.is_empty()
            && let Ok(mut s) = std::net::TcpStream::connect(self.addr)
        {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session, self.addr
            );
            // The answer comes once the browser has quit.
            let _ = s.read(&mut [0u8; 1024]);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn call(&self, method: http::Method, path: &str, body: Option<Value>) -> Value {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let a = send(
            &self.client,
            self.addr,
            &self.addr.to_string(),
            method,
            path,
            &[("content-type", "application/json")],
            body,
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("chromedriver {path}: {e}"));
        let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
        assert!(
            a.status.is_success(),
            "chromedriver {path}: {} {v}",
            a.status
        );
        v["value"].clone()
    }

    async fn start(profile: &Path) -> Driver {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut d = Driver {
            child,
            addr,
            client: Clients::new(Default::default()),
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let v = d.call(http::Method::POST, "/session", Some(caps)).await;
        d.session = v["sessionId"].as_str().expect("a session").to_string();
        d
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    async fn goto(&self, url: &str) {
        self.call(
            http::Method::POST,
            &self.path("/url"),
            Some(json!({"url": url})),
        )
        .await;
    }

    async fn run(&self, script: &str) -> Value {
        self.call(
            http::Method::POST,
            &self.path("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn screenshot(&self, name: &str) {
        let v = self
            .call(http::Method::GET, &self.path("/screenshot"), None)
            .await;
        let png = base64_decode(v.as_str().expect("base64 PNG"));
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Console messages at level SEVERE since the last call.
    async fn console_errors(&self) -> Vec<String> {
        let v = self
            .call(
                http::Method::POST,
                &self.path("/se/log"),
                Some(json!({"type": "browser"})),
            )
            .await;
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Wait until `script` (an expression) is true in the page.
    /// Go to `url` and wait until `script` is true there.
    async fn open(&self, url: &str, what: &str, script: &str) {
        self.goto(url).await;
        self.until(what, script).await;
    }

    async fn until(&self, what: &str, script: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.run(&format!("return !!({script});")).await == Value::Bool(true) {
                return;
            }
            let html = self.run("return document.documentElement.outerHTML;").await;
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {html}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|b| *b != b'=' && !b.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, c)| {
            acc | (u32::from(val(*c)) << (18 - 6 * i))
        });
        let take = chunk.len().saturating_sub(1);
        out.extend(n.to_be_bytes()[1..=take].iter());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_in_headless_chromium() {
    ensure_browser();
    let served = common::Served::bookinfo().await;
    let (dir, repo, server) = (served.work.path(), &served.repo, &served.server);
    let base = format!("http://{}", server.http_addr);
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start(profile.path()).await;

    driver.goto(&format!("{base}/")).await;
    driver
        .until(
            "the first version",
            "document.querySelector('#v1 .accepted')",
        )
        .await;
    driver.screenshot("versions").await;
    // A marker a reload would erase.
    driver.run("window.meshcMarker = 42; return null;").await;

    // A commit with an error: it appears, rejected, without a reload.
    let routing = std::fs::read_to_string(dir.join("routing.yaml")).unwrap();
    std::fs::write(
        dir.join("routing.yaml"),
        routing.replacen("subset: v2", "subset: v9", 1),
    )
    .unwrap();
    common::commit(repo, "route to a subset that does not exist");
    server.control.sync_now.notify_one();
    driver
        .until(
            "version 2, rejected",
            "document.querySelector('#v2 .rejected')",
        )
        .await;
    assert_eq!(
        driver.run("return window.meshcMarker;").await,
        json!(42),
        "the page was reloaded"
    );
    driver.screenshot("versions-rejected").await;

    // Its page: the diagnostic and its highlighted line.
    driver
        .open(
            &format!("{base}/versions/2"),
            "the diagnostic",
            "document.querySelector('a[href=\"/rules#MC0101\"]')",
        )
        .await;
    let hl = driver
        .run("return document.querySelector('.excerpt .hl').textContent;")
        .await;
    assert!(hl.as_str().unwrap().contains("subset: v9"), "{hl}");
    driver.screenshot("version-rejected").await;

    // A fix: accepted, with its semantic diff against version 1.
    std::fs::write(
        dir.join("routing.yaml"),
        routing
            .replacen("weight: 90", "weight: 60", 1)
            .replacen("weight: 10", "weight: 40", 1),
    )
    .unwrap();
    common::commit(repo, "canary 60/40");
    served.until_versions(3).await;
    let v3 = &server.control.store.versions(1).unwrap()[0];
    assert_eq!(v3.errors, 0, "{:?}", v3.diagnostics);
    driver
        .open(
            &format!("{base}/"),
            "version 3, accepted",
            "document.querySelector('#v3 .accepted')",
        )
        .await;
    driver.goto(&format!("{base}/versions/3")).await;
    let changes = driver
        .run("return document.querySelector('#changes').textContent;")
        .await;
    let changes = changes.as_str().unwrap();
    assert!(changes.contains("weight 90 -> 60"), "{changes}");
    driver.screenshot("version-diff").await;

    driver
        .open(
            &format!("{base}/proxies"),
            "the proxies page",
            "document.querySelector('h1').textContent == 'Proxies'",
        )
        .await;
    driver.screenshot("proxies").await;
    driver
        .open(
            &format!("{base}/services"),
            "the services page",
            "document.querySelector('svg.topology')",
        )
        .await;
    driver.screenshot("services").await;
    driver
        .open(
            &format!("{base}/rules"),
            "the rules",
            "document.getElementById('MC0101')",
        )
        .await;

    let errors = driver.console_errors().await;
    assert!(errors.is_empty(), "browser console errors: {errors:?}");
    served.server.stop().await;
}
