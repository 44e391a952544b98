//! `meshc up`: the whole mesh on loopback, for a first look.
//!
//! A policy repository seeded from `policies-examples/bookinfo` (embedded in
//! the binary), the control plane following it, and for every workload of
//! the policy an echo application behind its own proxy. A workload that a
//! Gateway selects (bookinfo's ingress gateway) serves the Gateway's ports
//! on loopback, with a demo certificate for each Secret its HTTPS servers
//! name, issued by a demo CA kept beside the repository. Then a little
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

/// A Gateway server's host without its namespace (`ns/host` → `host`).
fn server_host(h: &str) -> &str {
    h.rsplit('/').next().unwrap_or(h)
}

/// The ports of the Gateway servers that select workload `w`.
fn gateway_ports(ir: &meshc_ir::Ir, w: &meshc_ir::WorkloadPolicy) -> Vec<u16> {
    let mut ports: Vec<u16> = ir
        .gateways
        .values()
        .filter(|g| g.selector.iter().all(|(k, v)| w.labels.get(k) == Some(v)))
        .flat_map(|g| g.servers.iter().map(|s| s.port))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The demo CA that issues the gateways' certificates: kept in `dir`
/// (`gateway-ca.pem`, `gateway-ca.key`) so that a client that trusts it
/// keeps working across runs; created the first time.
fn demo_ca(dir: &Path) -> Result<rcgen::Issuer<'static, rcgen::KeyPair>> {
    let (cert_path, key_path) = (dir.join("gateway-ca.pem"), dir.join("gateway-ca.key"));
    if cert_path.exists() && key_path.exists() {
        let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&key_path)?)?;
        let pem = std::fs::read_to_string(&cert_path)?;
        return rcgen::Issuer::from_ca_cert_pem(&pem, key)
            .with_context(|| format!("reading {}", cert_path.display()));
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "meshc up demo gateway CA");
    std::fs::write(&cert_path, params.self_signed(&key)?.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    Ok(rcgen::Issuer::new(params, key))
}

/// Write a demo certificate into `credentials/NAME` (as Kubernetes mounts a
/// Secret: `tls.crt`, `tls.key`) for every Secret a gateway server names
/// that is not there yet, for the server's hosts. A policy repository
/// holds no keys; in a cluster these Secrets come from elsewhere.
fn demo_credentials(dir: &Path, credentials: &Path, ir: &meshc_ir::Ir) -> Result<()> {
    let mut wanted: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in ir.gateways.values().flat_map(|g| &g.servers) {
        if let Some(name) = s
            .termination
            .as_ref()
            .and_then(|t| t.credential_name.as_deref())
        {
            let hosts = s
                .hosts
                .iter()
                .map(|h| server_host(h).to_string())
                .filter(|h| h != "*");
            wanted.entry(name).or_default().extend(hosts);
        }
    }
    let missing: Vec<_> = wanted
        .into_iter()
        .filter(|(name, _)| !credentials.join(name).join("tls.crt").exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let ca = demo_ca(dir)?;
    for (name, hosts) in missing {
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(hosts)?.signed_by(&key, &ca)?;
        let secret = credentials.join(name);
        std::fs::create_dir_all(&secret)?;
        std::fs::write(secret.join("tls.crt"), cert.pem())?;
        std::fs::write(secret.join("tls.key"), key.serialize_pem())?;
    }
    Ok(())
}

/// `n` HTTPS GETs of `https://host/path` through a gateway listener at
/// `addr`, trusting the demo CA in `ca_pem`: how many answered with each
/// version (or status, or error).
async fn through_gateway(
    addr: SocketAddr,
    host: &str,
    path: &str,
    ca_pem: &str,
    n: usize,
) -> BTreeMap<String, usize> {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()).flatten() {
        let _ = roots.add(c);
    }
    let mut counts = BTreeMap::new();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    let Ok(config) = config else {
        return counts;
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    for _ in 0..n {
        let answer = async {
            let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let mut tls = connector.connect(name, tcp).await?;
            let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            tls.write_all(req.as_bytes()).await?;
            let mut out = Vec::new();
            tls.read_to_end(&mut out).await?;
            let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
            let status = text.get(9..12).unwrap_or("?").to_string();
            let version = text
                .lines()
                .find_map(|l| l.strip_prefix("x-echo-version: "))
                .map(|v| v.trim().to_string());
            anyhow::Ok(match version {
                Some(v) if status == "200" => v,
                _ => format!("HTTP {status}"),
            })
        };
        let key = match tokio::time::timeout(Duration::from_secs(10), answer).await {
            Ok(Ok(k)) => k,
            Ok(Err(e)) => format!("error: {e}"),
            Err(_) => "timed out".to_string(),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

pub fn run(args: UpArgs) -> Result<u8> {
    // Quieter than the other servers: the demo's own output is the point.
    meshc_dataplane::process::init_logs(meshc_dataplane::process::LogFormat::Text, "warn");
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
    let credentials = dir.join("credentials");
    demo_credentials(&dir, &credentials, &ir).context("issuing the gateways' demo certificates")?;
    let mut workloads = Vec::new();
    // Meshed workloads, and the gateway workloads (a Gateway selects them).
    for (name, w) in ir
        .workloads
        .iter()
        .filter(|(_, w)| w.meshed || !gateway_ports(&ir, w).is_empty())
    {
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
            gateway_listen: gateway_ports(&ir, w)
                .into_iter()
                .map(|port| proxy::GatewayListen {
                    port,
                    listen: ([127, 0, 0, 1], 0).into(),
                })
                .collect(),
            gateway_credentials: Some(credentials.clone()),
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
        "  {:<34} {:<20} {:<8} {:<22} {:<22}",
        "workload", "service", "version", "proxy outbound", "proxy admin"
    );
    for w in &workloads {
        println!(
            "  {:<34} {:<20} {:<8} {:<22} {:<22}",
            w.name, w.service, w.version, w.proxy.outbound_addr, w.proxy.admin_addr
        );
    }
    // The gateways: each port on loopback, and HTTPS requests through the
    // first terminating server to the first path its routes send somewhere.
    let gateway_ca = std::fs::read_to_string(dir.join("gateway-ca.pem")).unwrap_or_default();
    let mut try_gateway = Vec::new();
    for w in &workloads {
        for l in &w.proxy.gateway_listeners {
            println!(
                "\n{} serves gateway port {} on {}",
                w.name, l.port, l.listen
            );
            let server = ir
                .gateways
                .values()
                .flat_map(|g| g.servers.iter().map(move |s| (g, s)))
                .find(|(_, s)| s.port == l.port && meshc_ir::eval::terminates(s));
            let Some((g, s)) = server else { continue };
            let Some(host) = s
                .hosts
                .iter()
                .map(|h| server_host(h))
                .find(|h| !h.contains('*'))
            else {
                continue;
            };
            let path = g
                .hosts
                .get(host)
                .and_then(|rules| rules.first())
                .and_then(|r| r.matches.first())
                .and_then(|m| match &m.uri {
                    Some(meshc_ir::StrMatch::Exact(p) | meshc_ir::StrMatch::Prefix(p)) => {
                        Some(p.as_str())
                    }
                    _ => None,
                })
                .unwrap_or("/");
            let counts = through_gateway(l.listen, host, path, &gateway_ca, 20).await;
            let split: Vec<String> = counts.iter().map(|(v, n)| format!("{v} {n}")).collect();
            println!(
                "20 requests through {} to https://{host}{path}: {}",
                w.name,
                split.join(", ")
            );
            try_gateway.push(format!(
                "  curl --cacert {} --resolve {host}:{port}:127.0.0.1 https://{host}:{port}{path}",
                dir.join("gateway-ca.pem").display(),
                port = l.listen.port()
            ));
        }
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
             API token (for POST /api/v1/sync, rollback): {}\n{}",
            running.http_addr,
            from.proxy.outbound_addr,
            repo.display(),
            repo.display(),
            running.http_addr,
            from.proxy.admin_addr,
            api_token,
            if try_gateway.is_empty() {
                String::new()
            } else {
                format!(
                    "\nThrough the ingress gateway:\n{}\n",
                    try_gateway.join("\n")
                )
            }
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
