//! meshc's web UI: server-rendered pages (askama templates, escaped by
//! default) over the control plane's state. It holds no state of its own:
//! every page reads the store, the proxies' status and the Git mirror.
//!
//! - `/`: the versions, newest first: verdict, pin, author, message, time,
//!   IR hash, error and warning counts, how many proxies run each;
//! - `/versions/{id}`: its diagnostics grouped by file, each with the source
//!   excerpt around it (the line highlighted), the YAML path, help and a link
//!   to the rule; the semantic diff against the previous accepted version;
//! - `/proxies`: each proxy's state, desired and running version, message;
//!   drift highlighted;
//! - `/rules`: every rule's documentation, as `meshc explain` prints it.
//!
//! A small script (`/static/live.js`, no inline script: the
//! Content-Security-Policy forbids it) polls `/ui/live` and swaps the page's
//! `<main>` when something changed. Nothing is loaded from elsewhere.

#![forbid(unsafe_code)]

mod yamldiff;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use meshc_ir::Ir;
use meshc_reconciler::control::{Control, SyncState};
use meshc_reconciler::store::{StoredChange, Verdict, Version};

/// What the UI reads.
pub struct Web {
    /// The control plane.
    pub control: Arc<Control>,
    /// The Git mirror (bare), for source excerpts.
    pub mirror: PathBuf,
    /// The sub-path of the repository the policy is under.
    pub subpath: String,
    /// The API token actions need (none: the UI is read-only).
    pub token: Option<String>,
    /// What version pages show that never changes (diagnostics with their
    /// excerpts, the semantic and the YAML diff), for the last few versions
    /// viewed: reading two commits and decoding two IRs is the costly part.
    cache: std::sync::Mutex<Vec<(u64, Arc<VersionStatic>)>>,
}

/// Version pages kept in [`Web`]'s cache.
const CACHED_PAGES: usize = 16;

impl Web {
    /// The UI over `control`, reading sources from the bare `mirror` under
    /// `subpath`; actions need `token`.
    pub fn new(
        control: Arc<Control>,
        mirror: PathBuf,
        subpath: String,
        token: Option<String>,
    ) -> Web {
        Web {
            control,
            mirror,
            subpath,
            token,
            cache: std::sync::Mutex::new(Vec::new()),
        }
    }
}

/// The UI's routes. Inside a tokio runtime, a background task also
/// prepares the newest version's page as soon as it is recorded, so even its
/// first view is served from the cache.
pub fn router(web: Arc<Web>) -> Router {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(warm(Arc::downgrade(&web)));
    }
    Router::new()
        .route("/", get(versions))
        .route("/versions/{id}", get(version))
        .route("/proxies", get(proxies))
        .route("/rules", get(rules))
        .route("/services", get(services))
        .route("/ui/actions/{action}", axum::routing::post(action))
        .route("/ui/live", get(live))
        .route("/static/app.css", get(CSS.route()))
        .route("/static/live.js", get(JS.route()))
        .route("/static/favicon.svg", get(ICON.route()))
        .route("/favicon.ico", get(ICON.route()))
        .layer(axum::middleware::map_response(secure))
        .with_state(web)
}

/// Standard headers on every page.
async fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    r
}

/// A file built into the binary: its content type and text.
struct Asset(&'static str, &'static str);

const CSS: Asset = Asset("text/css; charset=utf-8", include_str!("../static/app.css"));
const JS: Asset = Asset(
    "text/javascript; charset=utf-8",
    include_str!("../static/live.js"),
);
const ICON: Asset = Asset("image/svg+xml", include_str!("../static/favicon.svg"));

impl Asset {
    /// A handler answering with it.
    fn route(self) -> impl Fn() -> std::future::Ready<Response> + Clone + Send + 'static {
        move || std::future::ready(([(header::CONTENT_TYPE, self.0)], self.1).into_response())
    }
}

fn page(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn failure(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, message.to_string()).into_response()
}

/// `YYYY-MM-DD hh:mm:ss` (UTC) of seconds since the epoch.
fn utc(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn short(s: &str) -> String {
    s.chars().take(12).collect()
}

/// One version as a row.
struct Row {
    id: u64,
    verdict: &'static str,
    pinned: bool,
    served: bool,
    commit: String,
    commit_short: String,
    message: String,
    author: String,
    time: String,
    ir_hash: String,
    ir_short: String,
    errors: usize,
    warnings: usize,
    running: usize,
}

fn row(
    v: &Version,
    current: Option<&meshc_reconciler::control::Snapshot>,
    running: &BTreeMap<String, usize>,
) -> Row {
    let served = current.is_some_and(|s| s.version.id == v.id);
    let pinned = current
        .and_then(|s| s.pin.as_ref())
        .is_some_and(|p| p.version == v.id);
    Row {
        id: v.id,
        verdict: match v.verdict {
            Verdict::Accepted => "accepted",
            Verdict::Rejected => "rejected",
        },
        pinned,
        served,
        commit: v.commit.clone(),
        commit_short: short(&v.commit),
        message: v.message.lines().next().unwrap_or("").to_string(),
        author: v.author.clone(),
        time: utc(v.committed_at),
        ir_hash: v.ir_hash.clone().unwrap_or_else(|| "none".into()),
        ir_short: v.ir_hash.as_deref().map(short).unwrap_or_default(),
        errors: v.errors,
        warnings: v.warnings,
        running: running.get(&v.commit).copied().unwrap_or(0),
    }
}

/// Connected proxies by the commit they run.
fn running_by_commit(web: &Web) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in web.control.proxies() {
        if p.connected
            && let Some(c) = p.running_commit
        {
            *m.entry(c).or_default() += 1;
        }
    }
    m
}

fn served_id(web: &Web) -> Option<u64> {
    web.control.current().map(|s| s.version.id)
}

#[derive(Template)]
#[template(path = "versions.html")]
struct VersionsPage {
    served: Option<u64>,
    rows: Vec<Row>,
    /// Whether actions are possible (a token is configured).
    actions: bool,
    pinned: bool,
}

async fn versions(State(web): State<Arc<Web>>) -> Response {
    let vs = match web.control.store.versions(1000) {
        Ok(v) => v,
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let running = running_by_commit(&web);
    let current = web.control.current();
    let rows: Vec<Row> = vs
        .iter()
        .map(|v| row(v, current.as_deref(), &running))
        .collect();
    page(&VersionsPage {
        served: served_id(&web),
        actions: web.token.is_some(),
        pinned: rows.iter().any(|r| r.pinned),
        rows,
    })
}

struct Line {
    number: usize,
    text: String,
    hit: bool,
}

struct DiagView {
    anchor: String,
    code: String,
    severity: String,
    message: String,
    path: Option<String>,
    help: Option<String>,
    line: u64,
    column: u64,
    excerpt: Vec<Line>,
}

struct FileDiags {
    file: String,
    diags: Vec<DiagView>,
}

struct ChangeRow {
    kind: &'static str,
    text: String,
    reaches: String,
}

/// The parts of a version page that never change.
struct VersionStatic {
    files: Vec<FileDiags>,
    previous: Option<u64>,
    changes: Vec<ChangeRow>,
    no_diff: String,
    /// The version the YAML diff is against (the previous accepted one).
    base: Option<u64>,
    yaml: Vec<yamldiff::FileDiff>,
}

#[derive(Template)]
#[template(path = "version.html")]
struct VersionPage {
    served: Option<u64>,
    row: Row,
    reason: Option<String>,
    /// Whether it can be rolled back to (accepted, not served, a token set).
    rollback: bool,
    s: Arc<VersionStatic>,
}

/// The policy files at `commit` (YAML and `meshc.toml`: what diagnostics
/// point into), by path.
/// The policy files of `commit`, path to blob id, none of them read.
fn policy_ids(
    web: &Web,
    repo: Option<&git2::Repository>,
    commit: &str,
) -> BTreeMap<String, git2::Oid> {
    repo.and_then(|r| meshc_reconciler::commit::policy_ids(r, commit, &web.subpath).ok())
        .map(|ids| ids.into_iter().collect())
        .unwrap_or_default()
}

/// The text of the files of `ids` that `wanted` names.
fn read_files(
    repo: Option<&git2::Repository>,
    ids: &BTreeMap<String, git2::Oid>,
    wanted: impl Fn(&str) -> bool,
) -> BTreeMap<String, String> {
    let Some(repo) = repo else {
        return BTreeMap::new();
    };
    ids.iter()
        .filter(|(path, _)| wanted(path))
        .filter_map(|(path, id)| {
            let blob = repo.find_blob(*id).ok()?;
            Some((
                path.clone(),
                String::from_utf8(blob.content().to_vec()).ok()?,
            ))
        })
        .collect()
}

fn excerpt(text: &str, line: usize, end_line: usize) -> Vec<Line> {
    let first = line.saturating_sub(2).max(1);
    let last = end_line.max(line) + 2;
    text.lines()
        .enumerate()
        .map(|(i, t)| (i + 1, t))
        .filter(|(n, _)| (first..=last).contains(n))
        .map(|(n, t)| Line {
            number: n,
            text: t.to_string(),
            hit: (line..=end_line.max(line)).contains(&n),
        })
        .collect()
}

fn ir_of(web: &Web, v: &Version) -> Option<Ir> {
    let bytes = web.control.store.ir(v.ir_hash.as_deref()?).ok()??;
    Ir::decode(&bytes).ok()
}

async fn version(State(web): State<Arc<Web>>, Path(id): Path<String>) -> Response {
    let v = match web.control.store.find(&id) {
        Ok(Some(v)) => v,
        Ok(None) => return failure(StatusCode::NOT_FOUND, format!("no version `{id}`")),
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let web2 = web.clone();
    // Reading Git and decoding IRs is blocking work.
    let built = tokio::task::spawn_blocking(move || version_page(&web2, v)).await;
    match built {
        Ok(Ok(p)) => page(&p),
        Ok(Err(e)) => failure(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Prepare the newest version's page whenever a new version is recorded;
/// ends when the UI is gone.
async fn warm(web: std::sync::Weak<Web>) {
    let mut done = None;
    loop {
        let Some(w) = web.upgrade() else {
            return;
        };
        let newest = w
            .control
            .store
            .versions(1)
            .ok()
            .and_then(|v| v.into_iter().next());
        if let Some(v) = newest
            && done != Some(v.id)
        {
            done = Some(v.id);
            let _ = tokio::task::spawn_blocking(move || cached_static(&w, &v)).await;
        } else {
            drop(w);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// The unchanging part of `v`'s page, from the cache or built (and cached).
fn cached_static(web: &Web, v: &Version) -> Result<Arc<VersionStatic>, String> {
    let cached = {
        let cache = web.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .iter()
            .find(|(id, _)| *id == v.id)
            .map(|(_, s)| s.clone())
    };
    if let Some(s) = cached {
        return Ok(s);
    }
    let s = Arc::new(version_static(web, v)?);
    let mut cache = web.cache.lock().unwrap_or_else(|e| e.into_inner());
    cache.retain(|(id, _)| *id != v.id);
    cache.push((v.id, s.clone()));
    if cache.len() > CACHED_PAGES {
        cache.remove(0);
    }
    Ok(s)
}

fn version_page(web: &Web, v: Version) -> Result<VersionPage, String> {
    let s = cached_static(web, &v)?;
    let running = running_by_commit(web);
    let this = row(&v, web.control.current().as_deref(), &running);
    Ok(VersionPage {
        rollback: web.token.is_some() && v.verdict == Verdict::Accepted && !this.served,
        served: served_id(web),
        row: this,
        reason: v.reason.clone(),
        s,
    })
}

fn version_static(web: &Web, v: &Version) -> Result<VersionStatic, String> {
    let diags = match &v.diagnostics {
        serde_json::Value::Object(o) => o.get("diagnostics").cloned().unwrap_or_default(),
        other => other.clone(),
    };
    let mut by_file: BTreeMap<String, Vec<DiagView>> = BTreeMap::new();
    // The previous accepted version: what the changes are shown against.
    let previous = web
        .control
        .store
        .accepted_before(v.id)
        .map_err(|e| e.to_string())?;
    let previous = previous.as_ref();
    // Only files that are read: those the diagnostics point into (for the
    // excerpts) and those whose blob differs from the previous version's (for
    // the YAML diff). A commit that changes one file of ten thousand reads
    // a handful.
    let repo = git2::Repository::open_bare(&web.mirror).ok();
    let new_ids = policy_ids(web, repo.as_ref(), &v.commit);
    let old_ids = previous
        .map(|p| policy_ids(web, repo.as_ref(), &p.commit))
        .unwrap_or_default();
    let changed: std::collections::BTreeSet<&str> = old_ids
        .keys()
        .chain(new_ids.keys())
        .filter(|p| old_ids.get(*p) != new_ids.get(*p))
        .map(String::as_str)
        .collect();
    let pointed: std::collections::BTreeSet<&str> = diags
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["file"].as_str())
        .collect();
    let sources = read_files(repo.as_ref(), &new_ids, |p| {
        pointed.contains(p) || changed.contains(p)
    });
    for (i, d) in diags.as_array().into_iter().flatten().enumerate() {
        let s = |k: &str| d[k].as_str().map(str::to_string);
        let n = |k: &str| d[k].as_u64().unwrap_or(0);
        let file = s("file").unwrap_or_default();
        let text = sources.get(&file);
        let (line, end) = (n("line"), n("end_line"));
        by_file.entry(file).or_default().push(DiagView {
            anchor: format!("d{i}"),
            code: s("code").unwrap_or_default(),
            severity: s("severity").unwrap_or_default(),
            message: s("message").unwrap_or_default(),
            path: s("path"),
            help: s("help"),
            line,
            column: n("column"),
            excerpt: text
                .map(|t| excerpt(t, line as usize, end as usize))
                .unwrap_or_default(),
        });
    }
    // The semantic diff against the previous accepted version.
    let (mut changes, mut no_diff) = (Vec::new(), String::new());
    let previous_id = match (previous, v.verdict) {
        (_, Verdict::Rejected) => {
            no_diff = "Rejected: it never reached a proxy, so there is nothing to compare.".into();
            None
        }
        (None, _) => {
            no_diff = "The first accepted version: nothing to compare with.".into();
            None
        }
        (Some(p), Verdict::Accepted) => {
            // Kept when the version was recorded; else worked out from the
            // two IRs (versions recorded by an older meshc).
            let stored = web.control.store.changes(v.id).map_err(|e| e.to_string())?;
            let worked_out = || match (ir_of(web, p), ir_of(web, v)) {
                (Some(a), Some(b)) => StoredChange::between(&a, &b),
                _ => Vec::new(),
            };
            for c in stored.unwrap_or_else(worked_out) {
                changes.push(ChangeRow {
                    kind: match c.kind.as_str() {
                        "added" => "added",
                        "removed" => "removed",
                        _ => "changed",
                    },
                    text: c.text,
                    reaches: c.reaches.join(", "),
                });
            }
            Some(p.id)
        }
    };
    let yaml = match previous {
        Some(_) => {
            let old = read_files(repo.as_ref(), &old_ids, |p| changed.contains(p));
            let new: BTreeMap<String, String> = sources
                .iter()
                .filter(|(p, _)| changed.contains(p.as_str()))
                .map(|(p, t)| (p.clone(), t.clone()))
                .collect();
            yamldiff::diff(&old, &new)
        }
        None => Vec::new(),
    };
    Ok(VersionStatic {
        files: by_file
            .into_iter()
            .map(|(file, diags)| FileDiags { file, diags })
            .collect(),
        previous: previous_id,
        changes,
        no_diff,
        base: previous.map(|p| p.id),
        yaml,
    })
}

struct ProxyRow {
    id: String,
    workload: String,
    state: &'static str,
    connected: bool,
    desired: String,
    running: String,
    address: String,
    message: String,
    drift: bool,
}

#[derive(Template)]
#[template(path = "proxies.html")]
struct ProxiesPage {
    served: Option<u64>,
    rows: Vec<ProxyRow>,
    connected: usize,
    synced: usize,
    drifted: usize,
}

async fn proxies(State(web): State<Arc<Web>>) -> Response {
    let mut all = web.control.proxies();
    all.sort_by(|a, b| (&a.workload, &a.id).cmp(&(&b.workload, &b.id)));
    let rows: Vec<ProxyRow> = all
        .iter()
        .map(|p| ProxyRow {
            id: p.id.clone(),
            workload: p.workload.clone(),
            state: p.state.as_str(),
            connected: p.connected,
            desired: p.desired_commit.as_deref().map(short).unwrap_or_default(),
            running: p.running_commit.as_deref().map(short).unwrap_or_default(),
            address: p.address.clone(),
            message: p.message.clone().unwrap_or_default(),
            drift: p.connected && p.drifted(),
        })
        .collect();
    page(&ProxiesPage {
        served: served_id(&web),
        connected: all.iter().filter(|p| p.connected).count(),
        synced: all
            .iter()
            .filter(|p| p.connected && p.state == SyncState::Synced)
            .count(),
        drifted: rows.iter().filter(|r| r.drift).count(),
        rows,
    })
}

struct RuleView {
    code: &'static str,
    name: &'static str,
    severity: &'static str,
    summary: &'static str,
    upstream: String,
    doc: String,
}

#[derive(Template)]
#[template(path = "rules.html")]
struct RulesPage {
    served: Option<u64>,
    rules: Vec<RuleView>,
}

async fn rules(State(web): State<Arc<Web>>) -> Response {
    page(&RulesPage {
        served: served_id(&web),
        rules: meshc_compiler::rules::ALL
            .iter()
            .map(|r| RuleView {
                code: r.code,
                name: r.name,
                severity: r.severity.as_str(),
                summary: r.summary,
                upstream: r.upstream_codes().join(", "),
                doc: r.documentation(),
            })
            .collect(),
    })
}

/// A text in the topology drawing.
struct SvgText {
    x: u32,
    y: u32,
    class: &'static str,
    text: String,
    title: String,
}

/// An edge in the topology drawing, with its label (a weight).
struct SvgEdge {
    x1: u32,
    y1: u32,
    x2: u32,
    y2: u32,
    label: String,
    lx: u32,
    ly: u32,
}

struct HostView {
    name: String,
    height: u32,
    texts: Vec<SvgText>,
    edges: Vec<SvgEdge>,
}

struct WorkloadView {
    name: String,
    identity: String,
    mtls: String,
    custom: String,
    deny: String,
    allow: String,
}

#[derive(Template)]
#[template(path = "services.html")]
struct ServicesPage {
    served: Option<u64>,
    query: String,
    shown: usize,
    total: usize,
    hosts: Vec<HostView>,
    workloads: Vec<WorkloadView>,
}

/// The most hosts drawn on one page; `?q=` narrows them.
const MAX_HOSTS: usize = 200;

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

/// One host's routes as a drawing: the host, its rules in order, each
/// rule's destinations with their weights.
fn host_view(name: &str, h: &meshc_ir::HostPolicy, cluster_domain: &str) -> HostView {
    const ROW: u32 = 24;
    let short = |host: &str| meshc_ir::diff::short_host(host, cluster_domain);
    let rules: Vec<(String, Vec<(String, u32)>)> = if h.http.is_empty() {
        vec![("default".to_string(), vec![(short(name), 100)])]
    } else {
        h.http
            .iter()
            .map(|r| {
                let dests = match &r.action {
                    meshc_ir::HttpAction::Route(ds) => ds
                        .iter()
                        .map(|d| {
                            let mut label = short(&d.host);
                            if let Some(s) = &d.subset {
                                label = format!("{label} {s}");
                            }
                            (label, d.weight)
                        })
                        .collect(),
                    meshc_ir::HttpAction::Redirect(_) => vec![("redirect".to_string(), 100)],
                    meshc_ir::HttpAction::DirectResponse { status, .. } => {
                        vec![(format!("answers {status}"), 100)]
                    }
                };
                (r.name.clone(), dests)
            })
            .collect()
    };
    let rows: u32 = rules.iter().map(|(_, d)| d.len().max(1) as u32).sum();
    let height = rows * ROW + 16;
    let host_y = height / 2;
    let mut texts = vec![SvgText {
        x: 8,
        y: host_y + 4,
        class: "host",
        text: clip(&short(name), 26),
        title: name.to_string(),
    }];
    let mut edges = Vec::new();
    let mut row = 0;
    for (rule, dests) in &rules {
        let n = dests.len().max(1) as u32;
        let rule_y = 12 + (row * 2 + n) * ROW / 2;
        edges.push(SvgEdge {
            x1: 200,
            y1: host_y,
            x2: 236,
            y2: rule_y,
            label: String::new(),
            lx: 0,
            ly: 0,
        });
        texts.push(SvgText {
            x: 240,
            y: rule_y + 4,
            class: "rule",
            text: clip(rule, 28),
            title: rule.clone(),
        });
        for (i, (dest, weight)) in dests.iter().enumerate() {
            let y = 12 + (row + i as u32) * ROW + ROW / 2;
            edges.push(SvgEdge {
                x1: 452,
                y1: rule_y,
                x2: 560,
                y2: y,
                label: format!("{weight}%"),
                lx: 522,
                ly: y - 3,
            });
            texts.push(SvgText {
                x: 566,
                y: y + 4,
                class: "dest",
                text: clip(dest, 34),
                title: dest.clone(),
            });
        }
        row += n;
    }
    HostView {
        name: name.to_string(),
        height,
        texts,
        edges,
    }
}

#[derive(serde::Deserialize)]
struct ServicesQuery {
    #[serde(default)]
    q: String,
}

async fn services(
    State(web): State<Arc<Web>>,
    axum::extract::Query(query): axum::extract::Query<ServicesQuery>,
) -> Response {
    let Some(snapshot) = web.control.current() else {
        return page(&ServicesPage {
            served: None,
            query: query.q,
            shown: 0,
            total: 0,
            hosts: Vec::new(),
            workloads: Vec::new(),
        });
    };
    let ir = &snapshot.ir;
    let q = query.q.to_ascii_lowercase();
    let matching: Vec<(&String, &meshc_ir::HostPolicy)> = ir
        .hosts
        .iter()
        .filter(|(h, _)| q.is_empty() || h.contains(&q))
        .collect();
    let hosts = matching
        .iter()
        .take(MAX_HOSTS)
        .map(|(name, h)| host_view(name, h, &ir.mesh.cluster_domain))
        .collect();
    let names = |ps: &[meshc_ir::AuthzPolicy]| {
        ps.iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let workloads = ir
        .workloads
        .iter()
        .filter(|(w, _)| q.is_empty() || w.contains(&q))
        .take(MAX_HOSTS)
        .map(|(name, w)| {
            let mut mtls = w.mtls.mode.as_str().to_string();
            for (port, mode) in &w.mtls.ports {
                let _ = write!(mtls, ", port {port}: {}", mode.as_str());
            }
            WorkloadView {
                name: name.clone(),
                identity: w.identity.clone(),
                mtls,
                custom: names(&w.authz.custom),
                deny: names(&w.authz.deny),
                allow: names(&w.authz.allow),
            }
        })
        .collect();
    page(&ServicesPage {
        served: Some(snapshot.version.id),
        query: query.q,
        shown: matching.len().min(MAX_HOSTS),
        total: ir.hosts.len(),
        hosts,
        workloads,
    })
}

#[derive(serde::Deserialize)]
struct ActionForm {
    token: String,
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    version: String,
}

/// Sync now, roll back to a version, or unpin: with the API token, logged,
/// then back to the page (303). A wrong or missing token changes nothing.
async fn action(
    State(web): State<Arc<Web>>,
    Path(action): Path<String>,
    axum::Form(form): axum::Form<ActionForm>,
) -> Response {
    let Some(token) = &web.token else {
        return failure(
            StatusCode::FORBIDDEN,
            "actions are disabled: no API token is configured",
        );
    };
    if !meshc_reconciler::distribution::constant_time_eq(form.token.as_bytes(), token.as_bytes()) {
        tracing::warn!(action, "UI action refused: wrong token");
        return failure(
            StatusCode::FORBIDDEN,
            "the token is not right; nothing was done",
        );
    }
    let by = if form.by.trim().is_empty() {
        "web UI".to_string()
    } else {
        form.by.trim().to_string()
    };
    let back = |to: String| {
        (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, to)],
            String::new(),
        )
            .into_response()
    };
    let control = web.control.clone();
    match action.as_str() {
        "sync" => {
            tracing::info!(by, "sync requested in the UI");
            control.sync_now.notify_one();
            back("/".into())
        }
        "rollback" => {
            let (version, reason) = (form.version.clone(), form.reason.clone());
            let done =
                tokio::task::spawn_blocking(move || control.rollback(&version, &by, &reason)).await;
            match done {
                Ok(Ok(v)) => back(format!("/versions/{}", v.id)),
                Ok(Err(e)) => failure(StatusCode::BAD_REQUEST, e),
                Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        }
        "unpin" => {
            let done = tokio::task::spawn_blocking(move || control.unpin(&by)).await;
            match done {
                Ok(Ok(_)) => back("/".into()),
                Ok(Err(e)) => failure(StatusCode::BAD_REQUEST, e),
                Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, e),
            }
        }
        _ => failure(StatusCode::NOT_FOUND, format!("no action `{action}`")),
    }
}

/// A stamp of what the pages show: it changes when a commit is recorded,
/// the served version changes or a proxy changes state.
async fn live(State(web): State<Arc<Web>>) -> Response {
    let mut stamp = String::new();
    if let Ok(vs) = web.control.store.versions(1) {
        for v in vs {
            let _ = write!(stamp, "v{}", v.id);
        }
    }
    if let Some(s) = web.control.current() {
        let _ = write!(stamp, " s{}{}", s.version.id, s.pin.is_some());
    }
    let mut ps = web.control.proxies();
    ps.sort_by(|a, b| a.id.cmp(&b.id));
    for p in ps {
        let _ = write!(
            stamp,
            " {}:{}:{}:{}",
            p.id,
            p.state.as_str(),
            p.connected,
            p.running_commit.as_deref().unwrap_or("")
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], stamp).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_795_325_310), "2026-11-22 05:28:30");
    }

    #[test]
    fn excerpts_highlight_the_lines_of_the_finding() {
        let text = "a\nb\nc\nd\ne\nf\ng\n";
        let e = excerpt(text, 4, 4);
        let got: Vec<(usize, bool)> = e.iter().map(|l| (l.number, l.hit)).collect();
        assert_eq!(
            got,
            [(2, false), (3, false), (4, true), (5, false), (6, false)]
        );
        assert_eq!(excerpt(text, 1, 2)[0].number, 1);
    }
}
