//! A real browser on the review page: headless Chromium driven through ChromeDriver
//! (Debian's `chromium` and `chromium-driver`, installed by `.ci/run`) signs in, sees a held
//! intent with its reasons, sees hostile intent fields rendered as inert text, approves, and
//! the review record is then read from the decisions topic. A screenshot of the queue is
//! saved as a test artifact.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use riskgate_test_support as support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use support::review::{hostile, intent, proposals, Stack, XSS};
use support::serial;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// ChromeDriver in its own process group (Chromium joins it): dropping this kills the
/// whole group, also when the test fails, so no browser outlives the test.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

fn start_driver(scratch: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        // Its scratch directories (and Chromium's) go where the test cleans up.
        .env("TMPDIR", scratch)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {CHROMEDRIVER} ({e}); install Debian's chromium and chromium-driver (.ci/run does)")
        });
    Driver { child, port }
}

/// Opens a browser session, retrying while ChromeDriver is still starting.
async fn connect(driver: &Driver, scratch: &Path) -> Client {
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--window-size=1366,900",
                format!("--user-data-dir={}", scratch.join("profile").display()),
            ],
        },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
        {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no browser session: {e}"),
        }
    }
}

/// Waits until `script` (a function body returning a value) returns something truthy.
async fn wait_js(c: &Client, what: &str, script: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = c.execute(script, vec![]).await.unwrap();
        if !(v.is_null() || v == false || v == "") {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
#[cfg_attr(
    not(all(feature = "kafka-tests", feature = "browser-tests")),
    ignore = "needs a Kafka broker and Chromium: scripts/test runs it"
)]
fn a_reviewer_approves_a_hold_in_a_real_browser() {
    let _g = serial();
    let stack = Stack::start("browser");
    let mut intents = proposals();
    intents.push(hostile());
    stack.propose(&intents);
    let review = stack.review("");
    let s = review.sign_in("vera");
    review.wait_pending(&s, &["t-1", "p-1", "t-3", "x-1"]);
    let base = format!("http://{}/", review.address);

    let scratch = tempfile::tempdir().unwrap();
    let driver = start_driver(scratch.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let screenshot = artifacts().join("review-queue.png");
    runtime.block_on(async {
        let c = connect(&driver, scratch.path()).await;
        let result = async {
            c.goto(&base).await.unwrap();
            // Sign in with the keyboard: the labelled fields, then Enter.
            c.find(Locator::Css("#reviewer")).await.unwrap().send_keys("alice").await.unwrap();
            let secret = c.find(Locator::Css("#secret")).await.unwrap();
            secret.send_keys("alice-secret-123").await.unwrap();
            secret.send_keys("\u{E007}").await.unwrap();

            // The held intent, with its reasons, in the queue.
            let row_text = wait_js(
                &c,
                "the t-1 row",
                "const r = document.querySelector('#holds tr[data-intent-id=\"t-1\"]'); return r && r.innerText;",
            )
            .await;
            let row_text = row_text.as_str().unwrap();
            for want in ["procurement-bot", "acct-1", "transfer", "20,000.00", "Acme GmbH", "large-transfer", "20000.00 EUR to Acme GmbH is above 10000"] {
                assert!(row_text.contains(want), "{want:?} in {row_text:?}");
            }
            // Hostile fields are text: shown literally, nothing ran, no element was made of them.
            let x = wait_js(
                &c,
                "the x-1 row",
                "const r = document.querySelector('#holds tr[data-intent-id=\"x-1\"]'); return r && {text: r.innerText, agent: r.cells[1].textContent, injected: r.querySelectorAll('script, img').length, xss: window.__xss === undefined ? null : window.__xss};",
            )
            .await;
            assert_eq!(x["agent"], XSS, "the agent cell shows the markup as text");
            assert!(x["text"].as_str().unwrap().contains("<script>window.__xss=1</script>"), "{x}");
            assert_eq!((x["injected"].as_i64(), &x["xss"]), (Some(0), &serde_json::Value::Null), "{x}");

            let png = c.screenshot().await.unwrap();
            std::fs::write(&screenshot, png).unwrap();

            // The detail of the hostile one is inert too.
            c.find(Locator::Css("#holds tr[data-intent-id=\"x-1\"]")).await.unwrap().click().await.unwrap();
            let detail = wait_js(
                &c,
                "the x-1 detail",
                "const d = document.querySelector('#detail'); const j = document.querySelector('#intent-json').textContent; return d && !d.hidden && d.innerText.includes('onerror') && j.length > 0 && {injected: d.querySelectorAll('script, img').length, xss: window.__xss === undefined ? null : window.__xss, json: document.querySelector('#intent-json').textContent};",
            )
            .await;
            assert_eq!((detail["injected"].as_i64(), &detail["xss"]), (Some(0), &serde_json::Value::Null), "{detail}");
            let json: serde_json::Value = serde_json::from_str(detail["json"].as_str().unwrap()).unwrap();
            assert_eq!(json["attributes"]["note"], XSS, "the intent is shown as its JSON text");

            // Open t-1 with the keyboard, comment, approve.
            let row = c.find(Locator::Css("#holds tr[data-intent-id=\"t-1\"]")).await.unwrap();
            row.send_keys("\u{E007}").await.unwrap();
            wait_js(
                &c,
                "the t-1 detail",
                "const d = document.querySelector('#detail'); return d && !d.hidden && d.innerText.includes('t-1') && d.innerText.includes('large-transfer');",
            )
            .await;
            c.find(Locator::Css("#comment")).await.unwrap().send_keys("invoice 4711 checked").await.unwrap();
            c.find(Locator::Css("#approve")).await.unwrap().click().await.unwrap();
            wait_js(
                &c,
                "the approval to be confirmed",
                "const s = document.querySelector('#status'); return s && s.innerText.includes('Approved t-1');",
            )
            .await;
            wait_js(
                &c,
                "t-1 to leave the queue",
                "return document.querySelector('#holds tr[data-intent-id=\"p-1\"]') && !document.querySelector('#holds tr[data-intent-id=\"t-1\"]');",
            )
            .await;

            // A new hold shows up by itself: the page follows the server's events.
            stack.propose(&[intent("t-9", "treasury-bot", "acct-9", "transfer", "45000.00", "Initech")]);
            wait_js(
                &c,
                "the new hold t-9 to appear without a reload",
                "return !!document.querySelector('#holds tr[data-intent-id=\"t-9\"]');",
            )
            .await;
        }
        .await;
        c.close().await.unwrap();
        result
    });
    drop(driver);

    // The approval is on the decisions topic, for every agent reading it.
    let records = stack.review_records();
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0].value;
    assert_eq!(
        (
            &r["intent_id"],
            &r["review"],
            &r["decision"],
            &r["reviewer"],
            &r["comment"]
        ),
        (
            &"t-1".into(),
            &"approve".into(),
            &"allow".into(),
            &"alice".into(),
            &"invoice 4711 checked".into()
        )
    );
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG"),
        "a PNG at {}",
        screenshot.display()
    );
    eprintln!("screenshot of the queue: {}", screenshot.display());
}
