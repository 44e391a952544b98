//! The UI's pages over a real control plane following a real Git
//! repository, called as a service (`oneshot`): versions, a rejected
//! version's diagnostics with the highlighted source line, a fix's semantic
//! diff, proxies, rules; repository text never reaches the page unescaped.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use git2::{Repository, Signature};
use meshc_reconciler::serve::{self, Config};
use tower::ServiceExt;

fn commit(repo: &Repository, message: &str) -> String {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("Ann & \"O'Brien\"", "ann@example.invalid").unwrap();
    let parents: Vec<git2::Commit> = repo
        .head()
        .ok()
        .and_then(|h| h.peel_to_commit().ok())
        .into_iter()
        .collect();
    let parents: Vec<&git2::Commit> = parents.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap()
        .to_string()
}

async fn get(app: &axum::Router, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

async fn until_versions(control: &meshc_reconciler::control::Control, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while control.store.versions(100).unwrap().len() < n {
        assert!(Instant::now() < deadline, "version {n} never recorded");
        control.sync_now.notify_one();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const BAD: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: xss
  namespace: bookinfo
  labels:
    "<img src=x onerror=alert(1)>": "<script>alert('value')</script>"
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings, subset: "<script>alert('subset')</script>"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_show_versions_diagnostics_diffs_and_escape_everything() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies-examples/bookinfo");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    commit(&repo, "bookinfo");
    let data = tempfile::tempdir().unwrap();
    let mut config = Config::new(
        &format!("file://{}", dir.path().display()),
        data.path().into(),
    );
    config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.poll = Duration::from_secs(3600);
    config.bootstrap_token = "boot".into();
    let server = serve::start(config.clone()).await.unwrap();
    let app = meshc_web::router(Arc::new(meshc_web::Web {
        control: server.control.clone(),
        mirror: data.path().join("mirror.git"),
        subpath: String::new(),
    }));
    until_versions(&server.control, 1).await;

    // A commit with an error, and HTML in its YAML and its message.
    std::fs::write(dir.path().join("xss.yaml"), BAD).unwrap();
    commit(&repo, "try <script>alert('message')</script>");
    until_versions(&server.control, 2).await;

    let (status, headers, html) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(html.contains(r#"<tr id="v2">"#), "{html}");
    assert!(
        html.contains(r#"<span class="badge rejected">rejected</span>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<span class="badge accepted">served</span>"#),
        "{html}"
    );
    assert!(
        html.contains("try &#60;script&#62;alert(&#39;message&#39;)&#60;/script&#62;"),
        "{html}"
    );
    assert!(!html.contains("Ann & \"O'Brien"), "{html}");
    assert!(html.contains("Ann &#38; &#34;O&#39;Brien"), "{html}");

    let (status, _, html) = get(&app, "/versions/2").await;
    assert_eq!(status, StatusCode::OK);
    // The diagnostic: code linked to its rule, file, the highlighted line.
    assert!(html.contains(r#"href="/rules#MC0101""#), "{html}");
    assert!(html.contains("xss.yaml"), "{html}");
    // The subset is on line 12 of xss.yaml: highlighted in the excerpt.
    let mc0101 = html
        .split(r#"href="/rules#MC0101""#)
        .nth(1)
        .expect("MC0101 listed");
    let excerpt = mc0101.split(r#"class="diag""#).next().unwrap();
    assert!(
        excerpt.contains(r#"<div class="hl"><span class="n">12</span>"#),
        "{excerpt}"
    );
    assert!(
        html.contains("Rejected: it never reached a proxy"),
        "{html}"
    );

    // Nothing from the repository is markup.
    for page in ["/", "/versions/2", "/versions/1"] {
        let (_, _, html) = get(&app, page).await;
        assert!(!html.contains("<script>alert"), "{page}: {html}");
        assert!(!html.contains("<img src=x"), "{page}: {html}");
        assert_eq!(
            html.matches("<script").count(),
            1,
            "{page}: only the page's own script tag"
        );
    }

    // A fix that changes the canary's weights: its semantic diff.
    std::fs::remove_file(dir.path().join("xss.yaml")).unwrap();
    let routing = std::fs::read_to_string(dir.path().join("routing.yaml")).unwrap();
    std::fs::write(
        dir.path().join("routing.yaml"),
        routing
            .replacen("weight: 90", "weight: 70", 1)
            .replacen("weight: 10", "weight: 30", 1),
    )
    .unwrap();
    let mut index = repo.index().unwrap();
    index.remove_path(Path::new("xss.yaml")).unwrap();
    index.write().unwrap();
    commit(&repo, "canary 70/30");
    until_versions(&server.control, 3).await;
    let (_, _, html) = get(&app, "/versions/3").await;
    assert!(
        html.contains(r#"<span class="badge accepted">accepted</span>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"href="/versions/1""#),
        "against version 1: {html}"
    );
    let changes = html.split(r#"<ul id="changes">"#).nth(1).expect("changes");
    assert!(
        changes.contains("reviews.bookinfo") && changes.contains("90") && changes.contains("70"),
        "{changes}"
    );
    assert!(
        changes.contains("reaches ") && changes.contains("bookinfo/productpage-v1"),
        "{changes}"
    );

    let (status, _, html) = get(&app, "/proxies").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No proxy has connected."), "{html}");
    let (_, _, html) = get(&app, "/rules").await;
    assert!(
        html.contains(r#"<section class="rule" id="MC0101">"#),
        "{html}"
    );
    let (status, _, _) = get(&app, "/versions/99").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, headers, js) = get(&app, "/static/live.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(js.contains("/ui/live"));
    let (_, _, stamp) = get(&app, "/ui/live").await;
    assert!(stamp.starts_with("v3"), "{stamp}");
    server.stop().await;
}
