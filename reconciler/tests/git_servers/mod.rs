//! Real Git servers on loopback for the reconciler's remote transports:
//! `git http-backend` behind HTTPS with token authentication, and OpenSSH's
//! `sshd` with a key. Both serve every repository under a root directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::net::free_port;

/// A child process killed when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait until something listens on `port`.
pub fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The Smart HTTP server: `git http-backend` run as a CGI program for each
/// request, behind TLS, refusing requests without the token.
pub struct HttpsGit {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The CA that signed its certificate (PEM file).
    pub ca_file: PathBuf,
    /// Requests refused for missing or wrong credentials.
    pub refused: Arc<AtomicUsize>,
    /// Requests served.
    pub served: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpsGit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Backend {
    root: PathBuf,
    basic: String,
    refused: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
}

impl HttpsGit {
    /// Serve the repositories under `root` to clients presenting `token` as
    /// the password of HTTP Basic authentication (GitHub's and GitLab's
    /// convention for tokens).
    pub async fn start(root: &Path, token: &str) -> HttpsGit {
        let dir = tempfile::tempdir().unwrap();
        let ca = meshc_reconciler::ca::Ca::load_or_create(
            dir.path(),
            "git.test",
            Duration::from_secs(3600),
        )
        .unwrap();
        let (cert, key) = ca.serving(&["127.0.0.1".to_string()]).unwrap();
        let ca_file = dir.path().join("git-ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();

        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let refused = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let backend = Arc::new(Backend {
            root: root.to_path_buf(),
            basic: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"))
            ),
            refused: refused.clone(),
            served: served.clone(),
        });
        let app = axum::Router::new().fallback(cgi).with_state(backend);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        HttpsGit {
            addr,
            ca_file,
            refused,
            served,
            _dir: dir,
            task,
        }
    }
}

/// One request through `git http-backend` (RFC 3875 CGI).
async fn cgi(State(b): State<Arc<Backend>>, req: Request) -> Response {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if given != Some(b.basic.as_str()) {
        b.refused.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"git\"")],
        )
            .into_response();
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), 64 << 20)
        .await
        .unwrap();
    let root = b.root.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_backend(&root, &method, &path, &query, &headers, &body)
    })
    .await
    .unwrap();
    b.served.fetch_add(1, Ordering::SeqCst);
    out
}

fn run_backend(
    root: &Path,
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut child = Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_USER", "x-access-token")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("git http-backend runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = body.clone();
    let writer = std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut stdin, &input);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let raw = output.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            raw.windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        })
        .expect("CGI output has a header block");
    let mut response = Response::new(Body::from(raw[split.1..].to_vec()));
    for line in String::from_utf8_lossy(&raw[..split.0]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("200");
            *response.status_mut() = StatusCode::from_bytes(code.as_bytes()).unwrap();
        } else if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    response
}

/// OpenSSH's `sshd` on a loopback port, letting the current user in with one
/// key. Installed with apt-get when missing (as the browser tests install
/// Chromium).
pub struct Sshd {
    /// Where it listens.
    pub port: u16,
    /// The user's private key.
    pub key: PathBuf,
    /// A known_hosts file with the server's host key.
    pub known_hosts: PathBuf,
    /// The user to log in as.
    pub user: String,
    dir: tempfile::TempDir,
    _child: KillOnDrop,
}

const SSHD: &str = "/usr/sbin/sshd";

fn ensure_sshd() {
    if Path::new(SSHD).exists() {
        return;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "openssh-server", "openssh-client"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        // The package lists may be stale on a fresh machine.
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
        assert!(
            install(),
            "installing openssh-server with apt-get failed (root is needed)"
        );
    }
}

/// A new ed25519 key pair at `path` and `path.pub`.
pub fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "ssh-keygen failed");
}

impl Sshd {
    pub fn start() -> Sshd {
        ensure_sshd();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("user_key"));
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let port = free_port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
                 PidFile {pid}\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 StrictModes no\nUsePAM no\nAllowUsers {user}\n",
                hk = d.join("host_key").display(),
                ak = d.join("authorized_keys").display(),
                pid = d.join("sshd.pid").display(),
            ),
        )
        .unwrap();
        // Privilege separation needs this directory when sshd runs as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd runs");
        let child = KillOnDrop(child);
        wait_listening(port, "sshd");
        let host_key = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let mut parts = host_key.split_whitespace();
        let (kind, key) = (parts.next().unwrap(), parts.next().unwrap());
        let known_hosts = d.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {kind} {key}\n")).unwrap();
        Sshd {
            port,
            key: d.join("user_key"),
            known_hosts,
            user,
            dir,
            _child: child,
        }
    }

    /// A file in the server's directory (for other keys or host lists).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
