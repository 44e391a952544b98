//! Upstream connections and their pools, one set per worker thread.
//!
//! A request names its upstream in its URI: `http://addr/...` in plaintext,
//! `https://<identity hex>@addr/...` over mesh mTLS (see
//! [`crate::http::upstream_authority`]). The pool key is the scheme and that
//! authority, so a connection made to one identity's peer is never handed to
//! a request for another.
//!
//! HTTP/1.1 connections carry one request at a time: a pool keeps every
//! connection it made (up to [`MAX_PER_KEY`] a key) and hands out one whose
//! previous response has been read to the end (`is_ready`); a busy or closed
//! one is skipped, and a new one is made when none is free. HTTP/2 shares
//! one multiplexed connection a key. A request that a reused connection
//! refused before sending any of it (the peer closed it while it was idle)
//! goes out again on a new connection, as hyper-util's pooled client does.
//!
//! Built on hyper's connection API instead of hyper-util's legacy client:
//! per request this does one lock, one hash of the authority and no task
//! spawn, where the legacy client's checkout, background readiness task and
//! return to the pool cost about a sixth of the proxy's user-space
//! instructions (callgrind, issue 6).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustc_hash::FxHashMap;
use tokio::net::TcpStream;

use crate::http::{BoxError, MeshStream, ProxyBody, mesh_handshake, split_authority};
use crate::tls::MeshTls;

/// HTTP/1.1 connections kept per upstream (hyper-util's default is
/// unbounded; Envoy's is unlimited as well, bounded by the connection pool's
/// limits, which [`crate::balance::Cluster`] enforces before this).
pub const MAX_PER_KEY: usize = 64;
/// The connect timeout of [`Upstream::request`] (Istio's default
/// `connectTimeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection unused this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Every this many checkouts, every key's closed and expired connections go.
const SWEEP_EVERY: u64 = 4096;

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made (refused, timed out, TLS failed).
    Connect(BoxError),
    /// The connection failed while the request was sent or answered.
    Request(hyper::Error),
}

impl SendError {
    /// Whether no connection could be made (Envoy's `connect-failure`).
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Request(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SendError {}

enum Sender {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

struct Pooled {
    sender: Sender,
    /// When it was last handed out or made.
    used: Instant,
}

/// See [`Pools::connecting`].
type Gate = Arc<tokio::sync::Mutex<Option<(Instant, String)>>>;

#[derive(Default)]
struct Pools {
    by_key: FxHashMap<(bool, Authority), Vec<Pooled>>,
    /// HTTP/2: held while a key's connection is being made, so the
    /// requests of a burst share the one it makes instead of each making
    /// its own (hyper-util's client did the same). It keeps the last
    /// failure to connect: the requests that waited for that attempt fail
    /// with it instead of each trying again in turn (a peer that drops
    /// connection attempts would otherwise hold the last of a burst for a
    /// connect timeout per request ahead of it).
    connecting: FxHashMap<(bool, Authority), Gate>,
    checkouts: u64,
}

/// Connections to upstreams over one protocol (HTTP/1.1, or HTTP/2 with
/// prior knowledge in plaintext and by ALPN over TLS).
pub struct Upstream {
    tls: Arc<RwLock<Option<MeshTls>>>,
    h2: bool,
    pools: Mutex<Pools>,
}

impl Upstream {
    /// Connections made with the mesh certificate in force in `tls`.
    pub fn new(tls: Arc<RwLock<Option<MeshTls>>>, h2: bool) -> Upstream {
        Upstream {
            tls,
            h2,
            pools: Mutex::default(),
        }
    }

    /// Send `req` (its URI absolute: the scheme and authority choose the
    /// upstream) and wait for the response head; a new connection gets the
    /// default connect timeout (10 s, Istio's).
    pub async fn request(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, SendError> {
        self.request_within(req, CONNECT_TIMEOUT).await
    }

    /// [`Upstream::request`], a new connection (TCP and mesh TLS) getting
    /// `connect_timeout` (the destination's `connectTimeout`).
    pub async fn request_within(
        &self,
        mut req: Request<ProxyBody>,
        connect_timeout: Duration,
    ) -> Result<Response<Incoming>, SendError> {
        let https = req.uri().scheme() == Some(&Scheme::HTTPS);
        let Some(authority) = req.uri().authority().cloned() else {
            return Err(SendError::Connect("the request names no upstream".into()));
        };
        if !self.h2 {
            // HTTP/1.1 sends the origin form (the path), and the Host header
            // the peer's address when the request has none.
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(path);
            if !req.headers().contains_key(http::header::HOST) {
                let host = match authority.port_u16() {
                    Some(p) => format!("{}:{p}", authority.host()),
                    None => authority.host().to_string(),
                };
                if let Ok(v) = HeaderValue::from_str(&host) {
                    req.headers_mut().insert(http::header::HOST, v);
                }
            }
        }
        let key = (https, authority);
        // After a reused connection refused the request unsent, the one
        // more try is on a new connection.
        let mut fresh = false;
        loop {
            let pooled = if fresh { None } else { self.checkout(&key) };
            let (sender, reused) = match pooled {
                Some(s) => (s, true),
                // Boxed: the connect and TLS handshake state is large and
                // rarely needed, and every request's future would carry it.
                None => Box::pin(self.connect_or_share(&key, fresh, connect_timeout)).await?,
            };
            let sent = match sender {
                Sender::H1(mut s) => {
                    let sent = s.try_send_request(req).await;
                    // Busy until its response is read; free again after. One
                    // that failed is not kept.
                    if sent.is_ok() {
                        self.put(&key, Sender::H1(s));
                    }
                    sent
                }
                // Pooled when made, shared by every request.
                Sender::H2(mut s) => s.try_send_request(req).await,
            };
            match sent {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    // Refused unsent by a connection that had been idle: the
                    // peer closed it meanwhile; a new one is tried.
                    Some(back) if reused => {
                        req = back;
                        fresh = true;
                    }
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    /// A free connection for `key`, dropping the closed and expired ones
    /// met on the way.
    fn checkout(&self, key: &(bool, Authority)) -> Option<Sender> {
        let now = Instant::now();
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.checkouts += 1;
        if pools.checkouts.is_multiple_of(SWEEP_EVERY) {
            sweep(&mut pools, now);
        }
        let list = pools.by_key.get_mut(key)?;
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let p = &mut list[i];
            if p.sender.is_closed() || now.duration_since(p.used) > IDLE_TIMEOUT {
                list.swap_remove(i);
                continue;
            }
            match &p.sender {
                Sender::H1(s) if s.is_ready() => return Some(list.swap_remove(i).sender),
                Sender::H1(_) => {}
                Sender::H2(s) => {
                    let s = s.clone();
                    p.used = now;
                    return Some(Sender::H2(s));
                }
            }
        }
        None
    }

    fn put(&self, key: &(bool, Authority), sender: Sender) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let list = match pools.by_key.get_mut(key) {
            Some(l) => l,
            None => pools.by_key.entry(key.clone()).or_default(),
        };
        if list.len() < MAX_PER_KEY {
            list.push(Pooled {
                sender,
                used: Instant::now(),
            });
        }
    }

    /// A new connection, or with HTTP/2 the one another request made while
    /// this one waited for it (`fresh`: a new one regardless); whether it
    /// was shared.
    async fn connect_or_share(
        &self,
        key: &(bool, Authority),
        fresh: bool,
        timeout: Duration,
    ) -> Result<(Sender, bool), SendError> {
        if !self.h2 {
            return Ok((self.connect(key, timeout).await?, false));
        }
        let gate = {
            let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            pools.connecting.entry(key.clone()).or_default().clone()
        };
        let asked = Instant::now();
        let mut failed = gate.lock().await;
        if let Some((at, why)) = failed.as_ref()
            && *at >= asked
        {
            let why = format!("{why} (connecting for the requests ahead of this one)");
            return Err(SendError::Connect(why.into()));
        }
        if !fresh && let Some(s) = self.checkout(key) {
            return Ok((s, true));
        }
        match self.connect(key, timeout).await {
            Ok(made) => {
                *failed = None;
                if let Sender::H2(s) = &made {
                    // In the pool before the gate opens for the next in line.
                    self.put(key, Sender::H2(s.clone()));
                }
                Ok((made, false))
            }
            Err(e) => {
                *failed = Some((Instant::now(), e.to_string()));
                Err(e)
            }
        }
    }

    /// A new connection to `key`'s address, ready for a request.
    async fn connect(
        &self,
        key: &(bool, Authority),
        timeout: Duration,
    ) -> Result<Sender, SendError> {
        let stream = self
            .stream(key, timeout)
            .await
            .map_err(SendError::Connect)?;
        if self.h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(stream)
                .await
                .map_err(|e| SendError::Connect(e.into()))?;
            tokio::spawn(conn);
            Ok(Sender::H2(sender))
        } else {
            let (mut sender, conn) = http1::Builder::new()
                .handshake(stream)
                .await
                .map_err(|e| SendError::Connect(e.into()))?;
            tokio::spawn(conn.with_upgrades());
            sender
                .ready()
                .await
                .map_err(|e| SendError::Connect(e.into()))?;
            Ok(Sender::H1(sender))
        }
    }

    /// A TCP connection to `key`'s address, with the mesh TLS handshake
    /// for `https`; both within the connect timeout (a peer that accepts
    /// the connection and never answers the handshake does not hold a
    /// request forever).
    async fn stream(
        &self,
        key: &(bool, Authority),
        timeout: Duration,
    ) -> Result<MeshStream, BoxError> {
        tokio::time::timeout(timeout, self.stream_untimed(key))
            .await
            .map_err(|_| "connect timeout")?
    }

    async fn stream_untimed(
        &self,
        (https, authority): &(bool, Authority),
    ) -> Result<MeshStream, BoxError> {
        let (addr, expected) = split_authority(authority.as_str())?;
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        if !https {
            return Ok(MeshStream::Plain(TokioIo::new(tcp)));
        }
        let tls = self
            .tls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or("no mesh certificate yet")?;
        let config = if self.h2 {
            tls.client_h2
        } else {
            tls.client_h1
        };
        let stream = mesh_handshake(config, tcp, addr, expected.as_deref()).await?;
        Ok(MeshStream::Tls(Box::new(TokioIo::new(stream))))
    }
}

/// Drop every closed or expired connection (and the keys left with none,
/// and their idle connect gates).
fn sweep(pools: &mut Pools, now: Instant) {
    pools.by_key.retain(|_, list| {
        list.retain(|p| !p.sender.is_closed() && now.duration_since(p.used) <= IDLE_TIMEOUT);
        !list.is_empty()
    });
    pools
        .connecting
        .retain(|_, gate| Arc::strong_count(gate) > 1);
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::BodyExt;
    use hyper::service::service_fn;

    use super::*;
    use crate::http::full;

    /// A server on loopback that answers after `delay`: HTTP/1.1 keeping
    /// connections alive or not, or HTTP/2; it counts the connections it
    /// accepts.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Serve {
        H1KeepAlive,
        H1Close,
        H2,
    }

    async fn server(delay: Duration, serve: Serve) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let answer = service_fn(move |req: Request<Incoming>| async move {
                        tokio::time::sleep(delay).await;
                        // `/slow`: half the body now, the rest a second later.
                        let body = if req.uri().path() == "/slow" {
                            http_body_util::StreamBody::new(slow_stream())
                                .map_err(|never: Infallible| match never {})
                                .boxed()
                        } else {
                            full(Bytes::from_static(b"ok"))
                        };
                        Ok::<_, Infallible>(Response::new(body))
                    });
                    let io = TokioIo::new(tcp);
                    let _ = match serve {
                        Serve::H2 => {
                            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, answer)
                                .await
                        }
                        h1 => {
                            hyper::server::conn::http1::Builder::new()
                                .keep_alive(h1 == Serve::H1KeepAlive)
                                .serve_connection(io, answer)
                                .await
                        }
                    };
                });
            }
        });
        (addr, accepted)
    }

    /// `o`, then `k` a second later.
    fn slow_stream()
    -> impl tokio_stream::Stream<Item = Result<http_body::Frame<Bytes>, Infallible>> + Send {
        tokio_stream::StreamExt::chain(
            tokio_stream::once(Ok(http_body::Frame::data(Bytes::from_static(b"o")))),
            tokio_stream::StreamExt::then(tokio_stream::once(()), |()| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok(http_body::Frame::data(Bytes::from_static(b"k")))
            }),
        )
    }

    fn request(addr: SocketAddr, path: &str) -> Request<ProxyBody> {
        let mut req = Request::new(full(Bytes::new()));
        *req.uri_mut() = format!("http://{addr}{path}").parse().unwrap();
        req
    }

    async fn get(up: &Upstream, addr: SocketAddr) -> Result<Bytes, SendError> {
        let resp = up.request(request(addr, "/")).await?;
        Ok(resp.into_body().collect().await.unwrap().to_bytes())
    }

    /// Let the connections' tasks run.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    fn upstream() -> Upstream {
        Upstream::new(Arc::default(), false)
    }

    /// Four requests at once, each answered `ok`.
    async fn four_at_once(up: &Upstream, addr: SocketAddr) {
        let all = tokio::join!(get(up, addr), get(up, addr), get(up, addr), get(up, addr));
        for r in [all.0, all.1, all.2, all.3] {
            assert_eq!(r.unwrap(), "ok");
        }
    }

    /// `n` requests one after the other, each answered `ok`; between them
    /// the connections' tasks run (a connection is free once its response
    /// has been read and its task has seen that).
    async fn one_after_another(up: &Upstream, addr: SocketAddr, n: usize) {
        for _ in 0..n {
            assert_eq!(get(up, addr).await.unwrap(), "ok");
            settle().await;
        }
    }

    /// One connection serves requests one after another, unless the peer
    /// closes each (a closed connection is never handed out again).
    #[tokio::test]
    async fn connections_are_reused_unless_the_peer_closes_them() {
        for (keep_alive, connections) in [(Serve::H1KeepAlive, 1), (Serve::H1Close, 5)] {
            let (addr, accepted) = server(Duration::ZERO, keep_alive).await;
            one_after_another(&upstream(), addr, 5).await;
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                connections,
                "{keep_alive:?}"
            );
        }
    }

    #[tokio::test]
    async fn concurrent_requests_get_a_connection_each_and_later_ones_reuse_them() {
        let (addr, accepted) = server(Duration::from_millis(50), Serve::H1KeepAlive).await;
        let up = upstream();
        four_at_once(&up, addr).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            4,
            "one connection per request in flight"
        );
        settle().await;
        one_after_another(&up, addr, 4).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            4,
            "free connections are reused"
        );
    }

    /// A connection whose response is still being read is busy: the next
    /// request gets another one instead of waiting behind that body.
    #[tokio::test]
    async fn a_connection_whose_response_is_being_read_is_not_handed_out() {
        let (addr, accepted) = server(Duration::ZERO, Serve::H1KeepAlive).await;
        let up = upstream();
        let slow = up.request(request(addr, "/slow")).await.unwrap();
        settle().await;
        let next = tokio::time::timeout(Duration::from_millis(500), get(&up, addr)).await;
        assert_eq!(
            next.expect("not queued behind the slow body").unwrap(),
            "ok"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        let body = slow.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
    }

    /// A burst before the first HTTP/2 connection to a peer is up shares
    /// the one connection the first request makes.
    #[tokio::test]
    async fn a_burst_shares_one_http2_connection() {
        let (addr, accepted) = server(Duration::from_millis(20), Serve::H2).await;
        let up = Upstream::new(Arc::default(), true);
        four_at_once(&up, addr).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// A peer that accepts connections and never answers the TLS handshake
    /// times out the connect; the requests of a burst that waited for that
    /// one attempt fail with it instead of each trying in turn.
    #[tokio::test]
    async fn a_burst_waiting_on_a_failed_http2_connect_fails_with_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(tcp);
            }
        });
        let tls = MeshTls::self_issued("spiffe://cluster.local/ns/shop/sa/web").unwrap();
        let up = Upstream::new(Arc::new(RwLock::new(Some(tls))), true);
        let call = || {
            let mut req = Request::new(full(Bytes::new()));
            *req.uri_mut() = format!("https://{addr}/").parse().unwrap();
            up.request_within(req, Duration::from_millis(200))
        };
        let all = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(call(), call(), call(), call())
        })
        .await
        .expect("the connect timeout covers the TLS handshake");
        for r in [all.0, all.1, all.2, all.3] {
            let e = r.unwrap_err();
            assert!(
                e.is_connect() && e.to_string().contains("connect timeout"),
                "{e}"
            );
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one attempt for the burst"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = get(&upstream(), addr).await.unwrap_err();
        assert!(e.is_connect(), "{e}");
    }
}
