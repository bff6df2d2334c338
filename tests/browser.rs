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

use support::review::{explained, hostile, intent, proposals, Stack, XSS};
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
                "const r = document.querySelector('#holds tr[data-intent-id=\"x-1\"]'); return r && {text: r.innerText, agent: r.cells[2].textContent, injected: r.querySelectorAll('script, img').length, xss: window.__xss === undefined ? null : window.__xss};",
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

/// Runs `act` on the element `css`, finding it again when the page re-rendered it in between
/// (the list is rebuilt whenever the pending set changes).
async fn on<F, Fut>(c: &Client, css: &str, act: F)
where
    F: Fn(fantoccini::elements::Element) -> Fut,
    Fut: std::future::Future<Output = Result<(), fantoccini::error::CmdError>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = c.find(Locator::Css(css)).await.unwrap();
        match act(e).await {
            Ok(()) => return,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("{css}: {err}"),
        }
    }
}

/// Clicks the element `css`.
async fn click(c: &Client, css: &str) {
    on(c, css, |e| async move { e.click().await }).await;
}

/// Sends `text` (keys) to the element `css`.
async fn keys(c: &Client, css: &str, text: &str) {
    on(c, css, |e| async move { e.send_keys(text).await }).await;
}

/// Replaces the text of the input `css` with `text`.
async fn type_into(c: &Client, css: &str, text: &str) {
    on(c, css, |e| async move {
        e.clear().await?;
        if text.is_empty() {
            Ok(())
        } else {
            e.send_keys(text).await
        }
    })
    .await;
}

/// Types `text` into the input `css` and presses Enter (applying its form).
async fn submit(c: &Client, css: &str, text: &str) {
    type_into(c, css, text).await;
    keys(c, css, "\u{E007}").await;
}

/// Signs `name` in with the keyboard.
async fn sign_in(c: &Client, name: &str, secret: &str) {
    type_into(c, "#reviewer", name).await;
    keys(c, "#secret", secret).await;
    keys(c, "#secret", "\u{E007}").await;
}

/// The intent ids of the rows shown.
const ROW_IDS: &str = "return Array.from(document.querySelectorAll('#holds tr[data-intent-id]')).map(r => r.dataset.intentId);";

#[test]
#[cfg_attr(
    not(all(feature = "kafka-tests", feature = "browser-tests")),
    ignore = "needs a Kafka broker and Chromium: scripts/test runs it"
)]
fn a_bad_day_ten_thousand_holds_explained_paged_filtered_and_reviewed_in_bulk() {
    const MANY: usize = 10_000;
    let _g = serial();
    let stack = Stack::start("browser-day");
    let mut intents = proposals();
    intents.extend(explained());
    intents.extend((0..MANY).map(|i| {
        intent(
            &format!("g-{i:05}"),
            "batch-bot",
            &format!("acct-b{}", i % 500),
            "transfer",
            "20000.00",
            "Bulk Payee",
        )
    }));
    stack.propose(&intents);
    let review = stack.review("");
    let vera = review.sign_in("vera");
    let total = MANY + 6;
    support::wait_for("every hold in the queue", Duration::from_secs(180), || {
        (review.get(&vera, "/api/holds?limit=1").json()["count"] == total).then_some(())
    });
    let base = format!("http://{}/", review.address);

    let scratch = tempfile::tempdir().unwrap();
    let driver = start_driver(scratch.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let screenshot = artifacts().join("review-bad-day.png");
    let (first_rows, filtered) = runtime.block_on(async {
        let c = connect(&driver, scratch.path()).await;
        let result = async {
            c.set_window_size(1366, 768).await.unwrap();
            c.goto(&base).await.unwrap();
            keys(&c, "#reviewer", "alice").await;
            keys(&c, "#secret", "alice-secret-123").await;
            let signed_in = Instant::now();
            keys(&c, "#secret", "\u{E007}").await;
            // The first page of 10,006 holds.
            wait_js(&c, "the first rows", "return document.querySelectorAll('#holds tr[data-intent-id]').length === 50;").await;
            let first_rows = signed_in.elapsed();
            let head = wait_js(&c, "the count and the page", "const n = document.querySelector('#hold-count').innerText; const p = document.querySelector('#page-range').innerText; return n.includes('10,006') && {n, p};").await;
            assert_eq!(head["p"], "1–50 of 10,006", "{head}");
            // 1366 pixels wide: the page itself does not scroll sideways.
            let width = c.execute("return [document.documentElement.scrollWidth, window.innerWidth];", vec![]).await.unwrap();
            assert!(width[0].as_i64() <= width[1].as_i64(), "the page is wider than the window: {width}");
            // Next page, and back.
            click(&c, "#page-next").await;
            wait_js(&c, "page two", "return document.querySelector('#page-range').innerText === '51–100 of 10,006';").await;
            click(&c, "#page-prev").await;
            wait_js(&c, "page one again", "return document.querySelector('#page-range').innerText === '1–50 of 10,006';").await;

            // Substring filters: a part of an agent's name, any case.
            type_into(&c, "#f-agent", "TREASURY").await;
            let asked = Instant::now();
            keys(&c, "#f-agent", "\u{E007}").await;
            wait_js(&c, "the filtered list", &format!("const ids = (function() {{ {ROW_IDS} }})(); return ids.length === 1 && ids[0] === 't-3';")).await;
            let filtered = asked.elapsed();
            type_into(&c, "#f-agent", "").await;

            // Each row says why: rule errors, the score against its thresholds, amounts in
            // the intent's currency and in the base currency.
            submit(&c, "#f-rule", "po-").await;
            let rows = wait_js(&c, "the po-limit holds", "const rows = Array.from(document.querySelectorAll('#holds tr[data-intent-id]')); return rows.length === 2 && rows.map(r => [r.dataset.intentId, r.innerText]);").await;
            let text_of = |id: &str| rows.as_array().unwrap().iter().find(|r| r[0] == id).unwrap()[1].as_str().unwrap().to_owned();
            let h1 = text_of("h-1");
            for want in ["po-limit", "ERROR", "1,500,000", "HUF", "≈ 3,750.0000 EUR"] {
                assert!(h1.contains(want), "{want:?} in the h-1 row: {h1:?}");
            }
            assert!(text_of("j-1").contains("no EUR rate"), "{}", text_of("j-1"));
            type_into(&c, "#f-rule", "").await;
            submit(&c, "#f-text", "s-1").await;
            let s1 = wait_js(&c, "the s-1 row", "const r = document.querySelector('#holds tr[data-intent-id=\"s-1\"]'); return document.querySelectorAll('#holds tr[data-intent-id]').length === 1 && r && r.innerText;").await;
            assert!(s1.as_str().unwrap().contains("score 60 · hold at 50 · deny at 90"), "{s1}");
            // Ages from the intent and from the decision.
            assert!(s1.as_str().unwrap().contains("decided "), "{s1}");
            type_into(&c, "#f-text", "").await;
            // Amount filters are in the base currency: 1,500,000 HUF is not above 10,000 EUR;
            // the JPY payment nobody can convert is kept.
            type_into(&c, "#f-min-amount", "10000").await;
            type_into(&c, "#f-agent", "bot").await;
            submit(&c, "#f-rule", "po-").await;
            wait_js(&c, "only j-1 over 10000 EUR", &format!("const ids = (function() {{ {ROW_IDS} }})(); return ids.length === 1 && ids[0] === 'j-1';")).await;
            click(&c, "#f-clear").await;

            // Bulk: the first page of batch-bot's holds, selected with the keyboard, one comment.
            submit(&c, "#f-agent", "batch-bot").await;
            wait_js(&c, "batch-bot's first page", "return document.querySelector('#hold-count').innerText.startsWith('10,000 pending') && document.querySelectorAll('#holds tr[data-intent-id]').length === 50;").await;
            keys(&c, "#pick-page", " ").await;
            wait_js(&c, "50 selected", "return document.querySelector('#bulk-count').innerText === '50 selected';").await;
            // x on a focused row takes it out of the selection, and puts it back.
            keys(&c, "#holds tr[data-intent-id=\"g-00000\"]", "x").await;
            wait_js(&c, "49 selected", "return document.querySelector('#bulk-count').innerText === '49 selected';").await;
            keys(&c, "#holds tr[data-intent-id=\"g-00000\"]", "x").await;
            wait_js(&c, "50 selected again", "return document.querySelector('#bulk-count').innerText === '50 selected';").await;
            type_into(&c, "#bulk-comment", "batch file 2026-12-07 checked").await;
            click(&c, "#bulk-approve").await;
            wait_js(&c, "the bulk approval", "return document.querySelector('#status').innerText.includes('Approved 50 of 50');").await;
            wait_js(&c, "50 fewer", "return document.querySelector('#hold-count').innerText.startsWith('9,950 pending');").await;

            // The history: who, when, outcome, comment; filtered.
            click(&c, "#tab-history").await;
            wait_js(&c, "the history", "return document.querySelector('#history-count').innerText === '50 ended' && document.querySelectorAll('#history-body tr.ended-row').length === 50;").await;
            let first = c.execute("return document.querySelector('#history-body tr.ended-row').textContent;", vec![]).await.unwrap();
            for want in ["approved", "alice", "batch-bot", "batch file 2026-12-07 checked"] {
                assert!(first.as_str().unwrap().contains(want), "{want:?} in {first}");
            }
            submit(&c, "#h-reviewer", "bob").await;
            wait_js(&c, "nothing by bob", "return document.querySelector('#history-count').innerText === '0 ended';").await;
            let png = c.screenshot().await.unwrap();
            std::fs::write(&screenshot, png).unwrap();
            click(&c, "#tab-queue").await;

            // The proposing agent's own reviewer account sees Approve disabled, and why.
            click(&c, "#logout").await;
            wait_js(&c, "the sign-in form", "return !document.querySelector('#login-view').hidden;").await;
            sign_in(&c, "procurement-bot", "bot-secret-000").await;
            wait_js(&c, "the queue again", "return !document.querySelector('#queue-view').hidden && document.querySelector('#whoami').innerText.includes('procurement-bot');").await;
            submit(&c, "#f-text", "t-1").await;
            wait_js(&c, "the t-1 row", "return !!document.querySelector('#holds tr[data-intent-id=\"t-1\"]');").await;
            click(&c, "#holds tr[data-intent-id=\"t-1\"] td.cp").await;
            let state = wait_js(&c, "the t-1 detail", "const d = document.querySelector('#detail'); return d && !d.hidden && d.innerText.includes('large-transfer') && {approve: document.querySelector('#approve').disabled, reject: document.querySelector('#reject').disabled, why: document.querySelector('#no-approve').innerText};").await;
            assert_eq!((&state["approve"], &state["reject"]), (&serde_json::json!(true), &serde_json::json!(false)), "{state}");
            assert!(state["why"].as_str().unwrap().contains("You proposed this intent"), "{state}");
            (first_rows, filtered)
        }
        .await;
        c.close().await.unwrap();
        result
    });
    drop(driver);
    eprintln!(
        "10,006 pending holds: first rows {:.0} ms after signing in, filtered in {:.0} ms",
        first_rows.as_secs_f64() * 1e3,
        filtered.as_secs_f64() * 1e3
    );
    assert!(first_rows < Duration::from_secs(3), "{first_rows:?}");
    assert!(filtered < Duration::from_secs(2), "{filtered:?}");
    // Each hold of the bulk approval has its own review record.
    let records: Vec<_> = stack
        .review_records()
        .into_iter()
        .filter(|r| r.value["comment"] == "batch file 2026-12-07 checked")
        .collect();
    assert_eq!(records.len(), 50);
    let ids: std::collections::BTreeSet<&str> = records
        .iter()
        .map(|r| r.value["intent_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 50, "one record per hold");
    assert!(records
        .iter()
        .all(|r| r.value["reviewer"] == "alice" && r.value["final"] == true));
}
