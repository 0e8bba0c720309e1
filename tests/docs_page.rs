//! The API page as a person sees it: headless Chromium (Debian's package;
//! scripts/test installs it) loads `/docs` from a real server with every
//! address but loopback unreachable, and the rendered page must list the
//! operations. A screenshot is kept under the target directory.

use std::process::Command;
use std::time::Duration;

use errata::config::StoreKind;
use errata_testkit::TestApp;

fn chromium(args: &[String]) -> String {
    let profile = tempfile::tempdir().expect("a profile folder");
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            // The network is off: names resolve to nothing and every
            // connection but loopback goes to a proxy that is not there.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--proxy-server=http://127.0.0.1:9",
            "--proxy-bypass-list=127.0.0.1",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .output()
        .expect("chromium runs (is it installed? scripts/test installs it)");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_lists_the_operations_with_no_network() {
    let app = TestApp::spawn(StoreKind::Embedded, |_| {}).await;
    let url = app.url("/docs");

    let page = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || chromium(&["--dump-dom".into(), url]))
            .await
            .expect("chromium's thread")
    };
    // Swagger UI rendered the document: one block per operation.
    assert!(page.contains("opblock"), "no operation rendered:\n{page}");
    for path in [
        "/users/",
        "/conversations/",
        "/utterances/",
        "/simulate-and-generate",
        "/generate-exercise",
        "/readyz",
    ] {
        assert!(
            page.contains(&format!(">{path}<")) || page.contains(&format!("\"{path}\"")),
            "{path} is not on the page"
        );
    }

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("docs-page.png");
    let _ = std::fs::remove_file(&shot);
    tokio::task::spawn_blocking({
        let shot = shot.clone();
        move || {
            chromium(&[
                format!("--screenshot={}", shot.display()),
                "--window-size=1280,1600".into(),
                url,
            ])
        }
    })
    .await
    .expect("chromium's thread");
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "no screenshot at {} ({size} bytes)",
        shot.display()
    );
    eprintln!("screenshot: {}", shot.display());

    tokio::time::timeout(Duration::from_secs(10), app.shutdown())
        .await
        .expect("the server stops");
}
