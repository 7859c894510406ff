//! A real browser for the CLI's tests: Debian's Chromium, headless, driven
//! over the DevTools protocol. [`chromium`] starts it on a URL and gives
//! back its page's session; [`Page::eval`] reads what the page's script
//! wrote, [`Page::wait_for`] polls until it shows. Not a general DevTools
//! client: one page, commands one at a time, events dropped.
//!
//! A test file takes it beside `common` (which it uses):
//! `mod common; #[path = "common/browser.rs"] mod browser;`.

#![allow(dead_code, unreachable_pub)] // each test file uses a different part

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// A DevTools protocol session with one page.
pub struct Page {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
}

impl Page {
    /// Sends `method` with `params` and waits (30 s at most) for its result;
    /// an error answer fails the test.
    pub async fn command(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket.send(Message::text(message)).await.unwrap();
        loop {
            let reply = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .expect("DevTools answered")
                .expect("DevTools connection open")
                .unwrap();
            let Message::Text(text) = reply else { continue };
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .command(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is `true` (20 s at most); `what` names
    /// it in the failure.
    pub async fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.eval(expression).await != Value::Bool(true) {
            assert!(Instant::now() < deadline, "the page never showed {what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A process and everything it started (Chromium's zygote, renderers,
/// GPU process), in a process group of their own, killed together.
pub struct Group(pub Child);

impl Drop for Group {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Headless Chromium with a DevTools port, its profile in `profile`,
/// navigated to `url`: the browser's process group and its page's session.
pub async fn chromium(profile: &std::path::Path, url: &str) -> (Group, Page) {
    use std::os::unix::process::CommandExt;
    let binary = ["/usr/lib/chromium/chromium", "chromium"]
        .into_iter()
        .find(|path| !path.starts_with('/') || std::path::Path::new(path).exists())
        .unwrap();
    let child = Command::new(binary)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-port=0",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("chromium (Debian's `chromium` package; scripts/install-peers.sh installs it)");
    let child = Group(child);
    // Chromium writes its DevTools port to this file once it listens.
    let port_file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            if let Some(port) = text
                .lines()
                .next()
                .and_then(|line| line.parse::<u16>().ok())
            {
                break port;
            }
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not open its DevTools port"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The page's own WebSocket, from the DevTools HTTP endpoint.
    let list: Value = loop {
        let devtools = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let body =
            tokio::task::spawn_blocking(move || crate::common::http_get(devtools, "/json/list"))
                .await
                .unwrap()
                .map(|(_, body)| body);
        if let Some(list) = body.and_then(|body| serde_json::from_str(&body).ok()) {
            break list;
        }
        assert!(Instant::now() < deadline, "no DevTools target list");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let page_url = list
        .as_array()
        .unwrap()
        .iter()
        .find(|target| target["type"] == "page")
        .and_then(|target| target["webSocketDebuggerUrl"].as_str())
        .expect("a page target")
        .to_owned();
    let (socket, _) = tokio_tungstenite::connect_async(page_url).await.unwrap();
    let mut page = Page { socket, next: 0 };
    page.command("Page.enable", json!({})).await;
    page.command("Page.navigate", json!({ "url": url })).await;
    (child, page)
}

/// A fresh Chromium profile directory (removed by the caller).
pub fn profile() -> std::path::PathBuf {
    let profile = std::env::temp_dir().join(format!(
        "sinew-chromium-{}-{}",
        std::process::id(),
        crate::common::rand_suffix()
    ));
    std::fs::create_dir_all(&profile).unwrap();
    profile
}
