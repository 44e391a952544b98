//! The distribution client.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use meshc_ir::Ir;
use meshc_ir::proto::distribution_client::DistributionClient;
use meshc_ir::proto::{
    CertificateRequest, DiscoveryRequest, DiscoveryResponse, ErrorDetail, Node, ResourceVersion,
};
use meshc_ir::resources::{ENDPOINTS, Resource, assemble_over, scope_version};
use tokio::sync::{mpsc, watch};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// How to reach the control plane and who this proxy is.
#[derive(Debug, Clone)]
pub struct Config {
    /// `https://host:port` of the distribution server.
    pub endpoint: String,
    /// The name the server's certificate is checked against.
    pub server_name: String,
    /// The CA to trust, PEM.
    pub ca_pem: String,
    /// Bootstrap token for the first certificate.
    pub bootstrap_token: String,
    /// Who this proxy is.
    pub node: Node,
}

/// A certificate and its key.
#[derive(Clone)]
pub struct Credentials {
    /// Leaf certificate, PEM.
    pub certificate_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
    /// Expiry, seconds since the epoch.
    pub not_after: i64,
}

/// A config the proxy runs: the scope's resources and the IR they make.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Scope version.
    pub version: String,
    /// The control-plane commit it came from.
    pub source: String,
    /// Resources by name: names and versions, and the body of the endpoints
    /// resource only (the others are in `ir`, and updates reuse them from there).
    pub resources: BTreeMap<String, Resource>,
    /// The assembled IR.
    pub ir: Ir,
    /// The request headers decisions under `ir` read
    /// ([`meshc_ir::eval::headers_read`]): the only ones a request's
    /// evaluation copies.
    pub headers_read: std::collections::BTreeSet<String>,
}

/// Accepts or refuses an assembled IR before it is applied (the proxy's own
/// checks; a refusal is sent as a NACK).
pub type Check = Arc<dyn Fn(&Ir) -> Result<(), String> + Send + Sync>;

/// Apply a response to what the proxy has. Every resource must match its
/// version and the whole set the response's version; otherwise nothing
/// changes and the error says why.
pub fn apply(have: Option<&Applied>, response: &DiscoveryResponse) -> Result<Applied, String> {
    let mut resources = have.map(|a| a.resources.clone()).unwrap_or_default();
    for name in &response.removed {
        resources.remove(name);
    }
    for r in &response.resources {
        let r = Resource {
            name: r.name.clone(),
            version: r.version.clone(),
            body: r.body.to_vec(),
        };
        if !r.is_intact() {
            return Err(format!("resource `{}` does not match its version", r.name));
        }
        resources.insert(r.name.clone(), r);
    }
    let version = scope_version(
        resources
            .values()
            .map(|r| (r.name.as_str(), r.version.as_str())),
    );
    if version != response.version {
        return Err(format!(
            "the resources make version {version}, the response says {}",
            response.version
        ));
    }
    let ir = assemble_over(have.map(|a| (&a.ir, &a.resources)), resources.values())?;
    // What is decoded lives in `ir`; the next update needs only the versions.
    for (name, r) in resources.iter_mut() {
        if name != ENDPOINTS {
            r.body = Vec::new();
        }
    }
    Ok(Applied {
        version,
        source: response.source.clone(),
        resources,
        headers_read: meshc_ir::eval::headers_read(&ir),
        ir,
    })
}

fn tls(config: &Config) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&config.ca_pem))
        .domain_name(config.server_name.clone())
}

/// Get a certificate for this node's namespace and service account with the
/// bootstrap token (server-authenticated TLS, no client certificate).
pub async fn issue_certificate(config: &Config) -> Result<Credentials> {
    renew_certificate(config, None).await
}

/// Get a certificate; with `current` (a certificate still valid for the same
/// identity), over mutual TLS with it, so the control plane renews it
/// without the bootstrap token.
pub async fn renew_certificate(
    config: &Config,
    current: Option<&Credentials>,
) -> Result<Credentials> {
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    let mut tls = tls(config);
    if let Some(c) = current {
        tls = tls.identity(Identity::from_pem(&c.certificate_pem, &c.key_pem));
    }
    let channel = Channel::from_shared(config.endpoint.clone())?
        .tls_config(tls)?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", config.endpoint))?;
    let issued = DistributionClient::new(channel)
        .issue_certificate(CertificateRequest {
            token: config.bootstrap_token.clone(),
            csr_pem: csr,
            namespace: config.node.namespace.clone(),
            service_account: config.node.service_account.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("certificate refused: {}", s.message()))?
        .into_inner();
    Ok(Credentials {
        certificate_pem: issued.certificate_pem,
        key_pem: key.serialize_pem(),
        not_after: issued.not_after,
    })
}

/// A mutually authenticated channel with `credentials`.
pub async fn connect(config: &Config, credentials: &Credentials) -> Result<Channel> {
    Channel::from_shared(config.endpoint.clone())?
        .tls_config(tls(config).identity(Identity::from_pem(
            &credentials.certificate_pem,
            &credentials.key_pem,
        )))?
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connecting to {}", config.endpoint))
}

/// What the process runs after each config it applies: see [`after_apply`].
static AFTER_APPLY: OnceLock<fn()> = OnceLock::new();

/// Have `hook` run after each config is applied, once the update it came in
/// and the config it replaced are dropped (the binary trims its heap then:
/// decoding a large update makes a transient peak the allocator keeps). Set
/// once per process; later calls are ignored.
pub fn after_apply(hook: fn()) {
    let _ = AFTER_APPLY.set(hook);
}

/// Subscribe once over `channel` until the stream ends. Starts from what
/// `out` holds (so nothing it has is sent again), verifies each response,
/// runs `check`, publishes applied configs to `out` and ACKs; NACKs otherwise.
pub async fn subscribe(
    channel: Channel,
    node: &Node,
    out: &watch::Sender<Option<Arc<Applied>>>,
    check: &Check,
) -> Result<(), tonic::Status> {
    let have = out.borrow().clone();
    let (tx, rx) = mpsc::channel(4);
    let first = DiscoveryRequest {
        node: Some(node.clone()),
        version: have.as_ref().map(|a| a.version.clone()).unwrap_or_default(),
        running: have
            .as_ref()
            .map(|a| {
                a.resources
                    .values()
                    .map(|r| ResourceVersion {
                        name: r.name.clone(),
                        version: r.version.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        response_nonce: String::new(),
        error: None,
    };
    tx.send(first)
        .await
        .map_err(|_| tonic::Status::internal("request channel closed"))?;
    let mut responses = DistributionClient::new(channel)
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut parts: Option<DiscoveryResponse> = None;
    while let Some(part) = responses.message().await? {
        // Gather the parts of one update; apply only the whole of it.
        let response = match parts.take() {
            Some(mut so_far) if so_far.nonce == part.nonce => {
                so_far.resources.extend(part.resources);
                so_far.removed.extend(part.removed);
                so_far.more = part.more;
                so_far
            }
            _ => part,
        };
        if response.more {
            parts = Some(response);
            continue;
        }
        let current = out.borrow().clone();
        let outcome = apply(current.as_deref(), &response).and_then(|a| check(&a.ir).map(|()| a));
        let applied = outcome.is_ok();
        let reply = match outcome {
            Ok(applied) => {
                tracing::info!(
                    version = applied.version,
                    source = applied.source,
                    "config applied"
                );
                out.send_replace(Some(Arc::new(applied)));
                DiscoveryRequest {
                    version: response.version.clone(),
                    response_nonce: response.nonce.clone(),
                    ..Default::default()
                }
            }
            Err(message) => {
                tracing::warn!(version = response.version, %message, "config refused; keeping the last good one");
                DiscoveryRequest {
                    version: current
                        .as_ref()
                        .map(|a| a.version.clone())
                        .unwrap_or_default(),
                    response_nonce: response.nonce.clone(),
                    error: Some(ErrorDetail { message }),
                    ..Default::default()
                }
            }
        };
        drop((response, current));
        if applied && let Some(hook) = AFTER_APPLY.get() {
            hook();
        }
        if tx.send(reply).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Stay subscribed: get a certificate, subscribe, reconnect after errors
/// (backoff up to 5 s) with the config already held, and renew the
/// certificate when two thirds of its life have passed. Runs until `stop`.
pub async fn run(
    config: Config,
    out: watch::Sender<Option<Arc<Applied>>>,
    check: Check,
    stop: watch::Receiver<bool>,
) {
    let (credentials, _) = watch::channel(None);
    run_with_credentials(config, out, credentials, check, stop).await
}

/// [`run`], publishing each certificate it obtains to `credentials` (the
/// proxy's listeners use it for mesh mTLS).
pub async fn run_with_credentials(
    config: Config,
    out: watch::Sender<Option<Arc<Applied>>>,
    issued: watch::Sender<Option<Credentials>>,
    check: Check,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut credentials: Option<Credentials> = None;
    let mut renew = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if credentials
            .as_ref()
            .is_none_or(|c| c.not_after <= now || renew)
        {
            // Renew with the certificate while it is valid; the bootstrap
            // token only for the first one (or after it expired).
            let current = credentials.as_ref().filter(|c| c.not_after > now);
            let got = match renew_certificate(&config, current).await {
                Err(e) if current.is_some() => {
                    tracing::warn!(
                        "renewal with the current certificate: {e:#}; trying the bootstrap token"
                    );
                    issue_certificate(&config).await
                }
                other => other,
            };
            match got {
                Ok(c) => {
                    issued.send_replace(Some(c.clone()));
                    credentials = Some(c);
                    renew = false;
                }
                Err(e) => {
                    tracing::warn!("{e:#}");
                    if sleep_or_stop(backoff, &mut stop).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let c = credentials.clone().expect("set above");
        let lifetime = (c.not_after - now).max(1) as u64;
        let rotate_in = Duration::from_secs(lifetime * 2 / 3);
        let session = async {
            let channel = connect(&config, &c)
                .await
                .map_err(|e| tonic::Status::unavailable(format!("{e:#}")))?;
            subscribe(channel, &config.node, &out, &check).await
        };
        let ended = tokio::select! {
            r = session => Some(r),
            _ = tokio::time::sleep(rotate_in) => None,
            _ = stop.wait_for(|s| *s) => return,
        };
        match ended {
            Some(r) => {
                match r {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(e) => tracing::warn!("distribution stream: {}", e.message()),
                }
                if sleep_or_stop(backoff, &mut stop).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            None => {
                tracing::info!("renewing the certificate before it expires");
                renew = true;
                backoff = Duration::from_millis(100);
            }
        }
    }
}

/// Sleep, or return true when stopped first.
async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    }
}
