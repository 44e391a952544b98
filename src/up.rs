//! `meshc up`: the whole mesh on loopback, for a first look.
//!
//! A policy repository seeded from `policies-examples/bookinfo` (embedded in
//! the binary), the control plane following it, and for every workload of
//! the policy an echo application behind its own proxy. Then a little
//! traffic, and what to try next. Ctrl-C stops everything.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use meshc_dataplane::{echo, http as dhttp, proxy};

/// The seed policy: bookinfo as shipped.
const SEED: &[(&str, &str)] = &[
    (
        "destination-rules.yaml",
        include_str!("../policies-examples/bookinfo/destination-rules.yaml"),
    ),
    (
        "namespaces.yaml",
        include_str!("../policies-examples/bookinfo/namespaces.yaml"),
    ),
    (
        "routing.yaml",
        include_str!("../policies-examples/bookinfo/routing.yaml"),
    ),
    (
        "security.yaml",
        include_str!("../policies-examples/bookinfo/security.yaml"),
    ),
    (
        "workloads.yaml",
        include_str!("../policies-examples/bookinfo/workloads.yaml"),
    ),
];

#[derive(Args)]
pub struct UpArgs {
    /// Where the policy repository and the control plane's data live
    /// (created and seeded when missing; kept, with your commits, otherwise).
    #[arg(long, default_value = "meshc-up")]
    dir: PathBuf,
    /// Control plane gRPC address.
    #[arg(long, default_value = "127.0.0.1:15010")]
    grpc_addr: SocketAddr,
    /// Control plane HTTP API.
    #[arg(long, default_value = "127.0.0.1:15014")]
    http_addr: SocketAddr,
    /// Requests of the demonstration traffic.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Start, drive the traffic, print, and stop (no waiting for Ctrl-C).
    #[arg(long)]
    once: bool,
}

/// Create the repository with the seed policy as its first commit.
fn seed(repo: &Path) -> Result<()> {
    std::fs::create_dir_all(repo)?;
    for (name, text) in SEED {
        std::fs::write(repo.join(name), text)?;
    }
    let r = git2::Repository::init_opts(
        repo,
        git2::RepositoryInitOptions::new().initial_head("main"),
    )?;
    let mut index = r.index()?;
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = r.find_tree(index.write_tree()?)?;
    let sig = git2::Signature::now("meshc up", "meshc-up@localhost")?;
    r.commit(
        Some("HEAD"),
        &sig,
        &sig,
        "Bookinfo policy, seeded by meshc up",
        &tree,
        &[],
    )?;
    Ok(())
}

struct Workload {
    name: String,
    service: String,
    version: String,
    echo: echo::Echo,
    proxy: proxy::Proxy,
}

pub fn run(args: UpArgs) -> Result<u8> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(up(args))
}

async fn up(args: UpArgs) -> Result<u8> {
    let dir = std::path::absolute(&args.dir)?;
    let repo = dir.join("repo");
    if !repo.join(".git").exists() {
        seed(&repo).with_context(|| format!("seeding {}", repo.display()))?;
        eprintln!("seeded the policy repository {}", repo.display());
    }
    std::fs::create_dir_all(dir.join("data"))?;
    let token = meshc_reconciler::serve::kept_secret(&dir.join("data/bootstrap-token"))?;
    let mut config = meshc_reconciler::serve::Config::new(
        repo.to_str().context("a UTF-8 path")?,
        dir.join("data"),
    );
    config.grpc_addr = args.grpc_addr;
    config.http_addr = args.http_addr;
    config.poll = Duration::from_secs(2);
    config.bootstrap_token = token.clone();
    let api_token = meshc_reconciler::serve::kept_secret(&dir.join("data/api-token"))?;
    config.api_token = Some(api_token.clone());
    let running = meshc_reconciler::serve::start_with(config, crate::web_ui)
        .await
        .context("starting the control plane")?;
    // The first commit is compiled in the background.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Wait for the snapshot, not only the record: a version is recorded
    // before it is published, and reading in between found nothing served.
    while running.control.current().is_none() && tokio::time::Instant::now() < deadline {
        let rejected = running
            .control
            .store
            .versions(1)?
            .first()
            .is_some_and(|v| v.verdict == meshc_reconciler::store::Verdict::Rejected);
        if rejected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(snapshot) = running.control.current() else {
        running.stop().await;
        bail!(
            "the policy in {} has no accepted version; fix it (meshc lint {}) and run again",
            repo.display(),
            repo.display()
        );
    };
    let ir = snapshot.ir.clone();
    // A workload serves the hosts whose endpoints include it.
    let mut service_of: BTreeMap<&str, &str> = BTreeMap::new();
    for (host, h) in &ir.hosts {
        for w in &h.endpoints {
            service_of
                .entry(w.as_str())
                .or_insert_with(|| host.split('.').next().unwrap_or(host));
        }
    }
    let ca_file = dir.join("data/ca.pem");
    let mut workloads = Vec::new();
    for (name, w) in ir.workloads.iter().filter(|(_, w)| w.meshed) {
        let service = service_of.get(name.as_str()).copied().unwrap_or("app");
        let version = w.labels.get("version").cloned().unwrap_or("v1".into());
        let e = echo::start(echo::EchoSettings {
            listen: ([127, 0, 0, 1], 0).into(),
            service: service.to_string(),
            version: version.clone(),
            tcp: false,
        })
        .await?;
        let p = proxy::start(proxy::Settings {
            control_plane: format!("https://{}", running.grpc_addr),
            ca_file: ca_file.clone(),
            server_name: "localhost".into(),
            bootstrap_token: token.clone(),
            workload: name.clone(),
            service_account: w.service_account.clone(),
            outbound_addr: ([127, 0, 0, 1], 0).into(),
            inbound_addr: ([127, 0, 0, 1], 0).into(),
            advertise_addr: None,
            app_addr: e.addr,
            admin_addr: ([127, 0, 0, 1], 0).into(),
            endpoints_file: None,
            access_log: 0.0,
            threads: 1,
            tcp_upstreams: Vec::new(),
            app_protocol: proxy::AppProtocol::Http,
            // Bookinfo has no ingress gateway workload, and its HTTPS
            // server's Secret is not in a policy repository: no gateway
            // listener in the demo.
            gateway_listen: Vec::new(),
            gateway_credentials: None,
        })
        .await?;
        workloads.push(Workload {
            name: name.clone(),
            service: service.to_string(),
            version,
            echo: e,
            proxy: p,
        });
    }
    let client = dhttp::Clients::new(Default::default());
    // Ready: every proxy has its config, with every endpoint registered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for w in &workloads {
        loop {
            let ready = dhttp::admin_get(&client, w.proxy.admin_addr, "/config")
                .await
                .ok()
                .filter(|a| a.status.is_success())
                .and_then(|a| serde_json::from_slice::<serde_json::Value>(&a.body).ok())
                .is_some_and(|v| {
                    v["endpoints"]
                        .as_object()
                        .is_some_and(|e| e.len() == workloads.len())
                });
            if ready {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("proxy of {} did not get its config in 30 s", w.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "meshc up: {} workloads, each behind its proxy\n",
        workloads.len()
    );
    println!(
        "  {:<34} {:<12} {:<8} {:<22} {:<22}",
        "workload", "service", "version", "proxy outbound", "proxy admin"
    );
    for w in &workloads {
        println!(
            "  {:<34} {:<12} {:<8} {:<22} {:<22}",
            w.name, w.service, w.version, w.proxy.outbound_addr, w.proxy.admin_addr
        );
    }
    // Demonstration traffic: productpage calling reviews, as bookinfo does.
    let from = workloads
        .iter()
        .find(|w| w.service == "productpage")
        .or(workloads.first());
    if let Some(from) = from {
        for (label, headers) in [
            ("plain", &[][..]),
            ("as end-user jason", &[("end-user", "jason")][..]),
        ] {
            let mut versions: BTreeMap<String, usize> = BTreeMap::new();
            for _ in 0..args.requests {
                let v = match dhttp::send(
                    &client,
                    from.proxy.outbound_addr,
                    "reviews:9080",
                    http::Method::GET,
                    "/reviews/1",
                    headers,
                    Default::default(),
                    false,
                )
                .await
                {
                    Ok(a) if a.status.is_success() => a
                        .headers
                        .get("x-echo-version")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("?")
                        .to_string(),
                    Ok(a) => format!("HTTP {}", a.status.as_u16()),
                    Err(e) => format!("error: {e}"),
                };
                *versions.entry(v).or_default() += 1;
            }
            let split: Vec<String> = versions.iter().map(|(v, n)| format!("{v} {n}")).collect();
            println!(
                "\n{} requests {} from {} to reviews: {}",
                args.requests,
                label,
                from.service,
                split.join(", ")
            );
        }
        println!(
            "\nWeb UI: http://{}/\n\nTry it:\n  curl -s -H 'Host: reviews:9080' http://{}/reviews/1\n  \
             edit the canary weights in {}/routing.yaml, then\n  \
             git -C {} commit -am 'canary 50/50'\n  \
             and watch the split change (the control plane polls every 2 s).\n\
             \nControl plane API: http://{}/api/v1/versions  /api/v1/proxies  /api/v1/drift\n\
             Proxy metrics: http://{}/metrics\n\
             API token (for POST /api/v1/sync, rollback): {}\n",
            running.http_addr,
            from.proxy.outbound_addr,
            repo.display(),
            repo.display(),
            running.http_addr,
            from.proxy.admin_addr,
            api_token
        );
    }
    if !args.once {
        println!("Ctrl-C stops everything.");
        meshc_dataplane::process::shutdown_signal().await;
    }
    for w in workloads {
        w.proxy.stop().await;
        w.echo.stop();
    }
    running.stop().await;
    Ok(0)
}
