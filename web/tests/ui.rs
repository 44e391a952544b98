//! The UI's pages over a real control plane following a real Git
//! repository, called as a service (`oneshot`): versions, a rejected
//! version's diagnostics with the highlighted source line, a fix's semantic
//! diff, proxies, rules; repository text never reaches the page unescaped.

use std::path::Path;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

mod common;

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
    let served = common::Served::bookinfo().await;
    let (dir, repo) = (served.work.path(), &served.repo);
    let app = served.app();

    // A commit with an error, and HTML in its YAML and its message.
    std::fs::write(dir.join("xss.yaml"), BAD).unwrap();
    common::commit(repo, "try <script>alert('message')</script>");
    served.until_versions(2).await;

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
    std::fs::remove_file(dir.join("xss.yaml")).unwrap();
    let routing = std::fs::read_to_string(dir.join("routing.yaml")).unwrap();
    std::fs::write(
        dir.join("routing.yaml"),
        routing
            .replacen("weight: 90", "weight: 70", 1)
            .replacen("weight: 10", "weight: 30", 1),
    )
    .unwrap();
    let mut index = repo.index().unwrap();
    index.remove_path(Path::new("xss.yaml")).unwrap();
    index.write().unwrap();
    common::commit(repo, "canary 70/30");
    served.until_versions(3).await;
    let (_, _, html) = get(&app, "/versions/3").await;
    // The raw YAML diff: routing.yaml, the weights side by side, coloured.
    let yaml = html
        .split("<h2>YAML diff</h2>")
        .nth(1)
        .expect("a YAML diff");
    assert!(
        yaml.contains("routing.yaml") && !yaml.contains("xss.yaml"),
        "{yaml}"
    );
    let row = yaml
        .split(r#"<tr class="chg">"#)
        .nth(1)
        .expect("a changed line");
    assert!(
        row.contains(r#"<span class="k">weight</span>"#)
            && row.contains(r#"<span class="v"> 90</span>"#)
            && row.contains(r#"<span class="v"> 70</span>"#),
        "{row}"
    );
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

    // Services: the served routes drawn, and each workload's mTLS and authorization.
    let (status, _, html) = get(&app, "/services").await;
    assert_eq!(status, StatusCode::OK);
    let reviews = html
        .split(r#"<h2 class="mono">reviews.bookinfo.svc.cluster.local</h2>"#)
        .nth(1)
        .expect("the reviews host")
        .split("</svg>")
        .next()
        .unwrap();
    for text in ["70%", "30%", "reviews.bookinfo v3", ">canary<"] {
        assert!(reviews.contains(text), "{text}: {reviews}");
    }
    let workloads = html.split(r#"<table id="workloads">"#).nth(1).unwrap();
    assert!(
        workloads.contains("<tr><td>bookinfo/productpage-v1</td><td>STRICT</td>"),
        "{workloads}"
    );
    assert!(
        workloads.contains("bookinfo/deny-all") || workloads.contains("productpage-from-ingress"),
        "{workloads}"
    );
    let (_, _, html) = get(&app, "/services?q=ratings").await;
    assert!(html.contains("1 of "), "{html}");
    assert!(
        !html.contains("reviews.bookinfo.svc.cluster.local</h2>"),
        "{html}"
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

    // Actions need the token; a wrong one changes nothing.
    let post = |path: &str, body: &str| {
        Request::post(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let control = &served.server.control;
    let resp = app
        .clone()
        .oneshot(post(
            "/ui/actions/rollback",
            "token=wrong&version=1&by=eve&reason=x",
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(control.current().unwrap().version.id, 3);
    let (_, _, html) = get(&app, "/versions/1").await;
    assert!(html.contains(r#"action="/ui/actions/rollback""#), "{html}");
    let resp = app
        .clone()
        .oneshot(post(
            "/ui/actions/rollback",
            &format!(
                "token={}&version=1&by=ann&reason=canary+too+slow",
                common::TOKEN
            ),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/versions/1");
    let now = control.current().unwrap();
    assert_eq!(now.version.id, 1);
    let pin = now.pin.clone().expect("pinned");
    assert_eq!(
        (pin.by.as_str(), pin.reason.as_str()),
        ("ann", "canary too slow")
    );
    let (_, _, html) = get(&app, "/").await;
    assert!(
        html.contains(r#"<span class="badge pinned">pinned</span>"#),
        "{html}"
    );
    assert!(html.contains(r#"action="/ui/actions/unpin""#), "{html}");
    let resp = app
        .clone()
        .oneshot(post(
            "/ui/actions/unpin",
            &format!("token={}&by=ann", common::TOKEN),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(control.current().unwrap().version.id, 3);
    served.server.stop().await;
}
