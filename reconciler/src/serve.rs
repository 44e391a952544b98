//! `meshc serve`: the reconciler, the store, the distribution server, the
//! CA and the HTTP API in one process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use meshc_ir::proto::distribution_server::DistributionServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::api::{self, Api};
use crate::ca::Ca;
use crate::commit::Policy;
use crate::control::{Control, Reconciler, debounce};
use crate::distribution;
use crate::store::Store;
use crate::sync::{Mirror, Source};

/// Everything `meshc serve` is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The policy repository to follow.
    pub source: Source,
    /// Where the mirror, the store and the CA live.
    pub data_dir: PathBuf,
    /// gRPC (distribution and certificates).
    pub grpc_addr: SocketAddr,
    /// HTTP API and metrics.
    pub http_addr: SocketAddr,
    /// The Kubernetes admission webhook and validation API over TLS (none:
    /// not served; the validation API is on `http_addr` either way).
    pub admission_addr: Option<SocketAddr>,
    /// Poll interval.
    pub poll: Duration,
    /// Push debounce: quiet period.
    pub quiet: Duration,
    /// Push debounce: longest delay.
    pub max_delay: Duration,
    /// Versions kept.
    pub retain: usize,
    /// Warnings reject a commit.
    pub deny_warnings: bool,
    /// Trust domain of issued identities.
    pub trust_domain: String,
    /// Lifetime of issued certificates.
    pub cert_ttl: Duration,
    /// Token a proxy presents to get its first certificate.
    pub bootstrap_token: String,
    /// Token for API actions (none: actions refused).
    pub api_token: Option<String>,
    /// Secret of push webhooks (none: webhooks refused).
    pub webhook_secret: Option<String>,
    /// Names in the control plane's serving certificate.
    pub server_names: Vec<String>,
    /// Plaintext gRPC without client certificates (development only).
    pub insecure: bool,
}

impl Config {
    /// The bare Git mirror of the policy repository, in the data directory.
    pub fn mirror_dir(&self) -> PathBuf {
        self.data_dir.join("mirror.git")
    }

    /// Defaults for following `url` with state in `data_dir`: loopback, ports
    /// 15010 (gRPC) and 15014 (HTTP), poll every 15 s, debounce 100 ms / 1 s,
    /// 100 versions, certificates for 24 h.
    pub fn new(url: &str, data_dir: PathBuf) -> Config {
        Config {
            source: Source {
                url: url.to_string(),
                branch: "main".to_string(),
                subpath: String::new(),
                auth: Default::default(),
                ca_file: None,
                known_hosts: None,
            },
            data_dir,
            grpc_addr: ([127, 0, 0, 1], 15010).into(),
            http_addr: ([127, 0, 0, 1], 15014).into(),
            admission_addr: None,
            poll: Duration::from_secs(15),
            quiet: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            retain: 100,
            deny_warnings: false,
            trust_domain: "cluster.local".to_string(),
            cert_ttl: Duration::from_secs(24 * 3600),
            bootstrap_token: String::new(),
            api_token: None,
            webhook_secret: None,
            server_names: vec!["localhost".to_string(), "127.0.0.1".to_string()],
            insecure: false,
        }
    }
}

/// A running control plane.
pub struct Running {
    /// Where gRPC listens.
    pub grpc_addr: SocketAddr,
    /// Where HTTP listens.
    pub http_addr: SocketAddr,
    /// Where the admission webhook listens (TLS), if it does.
    pub admission_addr: Option<SocketAddr>,
    /// Shared state.
    pub control: Arc<Control>,
    /// The CA certificate proxies must trust.
    pub ca_pem: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    sessions: Arc<AtomicUsize>,
}

impl Running {
    /// Stop everything and wait for it: listeners close, open streams end,
    /// the reconcile loop finishes its step.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        // Streams end on the stop signal; wait (briefly) for their sessions
        // to let go of the store.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.sessions.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Wait until stopped (by [`Running::stop`] from elsewhere or a task ending).
    pub async fn wait(&mut self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// A handle that stops the server when sent `true`.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Start the control plane.
pub async fn start(config: Config) -> Result<Running> {
    start_with(config, |_, _| axum::Router::new()).await
}

/// [`start`], with more routes served on the HTTP address, made from the
/// control plane and the configuration (the web UI: the reconciler does not
/// know it).
pub async fn start_with(
    config: Config,
    extra: impl FnOnce(&Arc<Control>, &Config) -> axum::Router,
) -> Result<Running> {
    if !config.insecure && config.bootstrap_token.is_empty() {
        anyhow::bail!("a bootstrap token is required (or run insecure, for development only)");
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let store = Store::open(&config.data_dir.join("store.redb"), config.retain)?;
    let control = Control::new(store, config.trust_domain.clone())?;
    let ca = Arc::new(Ca::load_or_create(
        &config.data_dir,
        &config.trust_domain,
        config.cert_ttl,
    )?);
    let mirror = Mirror::open(&config.mirror_dir(), config.source.clone())?;
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // gRPC.
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC on {}", config.grpc_addr))?;
    let grpc_addr = grpc.local_addr()?;
    let pushed = debounce(control.subscribe(), config.quiet, config.max_delay);
    let service = distribution::Server::new(
        control.clone(),
        pushed,
        ca.clone(),
        config.bootstrap_token.clone(),
        !config.insecure,
        stop_rx.clone(),
    );
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if !config.insecure {
        let (cert, key) = ca.serving(&config.server_names)?;
        builder = builder.tls_config(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(cert, key))
                .client_ca_root(Certificate::from_pem(ca.pem()))
                .client_auth_optional(true),
        )?;
    }
    let sessions = service.live_sessions();
    let router = builder.add_service(DistributionServer::new(service));
    let rx = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), stopped(rx))
            .await
        {
            tracing::error!("gRPC server: {e}");
        }
    }));

    // HTTP.
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http_addr))?;
    let http_addr = http.local_addr()?;
    let context = admission_context(control.clone(), &config);
    let app = api::router(Arc::new(Api {
        control: control.clone(),
        token: config.api_token.clone(),
        webhook_secret: config.webhook_secret.clone(),
        branch: config.source.branch.clone(),
    }))
    .merge(meshc_validator::service::router(context.clone()))
    .merge(extra(&control, &config));
    let rx = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = axum::serve(http, app)
            .with_graceful_shutdown(stopped(rx))
            .await
        {
            tracing::error!("HTTP server: {e}");
        }
    }));

    // Admission webhook and validation API over TLS.
    let admission_addr = match config.admission_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the admission webhook on {addr}"))?;
            let local = listener.local_addr()?;
            let (cert, key) = ca.serving(&config.server_names)?;
            let acceptor = tls_acceptor(&cert, &key)?;
            let app = meshc_validator::service::router(context);
            tasks.push(tokio::spawn(serve_tls(
                listener,
                acceptor,
                app,
                stop_rx.clone(),
            )));
            Some(local)
        }
        None => None,
    };

    // Reconcile loop.
    let mut reconciler = Some(Reconciler::new(
        mirror,
        control.clone(),
        Policy {
            deny_warnings: config.deny_warnings,
        },
    ));
    let (ctl, poll) = (control.clone(), config.poll);
    let mut rx = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        loop {
            let Some(mut r) = reconciler.take() else {
                break;
            };
            let joined = tokio::task::spawn_blocking(move || {
                let step = r.step();
                (r, step)
            })
            .await;
            match joined {
                Ok((r, step)) => {
                    reconciler = Some(r);
                    if let Err(e) = step {
                        tracing::error!("reconcile: {e:#}");
                    }
                }
                Err(e) => {
                    tracing::error!("reconcile step panicked: {e}");
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = ctl.sync_now.notified() => {}
                _ = rx.wait_for(|s| *s) => break,
            }
        }
    }));

    tracing::info!(
        repo = config.source.shown_url(),
        branch = config.source.branch,
        grpc = %grpc_addr,
        http = %http_addr,
        "control plane started"
    );
    Ok(Running {
        admission_addr,
        grpc_addr,
        http_addr,
        control,
        ca_pem: ca.pem().to_string(),
        stop,
        tasks,
        sessions,
    })
}

/// `meshc serve` settings from one layer: flags and `MESHC_*` environment
/// variables (clap), or a TOML file (serde, kebab-case keys). Unset fields
/// fall through to the next layer, then to [`Config::new`]'s defaults.
#[derive(Debug, Clone, Default, serde::Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// Policy repository: a path, file://, git://, https:// or ssh:// URL (default: the current directory).
    #[arg(long, env = "MESHC_REPO")]
    pub repo: Option<String>,
    /// Branch to follow [default: main].
    #[arg(long, env = "MESHC_BRANCH")]
    pub branch: Option<String>,
    /// Directory of the policy inside the repository.
    #[arg(long, env = "MESHC_PATH")]
    pub path: Option<String>,
    /// HTTPS token for the repository (never logged).
    #[arg(long = "git-token", env = "MESHC_GIT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// SSH private key for ssh:// repositories.
    #[arg(long, env = "MESHC_SSH_KEY")]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts file for ssh:// repositories (host keys are then checked against it alone).
    #[arg(long, env = "MESHC_SSH_KNOWN_HOSTS")]
    pub ssh_known_hosts: Option<PathBuf>,
    /// CA certificates (PEM) for an https:// repository with a private CA.
    #[arg(long, env = "MESHC_GIT_CA_FILE")]
    pub git_ca_file: Option<PathBuf>,
    /// State directory: mirror, store, CA, generated tokens [default: .meshc].
    #[arg(long, env = "MESHC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC address (distribution, certificates) [default: 127.0.0.1:15010].
    #[arg(long, env = "MESHC_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP address (API, webhooks, metrics) [default: 127.0.0.1:15014].
    #[arg(long, env = "MESHC_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Kubernetes admission webhook address, served over TLS with a
    /// certificate from the built-in CA (`ca.pem` is its caBundle) [default: off].
    #[arg(long, env = "MESHC_ADMISSION_ADDR")]
    pub admission_addr: Option<SocketAddr>,
    /// Names in the control plane's serving certificates (gRPC and the
    /// admission webhook), comma-separated [default: localhost,127.0.0.1].
    #[arg(long, env = "MESHC_SERVER_NAMES")]
    pub server_names: Option<String>,
    /// Poll interval in seconds [default: 15].
    #[arg(long, env = "MESHC_POLL_SECONDS")]
    pub poll_seconds: Option<u64>,
    /// Push debounce quiet period in ms [default: 100].
    #[arg(long, env = "MESHC_DEBOUNCE_MS")]
    pub debounce_ms: Option<u64>,
    /// Push debounce longest delay in ms [default: 1000].
    #[arg(long, env = "MESHC_DEBOUNCE_MAX_MS")]
    pub debounce_max_ms: Option<u64>,
    /// Versions kept in the store [default: 100].
    #[arg(long, env = "MESHC_RETAIN")]
    pub retain: Option<usize>,
    /// Reject commits with warnings too.
    #[arg(long, env = "MESHC_DENY_WARNINGS")]
    pub deny_warnings: Option<bool>,
    /// Trust domain of issued identities [default: cluster.local].
    #[arg(long, env = "MESHC_TRUST_DOMAIN")]
    pub trust_domain: Option<String>,
    /// Lifetime of issued certificates in seconds [default: 86400].
    #[arg(long, env = "MESHC_CERT_TTL_SECONDS")]
    pub cert_ttl_seconds: Option<u64>,
    /// Token proxies present for their first certificate [default: generated into DATA_DIR/bootstrap-token].
    #[arg(long, env = "MESHC_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,
    /// Token for API actions [default: generated into DATA_DIR/api-token].
    #[arg(long, env = "MESHC_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Secret of push webhooks (GitHub HMAC key; GitLab signing token `whsec_...` or secret token); none: webhooks refused.
    #[arg(long, env = "MESHC_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Plaintext gRPC without client certificates (development only).
    #[arg(long, env = "MESHC_INSECURE")]
    pub insecure: Option<bool>,
}

impl Settings {
    /// Read a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Settings> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// This layer over `lower`.
    pub fn over(self, lower: Settings) -> Settings {
        macro_rules! pick {
            ($($f:ident),*) => { Settings { $($f: self.$f.or(lower.$f)),* } };
        }
        pick!(
            repo,
            branch,
            path,
            token,
            ssh_key,
            ssh_known_hosts,
            git_ca_file,
            data_dir,
            grpc_addr,
            http_addr,
            admission_addr,
            server_names,
            poll_seconds,
            debounce_ms,
            debounce_max_ms,
            retain,
            deny_warnings,
            trust_domain,
            cert_ttl_seconds,
            bootstrap_token,
            api_token,
            webhook_secret,
            insecure
        )
    }

    /// The configuration. The repository defaults to the current directory
    /// and the data directory to `.meshc` beside it; missing tokens are
    /// generated once and kept in the data directory (mode 0600).
    pub fn into_config(self) -> Result<Config> {
        let repo = match self.repo {
            Some(r) => r,
            None => std::env::current_dir()?.display().to_string(),
        };
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from(".meshc"));
        let mut c = Config::new(&repo, data_dir.clone());
        if let Some(b) = self.branch {
            c.source.branch = b;
        }
        c.source.subpath = self.path.unwrap_or_default();
        c.source.auth = match (self.token, self.ssh_key) {
            (Some(t), _) => crate::sync::Auth::Token(t),
            (None, Some(k)) => crate::sync::Auth::SshKey(k),
            (None, None) => crate::sync::Auth::None,
        };
        c.source.ca_file = self.git_ca_file;
        c.source.known_hosts = self.ssh_known_hosts;
        if let Some(a) = self.grpc_addr {
            c.grpc_addr = a;
        }
        c.admission_addr = self.admission_addr;
        if let Some(names) = self.server_names {
            c.server_names = names
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect();
        }
        if let Some(a) = self.http_addr {
            c.http_addr = a;
        }
        if let Some(s) = self.poll_seconds {
            c.poll = Duration::from_secs(s.max(1));
        }
        if let Some(ms) = self.debounce_ms {
            c.quiet = Duration::from_millis(ms);
        }
        if let Some(ms) = self.debounce_max_ms {
            c.max_delay = Duration::from_millis(ms);
        }
        if let Some(r) = self.retain {
            c.retain = r;
        }
        c.deny_warnings = self.deny_warnings.unwrap_or(false);
        if let Some(t) = self.trust_domain {
            c.trust_domain = t;
        }
        if let Some(s) = self.cert_ttl_seconds {
            c.cert_ttl = Duration::from_secs(s.max(60));
        }
        c.insecure = self.insecure.unwrap_or(false);
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        c.bootstrap_token = match self.bootstrap_token {
            Some(t) => t,
            None => kept_secret(&data_dir.join("bootstrap-token"))?,
        };
        c.api_token = Some(match self.api_token {
            Some(t) => t,
            None => kept_secret(&data_dir.join("api-token"))?,
        });
        c.webhook_secret = self.webhook_secret;
        Ok(c)
    }
}

/// What an admission request is judged against: the policy of the version
/// being served, read from the mirror and prepared once per commit.
fn admission_context(control: Arc<Control>, config: &Config) -> meshc_validator::service::Context {
    use meshc_validator::service::Policy;
    let mirror = config.mirror_dir();
    let subpath = config.source.subpath.clone();
    let cache: std::sync::Mutex<Option<(String, Arc<Policy>)>> = std::sync::Mutex::new(None);
    Arc::new(move || {
        let commit = control.current()?.version.commit.clone();
        let mut cached = cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((c, policy)) = &*cached
            && *c == commit
        {
            return Some(policy.clone());
        }
        let repo = git2::Repository::open_bare(&mirror).ok()?;
        let (inputs, options) =
            crate::commit::policy_at(&repo, &commit, &subpath, |p| p.to_string()).ok()?;
        let policy = Arc::new(Policy::new(inputs, options));
        *cached = Some((commit, policy.clone()));
        Some(policy)
    })
}

/// Server-side TLS with `cert_pem` and `key_pem` (no client certificates:
/// the API server authenticates the webhook, not the other way round).
fn tls_acceptor(cert_pem: &str, key_pem: &str) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the serving certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("the serving key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serve `app` over TLS until stopped.
async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    stop: watch::Receiver<bool>,
) {
    let mut stop_wait = stop.clone();
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = stop_wait.wait_for(|s| *s) => return,
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
        });
    }
}

/// The secret in `path`, or a new random one written there (mode 0600).
pub fn kept_secret(path: &Path) -> Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        return Ok(s.trim().to_string());
    }
    let mut bytes = [0u8; 24];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut bytes,
    )?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    crate::ca::write_private(path, &secret)?;
    Ok(secret)
}
