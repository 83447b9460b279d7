//! A headless Chromium driven over WebDriver, for the admin page's end-to-end tests.
//!
//! Each `Browser` starts its own `chromedriver` on a free port and one Chromium session with a
//! fresh profile; dropping it ends both. When Chromium or chromedriver is not installed, `start`
//! fails the test if `CI` is set (CI must never skip these), and otherwise returns `None` after a
//! loud message so a developer without a browser can still run the rest of the suite.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
/// Generous: waiting is for the page to settle, never a performance assertion.
const PATIENCE: Duration = Duration::from_secs(30);

pub struct Browser {
    pub client: Client,
    pub downloads: PathBuf,
    driver: Child,
    _profile: tempfile::TempDir,
    _downloads: tempfile::TempDir,
}

fn chromedriver() -> Option<PathBuf> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Browser {
    pub async fn start() -> Option<Browser> {
        let driver_bin = chromedriver();
        if driver_bin.is_none() || !Path::new(CHROMIUM).exists() {
            let msg = "chromium and chromedriver are needed for the admin page's browser tests \
                       (apt-get install -y chromium chromium-driver)";
            if std::env::var_os("CI").is_some() {
                panic!("{msg}: CI must run these tests, not skip them");
            }
            eprintln!("\n!!!!!!!!!!\n!!! SKIPPED: {msg}\n!!!!!!!!!!\n");
            return None;
        }
        let port = free_port();
        let driver = Command::new(driver_bin.unwrap())
            .arg(format!("--port={port}"))
            // Its own process group, so that Chromium and its helpers can be ended with it.
            .process_group(0)
            // A zone that is not UTC, whatever the machine's: the page shows and takes UTC, and a
            // local time slipping in must show in the tests.
            .env("TZ", "America/New_York")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let downloads = tempfile::tempdir().unwrap();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1366,900",
                    // No crash reporter: it would detach from the process group and outlive the test.
                    "--disable-crash-reporter", "--disable-breakpad",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.path().display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        });
        let Value::Object(caps) = caps else { unreachable!() };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        // chromedriver takes a moment to listen; retry the session until it does.
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("cannot open a Chromium session: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        Some(Browser {
            client,
            downloads: downloads.path().to_path_buf(),
            driver,
            _profile: profile,
            _downloads: downloads,
        })
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Runs a script in the page and returns its result.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap()
    }

    /// Waits for an element to exist and be displayed.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                if el.is_displayed().await.unwrap_or(false) {
                    return el;
                }
            }
            assert!(Instant::now() < deadline, "{css} never appeared");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether an element is on the page now (without waiting).
    pub async fn exists(&self, css: &str) -> bool {
        self.js("return document.querySelector(arguments[0]) !== null", vec![json!(css)])
            .await
            .as_bool()
            .unwrap()
    }

    /// The exact textContent of the first element matching `css` ("" if none).
    pub async fn text(&self, css: &str) -> String {
        let v = self
            .js(
                "const el = document.querySelector(arguments[0]); return el ? el.textContent : ''",
                vec![json!(css)],
            )
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Waits until the textContent of `css` equals `expected`.
    pub async fn wait_text(&self, css: &str, expected: &str) {
        self.wait_until(&format!("{css} to read {expected:?}"), || async {
            self.text(css).await == expected
        })
        .await;
    }

    /// Waits until the text of the page's main area contains `needle`.
    pub async fn wait_for_text(&self, needle: &str) {
        self.wait_until(&format!("the page to show {needle:?}"), || async {
            self.text("#app").await.contains(needle)
        })
        .await;
    }

    pub async fn wait_until<F, Fut>(&self, what: &str, mut done: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + PATIENCE;
        while !done().await {
            assert!(Instant::now() < deadline, "gave up waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clears a field and types into it, as a person would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    pub async fn select(&self, css: &str, value: &str) {
        self.find(css).await.select_by_value(value).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    /// Presses Enter on whatever has the focus, as a person at the keyboard would.
    pub async fn press_enter(&self) {
        const ENTER: char = '\u{E007}';
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: ENTER })
            .then(KeyAction::Up { value: ENTER });
        self.client.perform_actions(keys).await.unwrap();
    }

    /// Fails if a JavaScript dialog (alert, confirm, prompt) is open.
    pub async fn assert_no_dialog(&self) {
        if let Ok(text) = self.client.get_alert_text().await {
            panic!("a dialog opened: {text:?}");
        }
    }

    /// Saves a screenshot as `<name>.png` in the folder named by `CRM_SCREENSHOTS`, when set,
    /// so a maintainer can look at the page the tests drove.
    pub async fn snapshot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("CRM_SCREENSHOTS") {
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).unwrap();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver, Chromium and Chromium's helpers share the process group chromedriver
        // leads; killing chromedriver alone would leave Chromium running after a failed test.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
