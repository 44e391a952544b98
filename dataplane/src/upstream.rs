//! Upstream connections and their pools, one set per worker thread.
//!
//! A request names its upstream in its URI: `http://addr/...` in plaintext,
//! `https://<identity hex>@addr/...` over mesh mTLS (see
//! [`crate::http::upstream_authority`]). The pool key is the scheme and that
//! authority, so a connection made to one identity's peer is never handed to
//! a request for another.
//!
//! HTTP/1.1 connections carry one request at a time. A connection is out
//! with its request until the response [`Body`] is dropped; then it goes to
//! the oldest request waiting for one, or back to the pool (up to
//! [`MAX_IDLE_PER_KEY`] a key), idle until its destination's idle timeout
//! ([`Limits`]; [`IDLE_TIMEOUT`] by default), when a task closes it whether
//! or not a request comes (see [`reap`]). A request that
//! finds no idle connection waits for the first of two: a connection given
//! back, or a new one made for the waiting requests. New connections are
//! made while more requests wait than connections are being made, at most
//! [`MAX_CONNECTING`] at a time a key. So a burst costs a few handshakes at
//! a time, every connection made is kept for the next request, and a
//! request never waits for a handshake when a connection frees up first.
//! Envoy's HTTP/1.1 pool hands connections to pending requests the same
//! way. (A connection and an mTLS handshake for every request in flight,
//! as this once did, melted the two-hop path down under a burst: the
//! handshakes took the CPU the requests needed, so more were in flight,
//! so more handshakes; issue 6.)
//!
//! HTTP/2 shares one multiplexed connection a key. A request that a reused
//! connection refused before sending any of it (the peer closed it while it
//! was idle) goes out again on a new connection, as hyper-util's pooled
//! client does.
//!
//! Built on hyper's connection API instead of hyper-util's legacy client:
//! per request this does two short locks, one hash of the authority and no
//! task spawn, where the legacy client's checkout, background readiness
//! task and return to the pool cost about a sixth of the proxy's user-space
//! instructions (callgrind, issue 6).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustc_hash::FxHashMap;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::http::{BoxError, MeshStream, ProxyBody, mesh_handshake, split_authority};
use crate::tls::MeshTls;

/// Idle HTTP/1.1 connections kept per upstream; one given back beyond
/// this is closed. Busy ones are not counted, and not limited here: the
/// destination's connection-pool limits ([`crate::balance::Cluster`]) are
/// enforced before this (Envoy's pools are unbounded the same way).
pub const MAX_IDLE_PER_KEY: usize = 64;
/// New HTTP/1.1 connections being made at once per upstream for the
/// requests waiting for one.
pub const MAX_CONNECTING: usize = 4;
/// The connect timeout of [`Upstream::request`] (Istio's default
/// `connectTimeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection unused this long is closed, unless its destination says
/// otherwise (`connectionPool.http.idleTimeout`). Istio's default is an
/// hour; this is hyper's pooled client's: each idle mesh connection holds
/// its TLS state and buffers at both ends.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Every this many checkouts, every key's closed and expired connections go.
const SWEEP_EVERY: u64 = 4096;

/// What a destination's connection-pool settings ask of its connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// For a new connection, TCP and mesh TLS (`connectTimeout`).
    pub connect_timeout: Duration,
    /// Requests a connection carries at most (`maxRequestsPerConnection`;
    /// 0: no limit). One that carried its last is closed when its response
    /// ends (HTTP/1.1), or handed to no further request and closed once its
    /// streams end (HTTP/2).
    pub max_requests: u32,
    /// How long a connection may go unused before it is closed
    /// (`idleTimeout`; `Duration::MAX`: never). An idle HTTP/1.1
    /// connection is closed when that time comes, traffic or not; an
    /// HTTP/2 one when a request or a sweep finds it expired.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connect_timeout: CONNECT_TIMEOUT,
            max_requests: 0,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

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

type H1 = http1::SendRequest<ProxyBody>;
type H2 = http2::SendRequest<ProxyBody>;
/// A pool's upstream: the scheme (`true`: mesh mTLS) and the authority,
/// hashed and compared as bytes. (`Authority` hashes itself a byte at a
/// time, lower-casing each: about 500 instructions for an address, more
/// for a mesh authority with its identity, per lookup. The authorities
/// here are made by the proxy, always the same way.)
#[derive(Clone)]
struct Key {
    https: bool,
    authority: Authority,
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.https == other.https && self.authority.as_str() == other.authority.as_str()
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u8(u8::from(self.https));
        state.write(self.authority.as_str().as_bytes());
    }
}

/// Whether a connection is known to be closed.
trait Closed {
    fn closed(&self) -> bool;
}

impl Closed for H1 {
    fn closed(&self) -> bool {
        self.is_closed()
    }
}

impl Closed for H2 {
    fn closed(&self) -> bool {
        self.is_closed()
    }
}

struct Pooled<S> {
    sender: S,
    /// When it was last handed out, given back or made.
    used: Instant,
    /// The requests it has carried (for `maxRequestsPerConnection`).
    served: u32,
    /// How long it may stay unused: the idle timeout of the destination of
    /// the request that used it last.
    idle: Duration,
}

impl<S> Pooled<S> {
    fn new(sender: S, idle: Duration) -> Pooled<S> {
        Pooled {
            sender,
            used: Instant::now(),
            served: 0,
            idle,
        }
    }

    /// When it expires unless used again; `None`: never.
    fn expires(&self) -> Option<Instant> {
        self.used.checked_add(self.idle)
    }
}

/// Whether a connection that carried `served` requests may carry another
/// (`max`: the destination's `maxRequestsPerConnection`, 0 for no limit).
fn may_carry_more(served: u32, max: u32) -> bool {
    max == 0 || served < max
}

impl<S: Closed> Pooled<S> {
    fn live(&self, now: Instant) -> bool {
        !self.sender.closed() && now.saturating_duration_since(self.used) <= self.idle
    }
}

/// An HTTP/1.1 connection for a waiting request, and whether it was given
/// back by another request (`true`) rather than made for the waiting ones.
type Handed = Result<(Pooled<H1>, bool), SendError>;

struct Waiter {
    tx: oneshot::Sender<Handed>,
    /// Its destination's: a connection made for it is made and kept by them.
    limits: Limits,
}

/// The requests waiting for an HTTP/1.1 connection to one upstream.
#[derive(Default)]
struct Waiting {
    queue: VecDeque<Waiter>,
    /// New connections being made for them.
    connecting: usize,
}

/// See [`Pools::connecting`].
type Gate = Arc<tokio::sync::Mutex<Option<(Instant, String)>>>;

#[derive(Default)]
struct Pools {
    /// HTTP/1.1: the idle connections (the busy ones are out with their
    /// responses' bodies).
    h1: FxHashMap<Key, Vec<Pooled<H1>>>,
    /// HTTP/1.1: the requests waiting for a connection.
    waiting: FxHashMap<Key, Waiting>,
    /// HTTP/2: the shared connection (more than one only while a closed
    /// one has not been swept).
    h2: FxHashMap<Key, Vec<Pooled<H2>>>,
    /// HTTP/2: held while a key's connection is being made, so the
    /// requests of a burst share the one it makes instead of each making
    /// its own (hyper-util's client did the same). It keeps the last
    /// failure to connect: the requests that waited for that attempt fail
    /// with it instead of each trying again in turn (a peer that drops
    /// connection attempts would otherwise hold the last of a burst for a
    /// connect timeout per request ahead of it).
    connecting: FxHashMap<Key, Gate>,
    checkouts: u64,
    /// When the task closing the idle HTTP/1.1 connections as they expire
    /// wakes next ([`reap`]); `None`: no such task runs.
    reaping: Option<Instant>,
    /// Wakes that task sooner, for a connection that expires before then.
    reap_sooner: Arc<tokio::sync::Notify>,
}

impl Pools {
    /// Count a checkout; every [`SWEEP_EVERY`], drop every closed or
    /// expired connection (and the keys left with none, and the idle
    /// waiting lists and connect gates).
    fn tick(&mut self, now: Instant) {
        self.checkouts += 1;
        if !self.checkouts.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        drop_expired(&mut self.h1, now);
        drop_expired(&mut self.h2, now);
        self.waiting.retain(|_, w| {
            w.queue.retain(|x| !x.tx.is_closed());
            !w.queue.is_empty() || w.connecting > 0
        });
        self.connecting
            .retain(|_, gate| Arc::strong_count(gate) > 1);
    }

    /// Close the expired idle HTTP/1.1 connections; when the next one
    /// expires, if one will.
    fn reap(&mut self, now: Instant) -> Option<Instant> {
        drop_expired(&mut self.h1, now);
        self.h1.values().flatten().filter_map(Pooled::expires).min()
    }
}

/// Close `pools`' idle HTTP/1.1 connections as they expire, until none is
/// left that will (a connection given back after that starts this again).
/// Without it an idle connection stayed open, its TLS state and buffers
/// held at both ends, until a request to its upstream or the sweep of
/// [`Pools::tick`] found it, which a quiet proxy never does.
async fn reap(pools: std::sync::Weak<Mutex<Pools>>, sooner: Arc<tokio::sync::Notify>) {
    loop {
        let next = {
            let Some(shared) = pools.upgrade() else {
                return;
            };
            let mut guard = lock(&shared);
            let next = guard.reap(Instant::now());
            guard.reaping = next;
            match next {
                Some(t) => t,
                None => return,
            }
        };
        // Just past the deadline, so the connection due then has expired.
        let due = tokio::time::Instant::from(next) + Duration::from_millis(1);
        tokio::select! {
            () = tokio::time::sleep_until(due) => {}
            () = sooner.notified() => {}
        }
    }
}

/// Drop `pools`' closed and expired connections, and the keys left with
/// none.
fn drop_expired<S: Closed>(pools: &mut FxHashMap<Key, Vec<Pooled<S>>>, now: Instant) {
    pools.retain(|_, list| {
        list.retain(|p| p.live(now));
        !list.is_empty()
    });
}

/// An idle timeout as the IR gives it (milliseconds; `0`: never, as Envoy
/// reads `0s`), `default` when unset.
pub fn idle_after(ms: Option<u64>, default: Duration) -> Duration {
    match ms {
        None => default,
        Some(0) => Duration::MAX,
        Some(ms) => Duration::from_millis(ms),
    }
}

type Shared = Arc<Mutex<Pools>>;

fn lock(pools: &Mutex<Pools>) -> MutexGuard<'_, Pools> {
    pools.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes connections: TCP, and the mesh TLS handshake for `https` keys.
#[derive(Clone)]
struct Connector {
    tls: Arc<RwLock<Option<MeshTls>>>,
    h2: bool,
}

/// Connections to upstreams over one protocol (HTTP/1.1, or HTTP/2 with
/// prior knowledge in plaintext and by ALPN over TLS).
pub struct Upstream {
    connector: Connector,
    pools: Shared,
}

/// A response body from an upstream. An HTTP/1.1 connection is given back
/// to its pool (or to a waiting request) when this is dropped. Hyper
/// finishes reading a response dropped before its end when what is left is
/// already buffered, and closes the connection otherwise; a closed one is
/// not kept, and the request that takes one still finishing waits for it
/// to be ready.
pub struct Body {
    inner: Incoming,
    ticket: Option<Ticket>,
}

struct Ticket {
    pools: Shared,
    key: Key,
    conn: Pooled<H1>,
    /// The destination's.
    limits: Limits,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("pooled", &self.ticket.is_some())
            .finish_non_exhaustive()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        let Some(Ticket {
            pools,
            key,
            mut conn,
            limits,
        }) = self.ticket.take()
        else {
            return;
        };
        // One that carried its last request closes as it is dropped.
        if conn.sender.is_closed() || !may_carry_more(conn.served, limits.max_requests) {
            return;
        }
        conn.idle = limits.idle_timeout;
        let mut guard = lock(&pools);
        let pending = if guard.waiting.is_empty() {
            None
        } else {
            guard.waiting.get_mut(&key)
        };
        let conn = match pending {
            Some(w) if !w.queue.is_empty() => match hand(w, conn, true) {
                Some(c) => c,
                None => return,
            },
            _ => conn,
        };
        keep(&mut guard, &pools, key, conn);
    }
}

/// Put an HTTP/1.1 connection in the idle list, unless that holds
/// [`MAX_IDLE_PER_KEY`] already (then it closes as it is dropped); it is
/// closed when it expires ([`reap`], started here when none runs).
fn keep(pools: &mut Pools, shared: &Shared, key: Key, mut conn: Pooled<H1>) {
    let list = pools.h1.entry(key).or_default();
    if list.len() >= MAX_IDLE_PER_KEY {
        return;
    }
    conn.used = Instant::now();
    let expires = conn.expires();
    list.push(conn);
    let Some(at) = expires else {
        return;
    };
    match pools.reaping {
        Some(next) if next <= at => {}
        Some(_) => {
            pools.reaping = Some(at);
            pools.reap_sooner.notify_one();
        }
        // Not when the runtime is gone (a body dropped as the proxy stops).
        None => {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                pools.reaping = Some(at);
                rt.spawn(reap(Arc::downgrade(shared), pools.reap_sooner.clone()));
            }
        }
    }
}

/// The request back, for one more try on a new connection, when a
/// connection that had been idle refused it unsent (the peer closed it
/// meanwhile); the error otherwise.
fn retry_unsent(
    mut e: hyper::client::conn::TrySendError<Request<ProxyBody>>,
    reused: bool,
) -> Result<Request<ProxyBody>, SendError> {
    match e.take_message() {
        Some(back) if reused => Ok(back),
        _ => Err(SendError::Request(e.into_error())),
    }
}

/// Hand `conn` to the oldest request still waiting; back when none is.
fn hand(w: &mut Waiting, mut conn: Pooled<H1>, reused: bool) -> Option<Pooled<H1>> {
    while let Some(waiter) = w.queue.pop_front() {
        match waiter.tx.send(Ok((conn, reused))) {
            Ok(()) => return None,
            // It stopped waiting (its timeout): the next one.
            Err(back) => match back {
                Ok((c, _)) => conn = c,
                Err(_) => return None,
            },
        }
    }
    Some(conn)
}

/// Start making connections for `key`'s waiting requests while more of
/// them wait than connections are being made (at most [`MAX_CONNECTING`]).
/// Whenever a request waits, a connection is being made for it: each one
/// made is handed to a waiting request, each failure fails one. (Requests
/// that stopped waiting are counted until a connection made prunes them:
/// at most [`MAX_CONNECTING`] too many are made, and an enqueue does not
/// walk the whole queue.)
fn fill(pools: &Shared, connector: &Connector, key: &Key, w: &mut Waiting) {
    while w.connecting < MAX_CONNECTING && w.connecting < w.queue.len() {
        let limits = w.queue[w.connecting].limits;
        w.connecting += 1;
        let (pools, connector, key) = (pools.clone(), connector.clone(), key.clone());
        tokio::spawn(async move {
            let made = connector.connect_h1(&key, limits.connect_timeout).await;
            let mut guard = lock(&pools);
            let Some(w) = guard.waiting.get_mut(&key) else {
                return;
            };
            w.connecting -= 1;
            let mut spare = None;
            match made {
                Ok(sender) => spare = hand(w, Pooled::new(sender, limits.idle_timeout), false),
                Err(e) => {
                    // The oldest request still waiting fails with it (a
                    // connect failure, for its retries and outlier
                    // detection); the others wait on.
                    while let Some(waiter) = w.queue.pop_front() {
                        if !waiter.tx.is_closed() {
                            let _ = waiter.tx.send(Err(e));
                            break;
                        }
                    }
                }
            }
            w.queue.retain(|x| !x.tx.is_closed());
            fill(&pools, &connector, &key, w);
            // Gone once no request waits and no connection is being made
            // (then none can be waiting), so a response given back finds
            // `waiting` empty and looks nothing up.
            if w.connecting == 0 {
                guard.waiting.remove(&key);
            }
            if let Some(conn) = spare {
                keep(&mut guard, &pools, key, conn);
            }
        });
    }
}

impl Upstream {
    /// Connections made with the mesh certificate in force in `tls`.
    pub fn new(tls: Arc<RwLock<Option<MeshTls>>>, h2: bool) -> Upstream {
        Upstream {
            connector: Connector { tls, h2 },
            pools: Shared::default(),
        }
    }

    /// Send `req` (its URI absolute: the scheme and authority choose the
    /// upstream) and wait for the response head; a new connection gets the
    /// default connect timeout (10 s, Istio's).
    pub async fn request(&self, req: Request<ProxyBody>) -> Result<Response<Body>, SendError> {
        self.request_within(req, Limits::default()).await
    }

    /// [`Upstream::request`] within the destination's `limits`.
    pub async fn request_within(
        &self,
        mut req: Request<ProxyBody>,
        limits: Limits,
    ) -> Result<Response<Body>, SendError> {
        let https = req.uri().scheme() == Some(&Scheme::HTTPS);
        let Some(authority) = req.uri().authority().cloned() else {
            return Err(SendError::Connect("the request names no upstream".into()));
        };
        let key = Key { https, authority };
        if self.connector.h2 {
            let resp = self.send_h2(key, req, limits).await?;
            return Ok(resp.map(|inner| Body {
                inner,
                ticket: None,
            }));
        }
        // HTTP/1.1 sends the origin form (the path), and the Host header
        // the peer's address when the request has none.
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
        if !req.headers().contains_key(http::header::HOST) {
            let authority = &key.authority;
            let host = match authority.port_u16() {
                Some(p) => format!("{}:{p}", authority.host()),
                None => authority.host().to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&host) {
                req.headers_mut().insert(http::header::HOST, v);
            }
        }
        self.send_h1(key, req, limits).await
    }

    async fn send_h1(
        &self,
        key: Key,
        mut req: Request<ProxyBody>,
        limits: Limits,
    ) -> Result<Response<Body>, SendError> {
        // After a reused connection refused the request unsent, the one
        // more try is on a new connection.
        let mut fresh = false;
        loop {
            let (mut conn, reused) = if fresh {
                // Boxed: the connect and TLS handshake state is large and
                // rarely needed, and every request's future would carry it.
                let made =
                    Box::pin(self.connector.connect_h1(&key, limits.connect_timeout)).await?;
                (Pooled::new(made, limits.idle_timeout), false)
            } else if let Some(c) = self.checkout_h1(&key) {
                (c, true)
            } else {
                self.wait(&key, limits).await?
            };
            // One given back may still be finishing its last response.
            if conn.sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(SendError::Connect("the new connection closed".into()));
            }
            match conn.sender.try_send_request(req).await {
                Ok(resp) => {
                    conn.served += 1;
                    let ticket = Ticket {
                        pools: self.pools.clone(),
                        key,
                        conn,
                        limits,
                    };
                    return Ok(resp.map(|inner| Body {
                        inner,
                        ticket: Some(ticket),
                    }));
                }
                Err(e) => {
                    req = retry_unsent(e, reused)?;
                    fresh = true;
                }
            }
        }
    }

    /// The idle HTTP/1.1 connection given back last, dropping the closed
    /// and expired ones met on the way.
    fn checkout_h1(&self, key: &Key) -> Option<Pooled<H1>> {
        let now = Instant::now();
        let mut pools = lock(&self.pools);
        pools.tick(now);
        let list = pools.h1.get_mut(key)?;
        while let Some(p) = list.pop() {
            if p.live(now) {
                return Some(p);
            }
        }
        None
    }

    /// Wait for an HTTP/1.1 connection: one given back or one made.
    async fn wait(&self, key: &Key, limits: Limits) -> Handed {
        let (tx, rx) = oneshot::channel();
        {
            let mut pools = lock(&self.pools);
            let w = pools.waiting.entry(key.clone()).or_default();
            w.queue.push_back(Waiter { tx, limits });
            fill(&self.pools, &self.connector, key, w);
        }
        rx.await
            .unwrap_or_else(|_| Err(SendError::Connect("the connection pool closed".into())))
    }

    async fn send_h2(
        &self,
        key: Key,
        mut req: Request<ProxyBody>,
        limits: Limits,
    ) -> Result<Response<Incoming>, SendError> {
        let mut fresh = false;
        loop {
            let pooled = if fresh {
                None
            } else {
                self.checkout_h2(&key, limits)
            };
            let (mut sender, reused) = match pooled {
                Some(s) => (s, true),
                None => Box::pin(self.connect_or_share(&key, fresh, limits)).await?,
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    req = retry_unsent(e, reused)?;
                    fresh = true;
                }
            }
        }
    }

    /// The shared HTTP/2 connection, dropping the closed and expired ones
    /// met on the way; one that takes its last request (`max_requests`)
    /// leaves the pool.
    fn checkout_h2(&self, key: &Key, limits: Limits) -> Option<H2> {
        let now = Instant::now();
        let mut pools = lock(&self.pools);
        pools.tick(now);
        let list = pools.h2.get_mut(key)?;
        while let Some(p) = list.last_mut() {
            if p.live(now) {
                p.used = now;
                p.idle = limits.idle_timeout;
                p.served += 1;
                let s = p.sender.clone();
                if !may_carry_more(p.served, limits.max_requests) {
                    list.pop();
                }
                return Some(s);
            }
            list.pop();
        }
        None
    }

    /// A new HTTP/2 connection, or the one another request made while
    /// this one waited for it (`fresh`: a new one regardless); whether it
    /// was shared.
    async fn connect_or_share(
        &self,
        key: &Key,
        fresh: bool,
        limits: Limits,
    ) -> Result<(H2, bool), SendError> {
        let gate = lock(&self.pools)
            .connecting
            .entry(key.clone())
            .or_default()
            .clone();
        let asked = Instant::now();
        let mut failed = gate.lock().await;
        if let Some((at, why)) = failed.as_ref()
            && *at >= asked
        {
            let why = format!("{why} (connecting for the requests ahead of this one)");
            return Err(SendError::Connect(why.into()));
        }
        if !fresh && let Some(s) = self.checkout_h2(key, limits) {
            return Ok((s, true));
        }
        match self.connector.connect_h2(key, limits.connect_timeout).await {
            Ok(made) => {
                *failed = None;
                // In the pool before the gate opens for the next in line
                // (unless this request is all it may carry).
                let mut pooled = Pooled::new(made.clone(), limits.idle_timeout);
                pooled.served = 1;
                if may_carry_more(pooled.served, limits.max_requests) {
                    lock(&self.pools)
                        .h2
                        .entry(key.clone())
                        .or_default()
                        .push(pooled);
                }
                Ok((made, false))
            }
            Err(e) => {
                *failed = Some((Instant::now(), e.to_string()));
                Err(e)
            }
        }
    }
}

impl Connector {
    /// A new HTTP/1.1 connection to `key`'s address, ready for a request.
    async fn connect_h1(&self, key: &Key, timeout: Duration) -> Result<H1, SendError> {
        let stream = self
            .stream(key, timeout)
            .await
            .map_err(SendError::Connect)?;
        let (mut sender, conn) = http1::Builder::new()
            .handshake(stream)
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        tokio::spawn(conn.with_upgrades());
        sender
            .ready()
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        Ok(sender)
    }

    /// A new HTTP/2 connection to `key`'s address.
    async fn connect_h2(&self, key: &Key, timeout: Duration) -> Result<H2, SendError> {
        let stream = self
            .stream(key, timeout)
            .await
            .map_err(SendError::Connect)?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(stream)
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// A TCP connection to `key`'s address, with the mesh TLS handshake
    /// for `https`; both within the connect timeout (a peer that accepts
    /// the connection and never answers the handshake does not hold a
    /// request forever).
    async fn stream(&self, key: &Key, timeout: Duration) -> Result<MeshStream, BoxError> {
        tokio::time::timeout(timeout, self.stream_untimed(key))
            .await
            .map_err(|_| "connect timeout")?
    }

    async fn stream_untimed(&self, Key { https, authority }: &Key) -> Result<MeshStream, BoxError> {
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
        /// HTTP/1.1 kept alive over mesh TLS ([`test_tls`]), each
        /// handshake answered [`SLOW_START`] after the connection is
        /// accepted (a handshake that costs).
        H1SlowTls,
        H2,
    }

    const SLOW_START: Duration = Duration::from_millis(1500);

    /// Where a test server listens, and whether over mesh TLS.
    #[derive(Clone, Copy)]
    struct Peer {
        addr: SocketAddr,
        https: bool,
    }

    impl Peer {
        fn plain(addr: SocketAddr) -> Peer {
            Peer { addr, https: false }
        }
    }

    /// One self-issued mesh certificate for the servers and clients of
    /// these tests.
    fn test_tls() -> MeshTls {
        static TLS: std::sync::OnceLock<MeshTls> = std::sync::OnceLock::new();
        TLS.get_or_init(|| MeshTls::self_issued("spiffe://cluster.local/ns/shop/sa/web").unwrap())
            .clone()
    }

    async fn server(delay: Duration, serve: Serve) -> (Peer, Arc<AtomicUsize>) {
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
                        // `/slow`: half the body now, the rest a second
                        // later; `/slowish`: 100 ms later.
                        let rest = match req.uri().path() {
                            "/slow" => Some(Duration::from_secs(1)),
                            "/slowish" => Some(Duration::from_millis(100)),
                            _ => None,
                        };
                        let body = if let Some(rest) = rest {
                            http_body_util::StreamBody::new(slow_stream(rest))
                                .map_err(|never: Infallible| match never {})
                                .boxed()
                        } else {
                            full(Bytes::from_static(b"ok"))
                        };
                        Ok::<_, Infallible>(Response::new(body))
                    });
                    if serve == Serve::H1SlowTls {
                        tokio::time::sleep(SLOW_START).await;
                        let acceptor = tokio_rustls::TlsAcceptor::from(test_tls().server);
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), answer)
                            .await;
                        return;
                    }
                    let io = TokioIo::new(tcp);
                    let _ = match serve {
                        Serve::H2 => {
                            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, answer)
                                .await
                        }
                        h1 => {
                            hyper::server::conn::http1::Builder::new()
                                .keep_alive(h1 != Serve::H1Close)
                                .serve_connection(io, answer)
                                .await
                        }
                    };
                });
            }
        });
        let https = serve == Serve::H1SlowTls;
        (Peer { addr, https }, accepted)
    }

    /// `o`, then `k` after `rest`.
    fn slow_stream(
        rest: Duration,
    ) -> impl tokio_stream::Stream<Item = Result<http_body::Frame<Bytes>, Infallible>> + Send {
        tokio_stream::StreamExt::chain(
            tokio_stream::once(Ok(http_body::Frame::data(Bytes::from_static(b"o")))),
            tokio_stream::StreamExt::then(tokio_stream::once(()), move |()| async move {
                tokio::time::sleep(rest).await;
                Ok(http_body::Frame::data(Bytes::from_static(b"k")))
            }),
        )
    }

    fn request(peer: Peer, path: &str) -> Request<ProxyBody> {
        let mut req = Request::new(full(Bytes::new()));
        let scheme = if peer.https { "https" } else { "http" };
        *req.uri_mut() = format!("{scheme}://{}{path}", peer.addr).parse().unwrap();
        req
    }

    async fn get(up: &Upstream, peer: Peer) -> Result<Bytes, SendError> {
        let resp = up.request(request(peer, "/")).await?;
        Ok(resp.into_body().collect().await.unwrap().to_bytes())
    }

    /// Let the connections' tasks run.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    fn upstream() -> Upstream {
        Upstream::new(Arc::new(RwLock::new(Some(test_tls()))), false)
    }

    /// Four requests at once, each answered `ok`.
    async fn four_at_once(up: &Upstream, addr: Peer) {
        let all = tokio::join!(get(up, addr), get(up, addr), get(up, addr), get(up, addr));
        for r in [all.0, all.1, all.2, all.3] {
            assert_eq!(r.unwrap(), "ok");
        }
    }

    /// `n` requests one after the other, each answered `ok`; between them
    /// the connections' tasks run (a connection is free once its response
    /// has been read and its task has seen that).
    async fn one_after_another(up: &Upstream, addr: Peer, n: usize) {
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

    /// Forty requests at once to a peer whose connections take 1.5 s to
    /// come up: a few connections are made at a time, and the requests
    /// share them as they free up, instead of a connection (and a
    /// handshake) each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_makes_a_few_connections_at_a_time_and_shares_them() {
        let (addr, accepted) = server(Duration::ZERO, Serve::H1SlowTls).await;
        let up = Arc::new(upstream());
        let burst: Vec<_> = (0..40)
            .map(|_| {
                let up = up.clone();
                tokio::spawn(async move { get(&up, addr).await })
            })
            .collect();
        for r in burst {
            assert_eq!(r.await.unwrap().unwrap(), "ok");
        }
        let made = accepted.load(Ordering::SeqCst);
        // The first MAX_CONNECTING serve the burst within milliseconds of
        // coming up; the ones started as each came up find none waiting.
        assert!(
            (MAX_CONNECTING..=3 * MAX_CONNECTING).contains(&made),
            "{made} connections for a burst of 40"
        );
        // Every connection made is kept: the same burst again is served by
        // them (and by at most MAX_CONNECTING more started meanwhile).
        settle().await;
        let again: Vec<_> = (0..40)
            .map(|_| {
                let up = up.clone();
                tokio::spawn(async move { get(&up, addr).await })
            })
            .collect();
        let started = Instant::now();
        for r in again {
            assert_eq!(r.await.unwrap().unwrap(), "ok");
        }
        assert!(started.elapsed() < SLOW_START, "{:?}", started.elapsed());
        let more = accepted.load(Ordering::SeqCst) - made;
        assert!(more <= MAX_CONNECTING, "{more} more connections");
    }

    /// A request waiting for a connection takes the first one free: one
    /// given back 100 ms later rather than the new one made for it (1.5 s).
    #[tokio::test]
    async fn a_waiting_request_takes_a_connection_given_back_before_its_own_is_made() {
        let (addr, accepted) = server(Duration::ZERO, Serve::H1SlowTls).await;
        let up = upstream();
        assert_eq!(get(&up, addr).await.unwrap(), "ok");
        settle().await;
        let busy = up.request(request(addr, "/slowish")).await.unwrap();
        let started = Instant::now();
        let (waited, body) = tokio::join!(get(&up, addr), async {
            busy.into_body().collect().await.unwrap().to_bytes()
        });
        assert_eq!(body, "ok");
        assert_eq!(waited.unwrap(), "ok");
        let took = started.elapsed();
        assert!(took < SLOW_START / 2, "waited {took:?} for a connection");
        // The one made for it meanwhile comes up and is kept.
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// Every request of a burst to a peer that refuses connections fails
    /// with a connect error (none is left waiting).
    #[tokio::test]
    async fn a_burst_to_a_refusing_peer_fails_every_request() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let up = Arc::new(upstream());
        let burst: Vec<_> = (0..3 * MAX_CONNECTING)
            .map(|_| {
                let up = up.clone();
                tokio::spawn(async move { get(&up, Peer::plain(addr)).await })
            })
            .collect();
        for r in burst {
            let r = tokio::time::timeout(Duration::from_secs(10), r)
                .await
                .expect("no request is left waiting");
            let e = r.unwrap().unwrap_err();
            assert!(e.is_connect(), "{e}");
        }
    }

    /// `maxRequestsPerConnection`: a connection carries at most that many
    /// requests, over either protocol.
    #[tokio::test]
    async fn a_connection_carries_at_most_max_requests_per_connection() {
        for (serve, max, connections) in [
            (Serve::H1KeepAlive, 2, 3),
            (Serve::H1KeepAlive, 1, 5),
            (Serve::H1KeepAlive, 0, 1),
            (Serve::H2, 2, 3),
            (Serve::H2, 1, 5),
            (Serve::H2, 0, 1),
        ] {
            let (peer, accepted) = server(Duration::ZERO, serve).await;
            let up = Upstream::new(Arc::default(), serve == Serve::H2);
            for _ in 0..5 {
                let resp = up
                    .request_within(
                        request(peer, "/"),
                        Limits {
                            max_requests: max,
                            ..Limits::default()
                        },
                    )
                    .await
                    .unwrap();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(body, "ok");
                settle().await;
            }
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                connections,
                "{serve:?}, at most {max} a connection"
            );
        }
    }

    /// An idle HTTP/1.1 connection is closed when its destination's idle
    /// timeout comes, with no request to find it expired; one used again
    /// meanwhile gets its time again; with no timeout (`Duration::MAX`) it
    /// stays. A connection to another upstream that expires much later
    /// does not hold the earlier one open.
    #[tokio::test]
    async fn idle_connections_close_when_their_idle_timeout_comes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = Peer::plain(listener.local_addr().unwrap());
        let (accepted, open) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, o) = (accepted.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let o = o.clone();
                tokio::spawn(async move {
                    let ok = service_fn(|_| async {
                        Ok::<_, Infallible>(Response::new(full(Bytes::from_static(b"ok"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), ok)
                        .await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        let up = upstream();
        let get_within = async |peer, idle_timeout| {
            let limits = Limits {
                idle_timeout,
                ..Limits::default()
            };
            let resp = up.request_within(request(peer, "/"), limits).await.unwrap();
            assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
            settle().await;
        };
        let (later, _) = server(Duration::ZERO, Serve::H1KeepAlive).await;
        get_within(later, Duration::from_secs(60)).await;
        let get_within = async |idle_timeout| get_within(peer, idle_timeout).await;
        let idle = Duration::from_millis(300);
        let ms = |n| tokio::time::sleep(Duration::from_millis(n));
        get_within(idle).await;
        assert_eq!(open.load(Ordering::SeqCst), 1, "kept for the next request");
        ms(200).await;
        get_within(idle).await;
        ms(200).await;
        // Past the first use's deadline: the second one's counts.
        assert_eq!(open.load(Ordering::SeqCst), 1, "used again, so kept");
        ms(300).await;
        assert_eq!(open.load(Ordering::SeqCst), 0, "closed, no request came");
        assert_eq!(lock(&up.pools).h1.len(), 1, "the other upstream's stays");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        get_within(Duration::MAX).await;
        ms(600).await;
        get_within(Duration::MAX).await;
        assert_eq!(open.load(Ordering::SeqCst), 1, "no idle timeout: kept");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "and reused");
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
            up.request_within(
                req,
                Limits {
                    connect_timeout: Duration::from_millis(200),
                    ..Limits::default()
                },
            )
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
        let e = get(&upstream(), Peer::plain(addr)).await.unwrap_err();
        assert!(e.is_connect(), "{e}");
    }
}
