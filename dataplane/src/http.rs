//! HTTP plumbing shared by the listeners: body types, upstream clients over
//! plaintext or mesh TLS, hop-by-hop headers, trace propagation, and a body
//! wrapper that reports when a response has been fully sent.

use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::tls::{MeshTls, spiffe_id};
use crate::upstream::Upstream;

/// The authority of an upstream request to `addr`. With the SPIFFE id the
/// peer must present, that id rides in the userinfo (hex), so the
/// [`Connector`] checks it after the handshake and the pool never hands a
/// connection to one identity's peer to a request for another.
pub fn upstream_authority(addr: std::net::SocketAddr, identity: Option<&str>) -> String {
    match identity {
        Some(id) if !id.is_empty() => {
            let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
            format!("{hex}@{addr}")
        }
        _ => addr.to_string(),
    }
}

/// The address and expected identity of an authority made by
/// [`upstream_authority`].
pub(crate) fn split_authority(authority: &str) -> Result<(&str, Option<String>), BoxError> {
    let Some((hex, addr)) = authority.rsplit_once('@') else {
        return Ok((authority, None));
    };
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| "the expected identity is not hex")?;
    Ok((addr, Some(String::from_utf8(bytes)?)))
}

/// Errors crossing the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body every handler returns and every upstream request carries.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A response made by the proxy itself, flagged like Envoy's response flags
/// (`x-meshc-flags`: NR no route, UH no healthy upstream, UO overflow, UT
/// timeout, UF upstream failure, FI injected fault, NC no config).
pub fn local(status: StatusCode, flag: &'static str, body: &str) -> Response<ProxyBody> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("x-meshc-flags", HeaderValue::from_static(flag));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    r
}

/// Headers that belong to one connection and are never forwarded.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    use http::header::{
        CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING, UPGRADE,
    };
    const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    // Most messages carry none of them: one pass over the names (a few
    // comparisons each) instead of a lookup per name.
    let hop = |n: &HeaderName| {
        *n == CONNECTION
            || *n == KEEP_ALIVE
            || *n == PROXY_CONNECTION
            || *n == PROXY_AUTHENTICATE
            || *n == PROXY_AUTHORIZATION
            || *n == TRANSFER_ENCODING
            || *n == UPGRADE
            || *n == TE
    };
    if !h.keys().any(hop) {
        return;
    }
    // Names listed in `Connection` are hop-by-hop too.
    if h.contains_key(&CONNECTION) {
        let listed: Vec<HeaderName> = h
            .get_all(&CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::try_from(n.trim()).ok())
            .collect();
        for n in listed {
            h.remove(n);
        }
        h.remove(&CONNECTION);
    }
    for n in [
        KEEP_ALIVE,
        PROXY_CONNECTION,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        if h.contains_key(&n) {
            h.remove(&n);
        }
    }
    // `te: trailers` is the only TE HTTP/2 (and gRPC) allows.
    if h.get(&TE).is_some_and(|v| v.as_bytes() != b"trailers") {
        h.remove(&TE);
    }
}

/// A connection to an upstream: plaintext or mesh TLS.
pub enum MeshStream {
    /// Plaintext.
    Plain(TokioIo<TcpStream>),
    /// Mesh mTLS.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl hyper::rt::Read for MeshStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MeshStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MeshStream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for MeshStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MeshStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MeshStream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MeshStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MeshStream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MeshStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MeshStream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// The client side of mesh mTLS over `tcp` (connected to `addr`): the
/// chain must be the mesh CA's (the verifier checks it) and, when the
/// endpoint registered one, the identity must be `expected`, or an endpoint
/// could be claimed by a proxy that does not run there.
pub async fn mesh_handshake(
    config: Arc<rustls::ClientConfig>,
    tcp: TcpStream,
    addr: &str,
    expected: Option<&str>,
) -> Result<TlsStream<TcpStream>, BoxError> {
    // The name is not checked (mesh certificates carry SPIFFE ids).
    let name = rustls::pki_types::ServerName::try_from("mesh.invalid")?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    if let Some(expected) = expected {
        let actual = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(spiffe_id);
        if actual.as_deref() != Some(expected) {
            return Err(format!(
                "the peer at {addr} is {}, not {expected}",
                actual.as_deref().unwrap_or("without a SPIFFE id")
            )
            .into());
        }
    }
    Ok(stream)
}

/// Upstream clients with connection pools ([`crate::upstream`]): HTTP/1.1
/// and HTTP/2 (prior knowledge in plaintext, ALPN over TLS).
#[derive(Clone)]
pub struct Clients {
    /// HTTP/1.1.
    pub h1: Arc<Upstream>,
    /// HTTP/2.
    pub h2: Arc<Upstream>,
}

impl Clients {
    /// Clients sharing the mesh certificate `tls`.
    pub fn new(tls: Arc<RwLock<Option<MeshTls>>>) -> Clients {
        Clients {
            h1: Arc::new(Upstream::new(tls.clone(), false)),
            h2: Arc::new(Upstream::new(tls, true)),
        }
    }
}

/// What the end of a response body reports.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    /// Body bytes sent.
    pub bytes: u64,
    /// `grpc-status` from the trailers (or the headers of a trailers-only response).
    pub grpc_status: Option<String>,
}

/// A response body that calls `done` once, when it ends or is dropped.
pub struct Observed<F: FnOnce(Finished) + Send + 'static> {
    inner: ProxyBody,
    seen: Finished,
    done: Option<F>,
}

impl<F: FnOnce(Finished) + Send + 'static> Observed<F> {
    /// Wrap `inner`; `grpc_status` is the header value, if any.
    pub fn new(inner: ProxyBody, grpc_status: Option<String>, done: F) -> Self {
        Observed {
            inner,
            seen: Finished {
                bytes: 0,
                grpc_status,
            },
            done: Some(done),
        }
    }
    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done(std::mem::take(&mut self.seen));
        }
    }
}

impl<F: FnOnce(Finished) + Send + 'static> Drop for Observed<F> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<F: FnOnce(Finished) + Send + Unpin + 'static> Body for Observed<F> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.seen.bytes += d.len() as u64;
                }
                if let Some(t) = frame.trailers_ref()
                    && let Some(s) = t.get("grpc-status").and_then(|v| v.to_str().ok())
                {
                    this.seen.grpc_status = Some(s.to_string());
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const B3_TRACE: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");

fn hex(v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, o) in out.iter_mut().enumerate().take(16) {
        *o = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// A trace id of 32 lower-case hex digits (not all zero, as W3C requires).
fn trace_id(v: &[u8]) -> Option<[u8; 32]> {
    let v: [u8; 32] = v.try_into().ok()?;
    // Branch-free over the fixed 32 bytes, so the compiler vectorizes it:
    // every byte lower-case hex, and not all of them `0`.
    let hex = |b: u8| (b.wrapping_sub(b'0') < 10) | (b.wrapping_sub(b'a') < 6);
    let all_hex = v.iter().fold(true, |ok, &b| ok & hex(b));
    let zero = v.iter().fold(0u8, |acc, &b| acc | (b ^ b'0')) == 0;
    (all_hex && !zero).then_some(v)
}

/// The trace and span ids of one hop, lower-case hex, kept as bytes (only
/// an access-log line reads them as text).
#[derive(Debug, Clone, Copy)]
pub struct TraceIds {
    trace: [u8; 32],
    span: [u8; 16],
}

impl Default for TraceIds {
    fn default() -> Self {
        TraceIds {
            trace: [b'0'; 32],
            span: [b'0'; 16],
        }
    }
}

impl TraceIds {
    /// The trace id, 32 hex digits.
    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace).unwrap_or_default()
    }
    /// The span id, 16 hex digits.
    pub fn span_id(&self) -> &str {
        std::str::from_utf8(&self.span).unwrap_or_default()
    }
}

/// Continue (or start) a trace: a new span id per hop in W3C `traceparent`
/// and in B3 (`x-b3-*`). Returns the trace and span ids.
pub fn propagate_trace(h: &mut HeaderMap) -> TraceIds {
    use http::header::Entry;
    // Per request: one allocation (the new values are slices of one
    // buffer) and a lookup or two per name.
    let mut span = [0u8; 16];
    hex(fastrand::u64(1..), &mut span);
    let b3 = h.get(&B3_TRACE).map(|v| trace_id(v.as_bytes()));
    let mut buf = bytes::BytesMut::with_capacity(55 + 32 + 16);
    // The next value: what `parts` write into the buffer.
    // Every value is new per request: marked sensitive, HTTP/2's HPACK
    // sends them as never-indexed literals instead of inserting each into
    // the connection's table, where they would evict the headers that do
    // repeat (and cost a search of the table per header first).
    let mut value = |parts: &[&[u8]]| {
        for p in parts {
            buf.extend_from_slice(p);
        }
        let mut v = HeaderValue::from_maybe_shared(buf.split().freeze()).ok()?;
        v.set_sensitive(true);
        Some(v)
    };
    let incoming = h.get(&TRACEPARENT).map_or(&[][..], HeaderValue::as_bytes);
    let (trace, flags) = continued(incoming, b3.flatten());
    if let Some(v) = value(&[b"00-", &trace, b"-", &span, b"-", &flags]) {
        h.insert(TRACEPARENT, v);
    }
    if b3.is_none()
        && let Some(v) = value(&[&trace])
    {
        h.insert(B3_TRACE, v);
    }
    if let Some(v) = value(&[&span]) {
        match h.entry(B3_SPAN) {
            Entry::Occupied(mut e) => {
                let mut parent = e.insert(v);
                parent.set_sensitive(true);
                h.insert(B3_PARENT, parent);
            }
            Entry::Vacant(e) => {
                e.insert(v);
            }
        }
    }
    h.entry(B3_SAMPLED).or_insert(HeaderValue::from_static("1"));
    TraceIds { trace, span }
}

/// The trace to continue and its flags: the incoming `traceparent`'s
/// (`00-<trace>-<parent>-<flags>`, 55 bytes), else the B3 trace id with
/// flags `01`, else a new trace.
fn continued(traceparent: &[u8], b3: Option<[u8; 32]>) -> ([u8; 32], [u8; 2]) {
    let v = traceparent;
    let incoming = (v.len() == 55 && v[2] == b'-' && v[35] == b'-' && v[52] == b'-')
        .then(|| trace_id(&v[3..35]).map(|t| (t, [v[53], v[54]])))
        .flatten();
    incoming.unwrap_or_else(|| {
        let t = b3.unwrap_or_else(|| {
            let mut t = [0u8; 32];
            hex(fastrand::u64(..), &mut t[..16]);
            hex(fastrand::u64(1..), &mut t[16..]);
            t
        });
        (t, *b"01")
    })
}

/// A response as [`send`] returns it.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Trailers, if any.
    pub trailers: Option<HeaderMap>,
}

/// GET `path` from a proxy's admin listener at `admin` (`/config`,
/// `/ready`, `/metrics`).
pub async fn admin_get(
    client: &Clients,
    admin: std::net::SocketAddr,
    path: &str,
) -> Result<Answer, BoxError> {
    send(
        client,
        admin,
        "admin",
        http::Method::GET,
        path,
        &[],
        Bytes::new(),
        false,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
/// One plaintext request to `addr` (a proxy's outbound listener, say) with
/// `Host: host`; for `meshc up`'s traffic and for tests. `h2` speaks HTTP/2
/// with prior knowledge.
pub async fn send(
    client: &Clients,
    addr: std::net::SocketAddr,
    host: &str,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    h2: bool,
) -> Result<Answer, BoxError> {
    let mut req = http::Request::new(full(body));
    *req.method_mut() = method;
    *req.uri_mut() = format!("http://{addr}{path}").parse()?;
    *req.version_mut() = if h2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    req.headers_mut()
        .insert(http::header::HOST, HeaderValue::from_str(host)?);
    for (k, v) in headers {
        req.headers_mut()
            .append(HeaderName::try_from(*k)?, HeaderValue::from_str(v)?);
    }
    let c = if h2 { &client.h2 } else { &client.h1 };
    let resp = c.request(req).await?;
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_32_lower_case_hex_digits_not_all_zero() {
        let good = "0af7651916cd43dd8448eb211c80319c";
        assert_eq!(
            trace_id(good.as_bytes()),
            Some(*b"0af7651916cd43dd8448eb211c80319c")
        );
        for bad in [
            "0AF7651916CD43DD8448EB211C80319C",
            "00000000000000000000000000000000",
            "0af7651916cd43dd8448eb211c80319",
            "0af7651916cd43dd8448eb211c80319cc",
            "0af7651916cd43dd8448eb211c80319g",
            "0af7651916cd43dd8448eb211c80319:",
            "0af7651916cd43dd8448eb211c80319`",
            "0af7651916cd43dd8448eb211c80319/",
            "",
        ] {
            assert_eq!(trace_id(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn traces_continue_with_a_new_span_per_hop() {
        let mut h = HeaderMap::new();
        let ids = propagate_trace(&mut h);
        let (trace, span) = (ids.trace_id().to_string(), ids.span_id().to_string());
        assert_eq!(trace.len(), 32);
        assert_eq!(span.len(), 16);
        let first = h["traceparent"].to_str().unwrap().to_string();
        assert_eq!(first, format!("00-{trace}-{span}-01"));
        let ids = propagate_trace(&mut h);
        let (trace2, span2) = (ids.trace_id(), ids.span_id());
        assert_eq!(trace2, trace, "the trace continues");
        assert_ne!(span2, span, "with a new span");
        assert_eq!(h["x-b3-parentspanid"].to_str().unwrap(), span);
        assert_eq!(h["x-b3-spanid"].to_str().unwrap(), span2);
        // Values new per request stay out of HTTP/2's header table.
        for name in [
            "traceparent",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-parentspanid",
        ] {
            assert!(h[name].is_sensitive(), "{name} is indexed");
        }
        assert!(!h["x-b3-sampled"].is_sensitive());
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("gzip"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
