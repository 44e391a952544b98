//! Opaque TCP through the mesh.
//!
//! - **Outbound**: without iptables there is no original destination to read
//!   from a redirected socket, so each TCP upstream is a listener of its own,
//!   bound for one host and port (`--tcp-upstream 127.0.0.1:15432=db:5432`,
//!   as Consul's upstreams are). A connection is routed by the host's TCP
//!   rules with [`meshc_ir::eval::route_tcp`], split by weight, balanced over
//!   the cluster's endpoints under its connection limit and outlier
//!   detection, and spliced to the peer proxy: over mesh mTLS with the ALPN
//!   protocol [`TCP_ALPN`] when the destination's TLS mode is
//!   `ISTIO_MUTUAL`, in plaintext otherwise.
//!   When the host has TLS routes for the port, the connection's first
//!   bytes are peeked for a ClientHello, and its server name chooses among
//!   them first (Envoy's TLS inspector does this; as with it, a protocol
//!   where the server speaks first waits `CLIENT_HELLO_WAIT` (5 s) on such a
//!   port before it is routed without one).
//! - **Inbound**: a stream is opaque when its mTLS handshake chose
//!   [`TCP_ALPN`], or, in plaintext, when the application is declared to
//!   speak TCP (`--app-protocol tcp`). It is authorized once, on connection
//!   attributes only ([`meshc_ir::eval::authorize_tcp`]), and spliced to the
//!   application; a denied connection is closed, as Envoy's TCP RBAC filter
//!   does.
//!
//! - **Gateway**: on a gateway port whose server is TCP or TLS
//!   `PASSTHROUGH`, a connection is routed by the routes bound to the
//!   gateway ([`meshc_ir::eval::route_gateway_tcp`]; by the ClientHello's
//!   server name for `PASSTHROUGH`), then goes on as an outbound one. A
//!   `TLS` server that terminates (`SIMPLE`, `MUTUAL`...) has its stream
//!   decrypted by the proxy, and the plaintext inside is routed by the
//!   gateway's TCP routes ([`meshc_ir::eval::route_terminated_tcp`]).
//!
//! A TCP connection keeps the config it started with to its end, like a
//! request does.

use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use meshc_ir::eval::{self, Peer};
use meshc_ir::{TlsMode, WeightedDestination};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::balance::Outcome;
use crate::client::Applied;
use crate::http::mesh_handshake;
use crate::metrics::Labels;
use crate::proxy::{Conn, State, destination_cluster, destination_port, record_outcome};
use crate::tls::{TCP_ALPN, principal};
use crate::upstream::idle_after;

/// An outbound TCP listener and the host it stands for:
/// `LISTEN_ADDR=HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpUpstream {
    /// Where the application connects.
    pub listen: SocketAddr,
    /// The host, as the application would name it (`db`, `db.shop`, an FQDN).
    pub host: String,
    /// The destination port.
    pub port: u16,
}

impl FromStr for TcpUpstream {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage =
            || format!("`{s}`: expected LISTEN_ADDR=HOST:PORT, e.g. 127.0.0.1:15432=db:5432");
        let (listen, target) = s.split_once('=').ok_or_else(usage)?;
        let listen = listen
            .trim()
            .parse()
            .map_err(|e| format!("{}: the listen address: {e}", usage()))?;
        let (host, port) = target.trim().rsplit_once(':').ok_or_else(usage)?;
        let port = port
            .parse()
            .map_err(|e| format!("{}: the port: {e}", usage()))?;
        if host.is_empty() {
            return Err(usage());
        }
        Ok(TcpUpstream {
            listen,
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for TcpUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}:{}", self.listen, self.host, self.port)
    }
}

/// How a proxied TCP connection ended up, for the metrics.
struct Ended {
    destination: String,
    route: String,
    outcome: &'static str,
}

impl Ended {
    fn new(destination: &str, route: &str, outcome: &'static str) -> Ended {
        Ended {
            destination: destination.to_string(),
            route: route.to_string(),
            outcome,
        }
    }
}

fn count(state: &State, direction: &'static str, e: &Ended) {
    let labels: Labels = vec![
        ("direction", direction.to_string()),
        ("destination", e.destination.clone()),
        ("route", e.route.clone()),
        ("outcome", e.outcome.to_string()),
    ];
    state.metrics.tcp_streams.get_or_create(&labels).inc();
}

/// A proxied connection with no bytes either way this long is closed,
/// unless its destination says otherwise (`tcp.idleTimeout`): Istio's
/// default.
pub(crate) const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// What passed through a spliced connection: when it last did (ms after
/// the splice began) and the bytes read from each side.
#[derive(Default)]
struct Activity {
    last_ms: AtomicU64,
    read: [AtomicU64; 2],
}

/// One side of a splice, noting what is read from it in [`Activity`].
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    side: usize,
    since: Instant,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            let a = &self.activity;
            a.read[self.side].fetch_add(n, Ordering::Relaxed);
            let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
            a.last_ms.store(ms, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copy both ways until both sides are done, or nothing has passed either
/// way for `idle` (then both are closed, as Envoy's TCP proxy does): the
/// bytes read from `a` and from `b`, and whether the idle timeout ended it.
async fn copy_until_idle<A, B>(a: A, b: B, idle: Duration) -> (u64, u64, bool)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let since = Instant::now();
    let activity = Arc::new(Activity::default());
    let mut a = Watched {
        inner: a,
        activity: activity.clone(),
        side: 0,
        since,
    };
    let mut b = Watched {
        inner: b,
        activity: activity.clone(),
        side: 1,
        since,
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    let timed_out = loop {
        let last = Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
        let Some(deadline) = since.checked_add(last).and_then(|t| t.checked_add(idle)) else {
            // No idle timeout.
            let _ = copy.await;
            break false;
        };
        tokio::select! {
            _ = &mut copy => break false,
            () = tokio::time::sleep_until(deadline.into()) => {
                let last = Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
                if since.elapsed().saturating_sub(last) >= idle {
                    break true;
                }
            }
        }
    };
    let read = |side: usize| activity.read[side].load(Ordering::Relaxed);
    (read(0), read(1), timed_out)
}

/// Copy both ways until both sides are done or the connection has been
/// idle for `idle`, counting the bytes; whether it went idle.
async fn splice<A, B>(
    state: &State,
    direction: &'static str,
    destination: &str,
    a: A,
    b: B,
    idle: Duration,
) -> bool
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (sent, received, timed_out) = copy_until_idle(a, b, idle).await;
    for (flow, n) in [("sent", sent), ("received", received)] {
        let labels: Labels = vec![
            ("direction", direction.to_string()),
            ("destination", destination.to_string()),
            ("flow", flow.to_string()),
        ];
        state.metrics.tcp_bytes.get_or_create(&labels).inc_by(n);
    }
    timed_out
}

/// Serve one outbound TCP listener.
pub(crate) async fn accept(listener: TcpListener, state: Arc<State>, up: Arc<TcpUpstream>) {
    loop {
        let (tcp, _) = crate::proxy::next_connection(&listener).await;
        let state = state.clone();
        let up = up.clone();
        tokio::spawn(async move {
            let open = state
                .metrics
                .accepted("outbound-tcp", crate::proxy::worker());
            let ended = outbound(&state, tcp, &up).await;
            count(&state, "outbound", &ended);
            open.dec();
        });
    }
}

async fn outbound(state: &Arc<State>, client: TcpStream, up: &TcpUpstream) -> Ended {
    let Some(applied) = state.current() else {
        return Ended::new(&up.host, "none", "no_config");
    };
    let ir = &applied.ir;
    let me = state.me(&applied);
    let mut conn = eval::L4Conn {
        port: Some(up.port),
        sni: None,
        destination: original_destination(&client),
    };
    let Some(mut decision) = eval::route_tcp(ir, &up.host, conn, &me) else {
        return Ended::new(&up.host, "none", "no_route");
    };
    // A host with TLS routes: they choose by the server name in the
    // ClientHello, read without consuming it (the bytes go upstream as sent).
    let tls_on_port = |r: &meshc_ir::L4Rule| {
        r.matches.is_empty()
            || r.matches
                .iter()
                .any(|m| m.port.is_none_or(|p| p == up.port))
    };
    let sni = if decision.policy.tls.iter().any(tls_on_port) {
        server_name(&client).await
    } else {
        None
    };
    if sni.is_some() {
        conn.sni = sni.as_deref();
        if let Some(d) = eval::route_tcp(ir, &up.host, conn, &me) {
            decision = d;
        }
    }
    let route = decision.rule_name().to_string();
    let destinations = decision.destinations();
    let Some(dest) = eval::pick(&destinations, fastrand::u32(..100)) else {
        return Ended::new(decision.host, &route, "no_route");
    };
    connect(
        state,
        &applied,
        client,
        &route,
        dest,
        Some(up.port),
        "outbound",
    )
    .await
}

/// A connection on a gateway port, routed by the caller to `rule`: by
/// [`eval::route_gateway_tcp`] for a TCP or TLS `PASSTHROUGH` server (by
/// port, the ClientHello's server name and the address the client
/// connected to), or by [`eval::route_terminated_tcp`] for the decrypted
/// stream of a `TLS` server that terminates; then on as an outbound
/// connection goes.
pub(crate) async fn gateway<S>(
    state: &Arc<State>,
    applied: &Arc<Applied>,
    client: S,
    rule: Option<&meshc_ir::L4Rule>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ended = connect_rule(state, applied, client, rule).await;
    count(state, "gateway", &ended);
}

/// Connect a gateway's connection by the rule that routed it (a weighted
/// pick among its destinations); `no_route` without one.
async fn connect_rule<S>(
    state: &Arc<State>,
    applied: &Applied,
    client: S,
    rule: Option<&meshc_ir::L4Rule>,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(rule) = rule else {
        return Ended::new("unknown", "none", "no_route");
    };
    let Some(dest) = eval::pick(&rule.destinations, fastrand::u32(..100)) else {
        return Ended::new("unknown", &rule.name, "no_route");
    };
    connect(state, applied, client, &rule.name, dest, None, "gateway").await
}

/// Connect `client` to a destination chosen by `route` (on its own port,
/// else `port`, else its host's only port) and splice them.
async fn connect<S>(
    state: &Arc<State>,
    applied: &Applied,
    client: S,
    route: &str,
    dest: &WeightedDestination,
    port: Option<u16>,
    direction: &'static str,
) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let route = route.to_string();
    let Some(host) = applied.ir.hosts.get(&dest.host) else {
        return Ended::new(&dest.host, &route, "no_route");
    };
    let port = dest.port.or(port).or_else(|| destination_port(dest, host));
    let (tp, workloads) = host.target(dest.subset.as_deref());
    let policy = tp.for_port(port);
    let mtls = policy.tls == TlsMode::IstioMutual;
    let connect_timeout = Duration::from_millis(policy.connection_pool.connect_timeout_ms.max(1));
    let idle = idle_after(policy.connection_pool.tcp_idle_timeout_ms, TCP_IDLE_TIMEOUT);
    let (cluster, endpoints) = destination_cluster(state, dest, port, policy, workloads);
    let ended = |outcome| Ended::new(&dest.host, &route, outcome);
    let spliced = |idled| ended(if idled { "idle_timeout" } else { "ok" });
    let Some(ep) = cluster.pick(&endpoints, None, None, Instant::now()) else {
        return ended("no_endpoint");
    };
    // Envoy's TCP proxy has no pending queue: over the limit, it closes.
    let Some(_permit) = cluster.try_admit() else {
        state
            .metrics
            .overflows
            .get_or_create(&vec![("destination_host", dest.host.clone())])
            .inc();
        return ended("overflow");
    };
    // The connect timeout covers the mesh TLS handshake too, as for HTTP
    // (`upstream::Upstream`): a peer that accepts and never answers the
    // handshake does not hold the connection.
    let deadline = tokio::time::Instant::now() + connect_timeout;
    let connected = tokio::time::timeout_at(deadline, TcpStream::connect(ep.addr)).await;
    let outcome = match &connected {
        Ok(Ok(_)) => Outcome::Status(200),
        _ => Outcome::Failed,
    };
    record_outcome(state, &cluster, &endpoints, &ep, outcome, &dest.host);
    let Ok(Ok(tcp)) = connected else {
        return ended("connect_failed");
    };
    let _ = tcp.set_nodelay(true);
    let _active = ep.start();
    if !mtls {
        return spliced(splice(state, direction, &dest.host, client, tcp, idle).await);
    }
    let tls = state.tls.read().expect("not poisoned").clone();
    let Some(tls) = tls else {
        return ended("no_certificate");
    };
    let addr = ep.addr.to_string();
    let handshake = mesh_handshake(tls.client_tcp, tcp, &addr, ep.identity.as_deref());
    let handshake = tokio::time::timeout_at(deadline, handshake)
        .await
        .unwrap_or_else(|_| Err("handshake timeout".into()));
    match handshake {
        Ok(stream) => spliced(splice(state, direction, &dest.host, client, stream, idle).await),
        Err(e) => {
            tracing::debug!(%addr, "TCP upstream handshake: {e}");
            ended("handshake_failed")
        }
    }
}

/// How long a connection to a host with TLS routes may take to send its
/// ClientHello before it is routed without one.
const CLIENT_HELLO_WAIT: Duration = Duration::from_secs(5);

/// The server name of the TLS ClientHello `client` opens with, peeked (left
/// in the socket); `None` when the connection does not start with one, or
/// it does not come in time. rustls's `Acceptor` parses it.
pub(crate) async fn server_name(client: &TcpStream) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + CLIENT_HELLO_WAIT;
    let mut seen = 0;
    loop {
        let n = tokio::time::timeout_at(deadline, client.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 || buf[0] != 0x16 {
            return None;
        }
        let mut acceptor = rustls::server::Acceptor::default();
        acceptor.read_tls(&mut &buf[..n]).ok()?;
        match acceptor.accept() {
            Ok(Some(accepted)) => return accepted.client_hello().server_name().map(str::to_string),
            Ok(None) if n < buf.len() => {}
            _ => return None,
        }
        // Part of the hello so far: wait for more than the bytes seen.
        if n == seen {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        seen = n;
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
    }
}

/// The address a client connected to: its original destination when the
/// connection was redirected to the proxy (iptables `REDIRECT`, read with
/// `SO_ORIGINAL_DST`), else the local address it reached, which is the one
/// it dialled. IPv4 in IPv6 is given as IPv4, for `destinationSubnets`.
pub(crate) fn original_destination(client: &TcpStream) -> Option<std::net::IpAddr> {
    let sock = socket2::SockRef::from(client);
    let local = client.local_addr().ok()?;
    let redirected = match local {
        std::net::SocketAddr::V4(_) => sock.original_dst_v4().ok(),
        std::net::SocketAddr::V6(_) => sock.original_dst_v6().ok(),
    };
    let addr = redirected.and_then(|a| a.as_socket()).unwrap_or(local);
    Some(addr.ip().to_canonical())
}

/// Whether an accepted mTLS stream carries opaque TCP.
pub(crate) fn is_opaque(alpn: Option<&[u8]>) -> bool {
    alpn == Some(TCP_ALPN)
}

/// An inbound opaque stream: authorize the connection, then splice it to
/// the application.
pub(crate) async fn inbound<S>(state: &Arc<State>, io: S, conn: &Conn)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let me = state.workload.clone();
    let ended = async {
        let Some(applied) = state.current() else {
            return Ended::new(&me, "inbound", "no_config");
        };
        let Some(w) = applied.ir.workloads.get(&state.workload) else {
            return Ended::new(&me, "inbound", "no_config");
        };
        let peer = Peer {
            principal: conn.identity.as_deref().and_then(principal),
            ip: conn.remote.map(|a| a.ip()),
            ..Default::default()
        };
        let decision = eval::authorize_tcp(w, Some(state.app_addr.port()), &peer);
        if !decision.allowed {
            state.metrics.count_denied(decision.policy);
            return Ended::new(&me, "inbound", "denied");
        }
        let Ok(app) = TcpStream::connect(state.app_addr).await else {
            return Ended::new(&me, "inbound", "connect_failed");
        };
        let _ = app.set_nodelay(true);
        let idled = splice(state, "inbound", &me, io, app, TCP_IDLE_TIMEOUT).await;
        Ended::new(&me, "inbound", if idled { "idle_timeout" } else { "ok" })
    }
    .await;
    count(state, "inbound", &ended);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Traffic keeps a spliced connection open past its idle timeout;
    /// once nothing passes for that long, both sides are closed and the
    /// bytes counted. With no idle timeout it lasts until both sides close.
    #[tokio::test]
    async fn a_splice_closes_after_its_idle_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, a) = tokio::io::duplex(64);
        let (b, mut server) = tokio::io::duplex(64);
        let splice = tokio::spawn(copy_until_idle(a, b, Duration::from_millis(200)));
        let mut buf = [0u8; 4];
        for _ in 0..4 {
            client.write_all(b"ping").await.unwrap();
            server.read_exact(&mut buf).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        // 400 ms in, twice the timeout, and open.
        assert!(!splice.is_finished(), "closed while in use");
        let quiet = Instant::now();
        let (sent, received, idled) = tokio::time::timeout(Duration::from_secs(5), splice)
            .await
            .expect("closed within the idle timeout")
            .unwrap();
        assert!(idled);
        assert!(
            quiet.elapsed() >= Duration::from_millis(150),
            "closed {:?} after the last bytes",
            quiet.elapsed()
        );
        assert_eq!((sent, received), (16, 4));
        assert_eq!(
            client.read(&mut buf).await.unwrap(),
            0,
            "the client sees it close"
        );
        assert_eq!(
            server.read(&mut buf).await.unwrap(),
            0,
            "so does the server"
        );

        let (mut client, a) = tokio::io::duplex(64);
        let (b, server) = tokio::io::duplex(64);
        let splice = tokio::spawn(copy_until_idle(a, b, Duration::MAX));
        client.write_all(b"ping").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!splice.is_finished());
        drop((client, server));
        assert_eq!(splice.await.unwrap(), (4, 0, false));
    }

    #[test]
    fn upstreams_parse_and_say_what_is_wrong() {
        let up: TcpUpstream = "127.0.0.1:15432=db.shop:5432".parse().unwrap();
        assert_eq!(up.listen, "127.0.0.1:15432".parse().unwrap());
        assert_eq!((up.host.as_str(), up.port), ("db.shop", 5432));
        assert_eq!(up.to_string(), "127.0.0.1:15432=db.shop:5432");
        for bad in [
            "db:5432",
            "127.0.0.1:1=db",
            "127.0.0.1:1=:5432",
            "x=db:1",
            "127.0.0.1:1=db:x",
        ] {
            let e = bad.parse::<TcpUpstream>().unwrap_err();
            assert!(e.contains("LISTEN_ADDR=HOST:PORT"), "{bad}: {e}");
        }
    }
}
