//! The one evaluator: how a request is routed and authorized under an IR.
//!
//! `meshc test` and the proxy call exactly these functions, so what a policy
//! test asserts is what the data plane does.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::{
    AuthzPolicy, AuthzRule, Condition, Fault, GatewayServer, HostPolicy, HttpAction, HttpMatch,
    HttpRule, Ir, L4Match, L4Rule, Map, Mirror, OperationMatch, Retries, Rewrite, SourceMatch,
    Values, WeightedDestination, WorkloadPolicy, host_pattern_matches,
};

/// An HTTP request as the evaluator sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Host as requested (`reviews`, `reviews.default`, an FQDN; a `:port` is ignored).
    pub host: String,
    /// Destination port.
    pub port: Option<u16>,
    /// Method.
    pub method: String,
    /// Path, possibly with a `?query`.
    pub path: String,
    /// `http` or `https`.
    pub scheme: std::borrow::Cow<'static, str>,
    /// Headers, names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The gateway (`namespace/name`) the request enters through, if any.
    pub gateway: Option<String>,
}

impl Request {
    /// The path without its query.
    pub fn path_only(&self) -> &str {
        self.path
            .split_once('?')
            .map_or(self.path.as_str(), |(p, _)| p)
    }
    /// The query parameters.
    pub fn query(&self) -> BTreeMap<&str, &str> {
        self.path
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
            .collect()
    }
}

/// Who sends a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// Namespace of the calling workload (routing's `sourceNamespace`).
    pub namespace: Option<String>,
    /// Labels of the calling workload (routing's `sourceLabels`).
    pub labels: Map<String, String>,
    /// Authenticated principal `<td>/ns/<ns>/sa/<sa>`, present only over mTLS.
    pub principal: Option<String>,
    /// Address.
    pub ip: Option<IpAddr>,
    /// JWT principal `iss/sub`, when a token was validated.
    pub request_principal: Option<String>,
}

/// Which rule decided a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed<'a> {
    /// The rule at `index` of the host's (or gateway host's) HTTP rules.
    Rule {
        /// Position in the rule list.
        index: usize,
        /// The rule.
        rule: &'a HttpRule,
    },
    /// No rule matched, or the host has none: the host itself, Istio's defaults.
    Default,
    /// The host has rules but none matched: Istio answers 404.
    NoMatch,
}

/// The outcome of [`route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDecision<'a> {
    /// The host key the request resolved to.
    pub host: &'a str,
    /// Its policy, when it is a mesh host (gateway-only hosts have none).
    pub policy: Option<&'a HostPolicy>,
    /// The deciding rule.
    pub routed: Routed<'a>,
    /// The request's port (for the default route).
    port: Option<u16>,
}

impl<'a> RouteDecision<'a> {
    /// The rule's name, or `default`/`no match`.
    pub fn rule_name(&self) -> &str {
        match self.routed {
            Routed::Rule { rule, .. } => &rule.name,
            Routed::Default => "default",
            Routed::NoMatch => "no match",
        }
    }
    /// The weighted destinations (weights sum to 100); empty for redirects,
    /// direct responses and no match.
    pub fn destinations(&self) -> Cow<'a, [WeightedDestination]> {
        match self.routed {
            Routed::Rule { rule, .. } => match &rule.action {
                HttpAction::Route(d) => Cow::Borrowed(d.as_slice()),
                _ => Cow::Owned(Vec::new()),
            },
            Routed::Default => Cow::Owned(vec![default_destination(self.host, self.port)]),
            Routed::NoMatch => Cow::Owned(Vec::new()),
        }
    }
    /// The action, when a rule decided.
    pub fn action(&self) -> Option<&'a HttpAction> {
        match self.routed {
            Routed::Rule { rule, .. } => Some(&rule.action),
            _ => None,
        }
    }
    /// Retries to apply.
    pub fn retries(&self) -> Cow<'a, Retries> {
        match self.routed {
            Routed::Rule { rule, .. } => Cow::Borrowed(&rule.retries),
            _ => Cow::Owned(Retries::istio_default()),
        }
    }
    /// Overall timeout in milliseconds.
    pub fn timeout_ms(&self) -> Option<u64> {
        match self.routed {
            Routed::Rule { rule, .. } => rule.timeout_ms,
            _ => None,
        }
    }
    /// Fault to inject.
    pub fn fault(&self) -> Option<&'a Fault> {
        match self.routed {
            Routed::Rule { rule, .. } => rule.fault.as_ref(),
            _ => None,
        }
    }
    /// Mirrors.
    pub fn mirrors(&self) -> &'a [Mirror] {
        match self.routed {
            Routed::Rule { rule, .. } => &rule.mirrors,
            _ => &[],
        }
    }
    /// Rewrite.
    pub fn rewrite(&self) -> Option<&'a Rewrite> {
        match self.routed {
            Routed::Rule { rule, .. } => rule.rewrite.as_ref(),
            _ => None,
        }
    }
}

/// The default route's one destination: the host itself, on `port`.
fn default_destination(host: &str, port: Option<u16>) -> WeightedDestination {
    WeightedDestination {
        host: host.to_string(),
        subset: None,
        port,
        weight: 100,
        labels: Map::default(),
        request_headers: Default::default(),
        response_headers: Default::default(),
    }
}

/// Pick a destination for a roll in `0..100`: destination *i* gets the rolls
/// from the sum of the weights before it up to that sum plus its weight.
pub fn pick(destinations: &[WeightedDestination], roll: u32) -> Option<&WeightedDestination> {
    let mut acc = 0;
    for d in destinations {
        acc += d.weight;
        if roll < acc {
            return Some(d);
        }
    }
    None
}

/// Resolve the requested host to a key of `hosts`, the way a sidecar's DNS
/// search path and Envoy's virtual-host matching do: exact, then the short
/// forms qualified in the caller's namespace, then the most specific wildcard.
pub fn resolve_host<'a, V>(
    hosts: &'a BTreeMap<String, V>,
    requested: &str,
    from_ns: Option<&str>,
    cluster_domain: &str,
) -> Option<&'a str> {
    // Runs for every request a proxy routes: one allocation at most (the
    // qualified form), none when the host is named as the IR names it.
    let bare = strip_port(requested);
    let lower;
    let host = if bare.bytes().any(|b| b.is_ascii_uppercase()) {
        lower = bare.to_ascii_lowercase();
        lower.as_str()
    } else {
        bare
    };
    let known = |candidate: &str| hosts.get_key_value(candidate).map(|(k, _)| k.as_str());
    if let Some(k) = known(host) {
        return Some(k);
    }
    // The candidates after the host itself, in order; the last one tried is
    // the form wildcards are matched against.
    let mut full = String::new();
    fn qualify<'s>(full: &'s mut String, host: &str, parts: &[&str]) -> &'s str {
        full.clear();
        // Once, instead of growing by doubling as the parts go in.
        full.reserve(host.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>());
        full.push_str(host);
        for p in parts {
            full.push('.');
            full.push_str(p);
        }
        full
    }
    let found = match host.matches('.').count() {
        0 => from_ns.and_then(|ns| known(qualify(&mut full, host, &[ns, "svc", cluster_domain]))),
        1 => known(qualify(&mut full, host, &["svc", cluster_domain])),
        _ => None,
    };
    if found.is_some() {
        return found;
    }
    if !host.ends_with(cluster_domain)
        && host.ends_with(".svc")
        && let Some(k) = known(qualify(&mut full, host, &[cluster_domain]))
    {
        return Some(k);
    }
    let full = if full.is_empty() { host } else { &full };
    // Wildcard keys sort together: `*` comes right before `+`.
    use std::ops::Bound;
    hosts
        .range::<str, _>((Bound::Included("*"), Bound::Excluded("+")))
        .map(|(k, _)| k)
        .filter(|k| host_pattern_matches(k, full))
        .max_by_key(|k| k.len())
        .map(String::as_str)
}

fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The gateway an HTTP request arriving on gateway port `port` for `host`
/// enters through, and the server that admits it: the first gateway in the
/// IR (by name) with an HTTP server on that port whose hosts admit `host`
/// and that terminates TLS when the request came over TLS (`terminated`)
/// or is plaintext when it did not, and with routes bound for `host`.
/// `None` when no such server exists: the request has nowhere to go.
///
/// `PASSTHROUGH` and TCP servers are L4 ([`route_gateway_tcp`]).
pub fn gateway_for<'a>(
    ir: &'a Ir,
    host: &str,
    port: u16,
    terminated: bool,
    source: &Peer,
) -> Option<(&'a str, &'a GatewayServer)> {
    let wanted = strip_port(host).to_ascii_lowercase();
    let ns = source.namespace.as_deref();
    ir.gateways.iter().find_map(|(name, g)| {
        let server = g.servers.iter().find(|s| {
            let serves = if terminated {
                terminates(s)
            } else {
                s.tls.is_none() && !l4_server(s)
            };
            s.port == port && serves && admits(s, &wanted)
        })?;
        resolve_host(&g.hosts, host, ns, &ir.mesh.cluster_domain)?;
        Some((name.as_str(), server))
    })
}

/// The server that terminates a TLS connection on gateway port `port` whose
/// ClientHello names `sni`: the first (gateways by name, servers in order)
/// whose hosts admit the name. Without a name, only a server for any host
/// (`*`) does, as Envoy matches a filter chain without server names. The
/// server serves HTTP inside ([`terminates`]) or, on the `TLS` protocol,
/// opaque TCP ([`terminates_tcp`]).
pub fn terminating_server<'a>(
    ir: &'a Ir,
    port: u16,
    sni: Option<&str>,
) -> Option<(&'a str, &'a GatewayServer)> {
    let sni = sni.map(str::to_ascii_lowercase);
    ir.gateways.iter().find_map(|(name, g)| {
        g.servers
            .iter()
            .find(|s| {
                s.port == port
                    && (terminates(s) || terminates_tcp(s))
                    && match sni.as_deref() {
                        Some(n) => admits(s, n),
                        None => s.hosts.iter().any(|h| h == "*"),
                    }
            })
            .map(|s| (name.as_str(), s))
    })
}

/// What a gateway port serves, for the proxy to choose how it reads a
/// connection on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayPort {
    /// Plaintext HTTP servers: requests are routed by [`route`].
    Http,
    /// Servers that terminate TLS ([`terminating_server`] chooses by the
    /// ClientHello's server name); the requests inside are routed by
    /// [`route`], or for a `TLS`-protocol server the stream inside by
    /// [`route_terminated_tcp`].
    Https,
    /// TCP servers, or TLS servers in `PASSTHROUGH` mode: connections are
    /// routed by [`route_gateway_tcp`], with the server name of their
    /// ClientHello when `passthrough` (a `PASSTHROUGH` server is on the
    /// port, so the proxy must read it).
    L4 {
        /// Whether a `PASSTHROUGH` server is on the port.
        passthrough: bool,
        /// Whether a server on the port also terminates TLS: a ClientHello
        /// that no `PASSTHROUGH` server admits is terminated.
        terminate: bool,
    },
    /// No server on the port that the proxy serves.
    None,
}

/// Whether one of a gateway server's hosts admits `host` (lowercase).
fn admits(s: &GatewayServer, host: &str) -> bool {
    s.hosts
        .iter()
        .any(|h| host_pattern_matches(&h.to_ascii_lowercase(), host))
}

/// Whether a gateway server is served as opaque TCP: a TLS server in
/// `PASSTHROUGH` mode (routed by SNI), or a plaintext server of a protocol
/// that is not HTTP.
fn l4_server(s: &GatewayServer) -> bool {
    match &s.tls {
        Some(mode) => mode.eq_ignore_ascii_case("PASSTHROUGH"),
        None => !matches!(
            s.protocol.to_ascii_uppercase().as_str(),
            "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" | "HTTPS" | "TLS"
        ),
    }
}

/// Whether a gateway server terminates TLS: a mode other than
/// `PASSTHROUGH` (and `AUTO_PASSTHROUGH`), with the credentials it needs.
fn terminating_mode(s: &GatewayServer) -> bool {
    s.termination.is_some()
        && s.tls.as_deref().is_some_and(|m| {
            ["SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL", "ISTIO_MUTUAL"]
                .iter()
                .any(|t| m.eq_ignore_ascii_case(t))
        })
}

/// Whether a gateway server terminates TLS and serves HTTP inside: a
/// terminating mode on an HTTP protocol.
pub fn terminates(s: &GatewayServer) -> bool {
    terminating_mode(s)
        && matches!(
            s.protocol.to_ascii_uppercase().as_str(),
            "HTTPS" | "HTTP" | "HTTP2" | "GRPC"
        )
}

/// Whether a gateway server terminates TLS and carries opaque TCP inside: a
/// terminating mode on the `TLS` protocol. The decrypted stream is routed
/// by the gateway's TCP routes ([`route_terminated_tcp`]), as Istio does.
pub fn terminates_tcp(s: &GatewayServer) -> bool {
    terminating_mode(s) && s.protocol.eq_ignore_ascii_case("TLS")
}

/// What the gateways in the IR serve on `port`: L4 when any server on it is
/// served as opaque TCP, HTTPS when a server terminates TLS, HTTP when a
/// plaintext HTTP server is, or nothing.
pub fn gateway_port(ir: &Ir, port: u16) -> GatewayPort {
    let servers = || {
        ir.gateways
            .values()
            .flat_map(|g| &g.servers)
            .filter(move |s| s.port == port)
    };
    let terminate = servers().any(|s| terminates(s) || terminates_tcp(s));
    if servers().any(l4_server) {
        GatewayPort::L4 {
            passthrough: servers().any(|s| l4_server(s) && s.tls.is_some()),
            terminate,
        }
    } else if terminate {
        GatewayPort::Https
    } else if servers().any(|s| s.tls.is_none()) {
        GatewayPort::Http
    } else {
        GatewayPort::None
    }
}

/// What a proxy knows of a TCP connection when it routes one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct L4Conn<'a> {
    /// The destination port.
    pub port: Option<u16>,
    /// The server name of its TLS ClientHello, when it opens with one.
    pub sni: Option<&'a str>,
    /// The address the client connected to (its original destination), for
    /// `destinationSubnets`.
    pub destination: Option<IpAddr>,
}

/// A TLS route rule (its alternatives name server names) rather than a TCP
/// one: a gateway's TCP and TLS routes share one list per host.
fn is_tls_rule(r: &L4Rule) -> bool {
    !r.matches.is_empty() && r.matches.iter().all(|m| !m.sni_hosts.is_empty())
}

/// Route a connection arriving on gateway port `port` (with the server name
/// of its ClientHello, `sni`, when it opens with one): the first gateway
/// (by name) with an opaque-TCP server on the port (for a `PASSTHROUGH`
/// server, one whose hosts admit `sni`), then the first of its bound rules
/// (hosts in order, rules in order) whose alternative holds: TLS rules for a
/// `PASSTHROUGH` server, TCP rules otherwise. `None`: nowhere to go (a
/// gateway has no host of its own to fall back to).
pub fn route_gateway_tcp<'a>(
    ir: &'a Ir,
    port: u16,
    conn: L4Conn<'_>,
    source: &Peer,
) -> Option<&'a L4Rule> {
    let sni = conn.sni.map(str::to_ascii_lowercase);
    let conn = L4Conn {
        port: Some(port),
        sni: sni.as_deref(),
        destination: conn.destination,
    };
    ir.gateways.values().find_map(|g| {
        let server = g.servers.iter().find(|s| {
            s.port == port
                && l4_server(s)
                && (s.tls.is_none() || sni.as_deref().is_some_and(|n| admits(s, n)))
        })?;
        first_l4_rule(g, server.tls.is_some(), &conn, source)
    })
}

/// Route the decrypted stream of a connection that gateway `gateway`'s
/// server on `port` terminated ([`terminates_tcp`]): the first of the
/// gateway's bound TCP rules (hosts in order, rules in order) whose
/// alternative holds for the connection (TCP rules match no server name).
pub fn route_terminated_tcp<'a>(
    ir: &'a Ir,
    gateway: &str,
    port: u16,
    conn: L4Conn<'_>,
    source: &Peer,
) -> Option<&'a L4Rule> {
    let conn = L4Conn {
        port: Some(port),
        ..conn
    };
    first_l4_rule(ir.gateways.get(gateway)?, false, &conn, source)
}

/// A gateway's first bound rule, TLS rules when `tls` and TCP rules
/// otherwise, with an alternative that holds for `conn`.
fn first_l4_rule<'a>(
    g: &'a crate::GatewayPolicy,
    tls: bool,
    conn: &L4Conn<'_>,
    source: &Peer,
) -> Option<&'a L4Rule> {
    g.l4.values().flatten().find(|r| {
        is_tls_rule(r) == tls
            && (r.matches.is_empty() || r.matches.iter().any(|m| l4_matches(m, conn, source)))
    })
}

/// Every request header (lower-case name) a decision under `ir` can read:
/// route matches' `headers` and `withoutHeaders` (hosts' and gateways'
/// rules), authorization conditions on `request.headers[...]`, and the
/// consistent-hash keys of traffic policies (a header, or `cookie` for a
/// cookie). A caller that builds [`Request`]s for this IR may copy only
/// these headers: no other header changes what [`route`] or [`authorize`]
/// decide, nor which endpoint a hash picks.
pub fn headers_read(ir: &Ir) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let rules = ir.hosts.values().flat_map(|h| &h.http).chain(
        ir.gateways
            .values()
            .flat_map(|g| g.hosts.values().flatten()),
    );
    for m in rules.flat_map(|r| &r.matches) {
        names.extend(m.headers.keys().chain(m.without_headers.keys()).cloned());
    }
    let conditions = ir
        .workloads
        .values()
        .flat_map(|w| {
            w.authz
                .custom
                .iter()
                .chain(&w.authz.deny)
                .chain(&w.authz.allow)
        })
        .flat_map(|p| &p.rules)
        .flat_map(|r| &r.when);
    for c in conditions {
        if let Some(h) = c
            .key
            .strip_prefix("request.headers[")
            .and_then(|k| k.strip_suffix(']'))
        {
            names.insert(h.to_ascii_lowercase());
        }
    }
    let policies = ir.hosts.values().flat_map(|h| {
        std::iter::once(&h.traffic_policy).chain(h.subsets.values().map(|s| &s.traffic_policy))
    });
    for tp in policies {
        let balancers =
            std::iter::once(&tp.load_balancer).chain(tp.ports.values().map(|p| &p.load_balancer));
        for lb in balancers {
            match lb {
                crate::LoadBalancer::ConsistentHash(crate::HashKey::Header(h)) => {
                    names.insert(h.to_ascii_lowercase());
                }
                crate::LoadBalancer::ConsistentHash(crate::HashKey::Cookie(_)) => {
                    names.insert("cookie".to_string());
                }
                _ => {}
            }
        }
    }
    names
}

/// Route an HTTP request: the host's rules in order (or, through a gateway,
/// the rules bound to that gateway); the first rule with a matching
/// alternative decides. `None` when the host is unknown to the IR.
pub fn route<'a>(ir: &'a Ir, req: &Request, source: &Peer) -> Option<RouteDecision<'a>> {
    let cd = &ir.mesh.cluster_domain;
    let ns = source.namespace.as_deref();
    if let Some(gw) = &req.gateway {
        let g = ir.gateways.get(gw)?;
        let host = resolve_host(&g.hosts, &req.host, ns, cd)?;
        let rules = &g.hosts[host];
        let routed = first_match(rules, req, source);
        return Some(RouteDecision {
            host,
            policy: ir.hosts.get(host),
            routed,
            port: req.port,
        });
    }
    let host = resolve_host(&ir.hosts, &req.host, ns, cd)?;
    let policy = &ir.hosts[host];
    let routed = if policy.http.is_empty() {
        Routed::Default
    } else {
        first_match(&policy.http, req, source)
    };
    Some(RouteDecision {
        host,
        policy: Some(policy),
        routed,
        port: req.port,
    })
}

fn first_match<'a>(rules: &'a [HttpRule], req: &Request, source: &Peer) -> Routed<'a> {
    rules
        .iter()
        .enumerate()
        .find(|(_, r)| {
            r.matches.is_empty() || r.matches.iter().any(|m| http_matches(m, req, source))
        })
        .map_or(Routed::NoMatch, |(index, rule)| Routed::Rule {
            index,
            rule,
        })
}

/// Whether one match alternative holds for a request.
pub fn http_matches(m: &HttpMatch, req: &Request, source: &Peer) -> bool {
    let opt =
        |sm: &Option<crate::StrMatch>, v: &str| sm.as_ref().is_none_or(|sm| sm.matches(v, false));
    if let Some(uri) = &m.uri
        && !uri.matches(req.path_only(), m.ignore_uri_case)
    {
        return false;
    }
    if !opt(&m.scheme, &req.scheme) || !opt(&m.method, &req.method) || !opt(&m.authority, &req.host)
    {
        return false;
    }
    if m.port.is_some() && m.port != req.port {
        return false;
    }
    for (name, sm) in &m.headers {
        match req.headers.get(name) {
            Some(v) if sm.matches(v, false) => {}
            _ => return false,
        }
    }
    for (name, sm) in &m.without_headers {
        if req.headers.get(name).is_some_and(|v| sm.matches(v, false)) {
            return false;
        }
    }
    if !m.query_params.is_empty() {
        let q = req.query();
        for (name, sm) in &m.query_params {
            match q.get(name.as_str()) {
                Some(v) if sm.matches(v, false) => {}
                _ => return false,
            }
        }
    }
    if m.source_namespace.is_some() && m.source_namespace != source.namespace {
        return false;
    }
    m.source_labels
        .iter()
        .all(|(k, v)| source.labels.get(k) == Some(v))
}

/// The outcome of [`route_tcp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpDecision<'a> {
    /// The host key the connection resolved to.
    pub host: &'a str,
    /// Its policy.
    pub policy: &'a HostPolicy,
    /// The deciding rule and its position in the host's TLS rules (when
    /// `tls`) or TCP rules; `None` for the default route (no rule of the host
    /// holds for this connection).
    pub rule: Option<(usize, &'a L4Rule)>,
    /// Whether a TLS (SNI) rule decided.
    pub tls: bool,
    /// The connection's destination port (for the default route).
    port: Option<u16>,
}

impl<'a> TcpDecision<'a> {
    /// The rule's name, or `default`.
    pub fn rule_name(&self) -> &str {
        self.rule.map_or("default", |(_, r)| r.name.as_str())
    }
    /// The weighted destinations (weights sum to 100).
    pub fn destinations(&self) -> Cow<'a, [WeightedDestination]> {
        match self.rule {
            Some((_, rule)) => Cow::Borrowed(rule.destinations.as_slice()),
            None => Cow::Owned(vec![default_destination(self.host, self.port)]),
        }
    }
}

/// Route a TCP connection to `host` (as the application named it): the
/// host's TLS rules in order when the connection opened with a ClientHello
/// naming a server, then its TCP rules; the first with a matching
/// alternative decides. With none matching, the connection goes to the host
/// itself, as Envoy's TCP proxy falls back to the service's own cluster (TCP
/// has no 404). `None` when the host is unknown to the IR.
pub fn route_tcp<'a>(
    ir: &'a Ir,
    host: &str,
    conn: L4Conn<'_>,
    source: &Peer,
) -> Option<TcpDecision<'a>> {
    let ns = source.namespace.as_deref();
    let host = resolve_host(&ir.hosts, host, ns, &ir.mesh.cluster_domain)?;
    let policy = &ir.hosts[host];
    let first = |rules: &'a [L4Rule]| {
        rules.iter().enumerate().find(|(_, r)| {
            r.matches.is_empty() || r.matches.iter().any(|m| l4_matches(m, &conn, source))
        })
    };
    let tls = conn.sni.and_then(|_| first(&policy.tls));
    Some(TcpDecision {
        host,
        policy,
        tls: tls.is_some(),
        rule: tls.or_else(|| first(&policy.tcp)),
        port: conn.port,
    })
}

/// Whether one TCP or TLS match alternative holds for a connection: its
/// server names admit the ClientHello's, its subnets hold the address the
/// client connected to (a match naming subnets never holds when the proxy
/// does not know that address), and its port and source hold.
pub fn l4_matches(m: &L4Match, conn: &L4Conn<'_>, source: &Peer) -> bool {
    (m.sni_hosts.is_empty()
        || conn.sni.is_some_and(|sni| {
            m.sni_hosts
                .iter()
                .any(|h| host_pattern_matches(&h.to_ascii_lowercase(), &sni.to_ascii_lowercase()))
        }))
        && (m.destination_subnets.is_empty()
            || conn
                .destination
                .is_some_and(|ip| m.destination_subnets.iter().any(|b| in_block(b, ip))))
        && (m.port.is_none() || m.port == conn.port)
        && (m.source_namespace.is_none() || m.source_namespace == source.namespace)
        && m.source_labels
            .iter()
            .all(|(k, v)| source.labels.get(k) == Some(v))
}

/// Which kind of policy decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decider {
    /// A CUSTOM policy matched: the external provider decides. The bundled
    /// proxy has no external authorizer and fails closed.
    Custom,
    /// A DENY policy matched.
    Deny,
    /// An ALLOW policy matched.
    Allow,
    /// ALLOW policies exist and none matched.
    NoAllowMatched,
    /// No ALLOW policy applies: everything not denied is allowed.
    NoAllowPolicies,
}

/// The outcome of [`authorize`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzDecision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// What decided.
    pub decider: Decider,
    /// The deciding policy (`namespace/name`) and the index of its matching rule.
    pub policy: Option<(String, usize)>,
}

/// Authorize a request to a workload: CUSTOM, then DENY, then ALLOW; with no
/// ALLOW policy, allow; with some, deny unless one matches.
pub fn authorize(w: &WorkloadPolicy, req: &Request, peer: &Peer) -> AuthzDecision {
    let hit = |policies: &[AuthzPolicy]| {
        policies.iter().find_map(|p| {
            p.rules
                .iter()
                .position(|r| rule_matches(r, req, peer))
                .map(|i| (p.name.clone(), i))
        })
    };
    decide(
        hit(&w.authz.custom),
        || hit(&w.authz.deny),
        w.authz.allow.is_empty(),
        || hit(&w.authz.allow),
    )
}

/// Decide a TCP connection to a workload's `port` from `peer`, the way
/// Istio's TCP authorization filter does: only connection attributes count
/// (principals, namespaces, IP blocks, ports, `source.*`, `destination.port`).
/// A CUSTOM or DENY rule that names HTTP attributes (methods, paths, hosts,
/// request principals, `request.*` conditions) is applied without them, so
/// it denies more; an ALLOW rule that names them allows nothing. Both fail
/// closed.
pub fn authorize_tcp(w: &WorkloadPolicy, port: Option<u16>, peer: &Peer) -> AuthzDecision {
    let req = Request {
        port,
        ..Default::default()
    };
    let hit = |policies: &[AuthzPolicy], deny: bool| {
        policies.iter().find_map(|p| {
            p.rules
                .iter()
                .position(|r| tcp_rule_matches(r, &req, peer, deny))
                .map(|i| (p.name.clone(), i))
        })
    };
    decide(
        hit(&w.authz.custom, true),
        || hit(&w.authz.deny, true),
        w.authz.allow.is_empty(),
        || hit(&w.authz.allow, false),
    )
}

fn tcp_rule_matches(r: &AuthzRule, req: &Request, peer: &Peer, deny: bool) -> bool {
    let http_source = |s: &SourceMatch| !s.request_principals.is_any();
    let http_operation =
        |o: &OperationMatch| !(o.hosts.is_any() && o.methods.is_any() && o.paths.is_any());
    let http_condition = |c: &Condition| c.key.starts_with("request.");
    if !deny
        && (r.from.iter().any(http_source)
            || r.to.iter().any(http_operation)
            || r.when.iter().any(http_condition))
    {
        return false;
    }
    let source = |s: &SourceMatch| {
        let l4 = SourceMatch {
            request_principals: Values::default(),
            ..s.clone()
        };
        source_matches(&l4, peer)
    };
    let operation = |o: &OperationMatch| {
        let port = req.port.map(|p| p.to_string());
        values_hold(&o.ports, port.as_deref(), string_match)
    };
    (r.from.is_empty() || r.from.iter().any(source))
        && (r.to.is_empty() || r.to.iter().any(operation))
        && r.when
            .iter()
            .filter(|c| !http_condition(c))
            .all(|c| condition_holds(c, req, peer))
}

/// CUSTOM, then DENY, then ALLOW (an empty ALLOW set allows everything).
fn decide(
    custom: Option<(String, usize)>,
    deny: impl FnOnce() -> Option<(String, usize)>,
    no_allow: bool,
    allow: impl FnOnce() -> Option<(String, usize)>,
) -> AuthzDecision {
    if let Some(p) = custom {
        return AuthzDecision {
            allowed: false,
            decider: Decider::Custom,
            policy: Some(p),
        };
    }
    if let Some(p) = deny() {
        return AuthzDecision {
            allowed: false,
            decider: Decider::Deny,
            policy: Some(p),
        };
    }
    if no_allow {
        return AuthzDecision {
            allowed: true,
            decider: Decider::NoAllowPolicies,
            policy: None,
        };
    }
    match allow() {
        Some(p) => AuthzDecision {
            allowed: true,
            decider: Decider::Allow,
            policy: Some(p),
        },
        None => AuthzDecision {
            allowed: false,
            decider: Decider::NoAllowMatched,
            policy: None,
        },
    }
}

/// Whether an authorization rule matches.
pub fn rule_matches(r: &AuthzRule, req: &Request, peer: &Peer) -> bool {
    (r.from.is_empty() || r.from.iter().any(|s| source_matches(s, peer)))
        && (r.to.is_empty() || r.to.iter().any(|o| operation_matches(o, req)))
        && r.when.iter().all(|c| condition_holds(c, req, peer))
}

fn source_matches(s: &SourceMatch, peer: &Peer) -> bool {
    let principal = peer.principal.as_deref();
    values_hold(&s.principals, principal, string_match)
        && values_hold(&s.namespaces, peer_namespace(peer), string_match)
        && values_hold(&s.ip_blocks, peer.ip.as_ref(), |b, ip| in_block(b, *ip))
        && values_hold(
            &s.request_principals,
            peer.request_principal.as_deref(),
            string_match,
        )
}

fn operation_matches(o: &OperationMatch, req: &Request) -> bool {
    let port = req.port.map(|p| p.to_string());
    values_hold(&o.hosts, Some(strip_port(&req.host)), |p, v| {
        string_match(&p.to_ascii_lowercase(), &v.to_ascii_lowercase())
    }) && values_hold(&o.ports, port.as_deref(), string_match)
        && values_hold(&o.methods, Some(req.method.as_str()), string_match)
        && values_hold(&o.paths, Some(req.path_only()), string_match)
}

fn condition_holds(c: &Condition, req: &Request, peer: &Peer) -> bool {
    let key = c.key.as_str();
    if key == "source.ip" || key == "remote.ip" {
        return values_hold(&c.values, peer.ip.as_ref(), |b, ip| in_block(b, *ip));
    }
    let port;
    let value: Option<&str> = if let Some(h) = key
        .strip_prefix("request.headers[")
        .and_then(|k| k.strip_suffix(']'))
    {
        req.headers.get(&h.to_ascii_lowercase()).map(String::as_str)
    } else {
        match key {
            "source.namespace" => peer_namespace(peer),
            "source.principal" => peer.principal.as_deref(),
            "request.auth.principal" => peer.request_principal.as_deref(),
            "destination.port" => {
                port = req.port.map(|p| p.to_string());
                port.as_deref()
            }
            // Unknown attributes never hold: an ALLOW rule using them allows
            // nothing (fail closed).
            _ => return false,
        }
    };
    values_hold(&c.values, value, string_match)
}

/// The namespace of the peer's authenticated principal.
fn peer_namespace(peer: &Peer) -> Option<&str> {
    parse_principal(peer.principal.as_deref()?).map(|(_, ns, _)| ns)
}

/// The parts of a principal `<trust-domain>/ns/<namespace>/sa/<account>`.
pub fn parse_principal(p: &str) -> Option<(&str, &str, &str)> {
    let (td, rest) = p.split_once("/ns/")?;
    let (ns, sa) = rest.split_once("/sa/")?;
    Some((td, ns, sa))
}

/// `values` holds for `value` (absent values match no pattern).
fn values_hold<T: ?Sized>(v: &Values, value: Option<&T>, m: impl Fn(&str, &T) -> bool) -> bool {
    let hit = |patterns: &[String]| value.is_some_and(|value| patterns.iter().any(|p| m(p, value)));
    v.values.as_deref().is_none_or(hit) && !hit(&v.not_values)
}

/// Istio's authorization string match: `*` (any non-empty), `prefix*`,
/// `*suffix`, or exact.
pub fn string_match(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return !value.is_empty();
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix);
    }
    pattern == value
}

/// Whether `ip` is in `block` (`10.0.0.0/8` or a single address).
pub fn in_block(block: &str, ip: IpAddr) -> bool {
    let (addr, len) = match block.split_once('/') {
        Some((a, l)) => match l.parse::<u32>() {
            Ok(l) => (a, Some(l)),
            Err(_) => return false,
        },
        None => (block, None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let len = len.unwrap_or(32).min(32);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let len = len.unwrap_or(128).min(128);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

impl Ir {
    /// [`route`] as a method.
    pub fn route(&self, req: &Request, source: &Peer) -> Option<RouteDecision<'_>> {
        route(self, req, source)
    }
    /// [`authorize`] for the workload `namespace/name`; `None` when unknown.
    pub fn authorize(&self, workload: &str, req: &Request, peer: &Peer) -> Option<AuthzDecision> {
        self.workloads
            .get(workload)
            .map(|w| authorize(w, req, peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_block("10.0.0.0/8", ip("10.2.3.4")));
        assert!(!in_block("10.0.0.0/8", ip("11.2.3.4")));
        assert!(in_block("1.2.3.4", ip("1.2.3.4")));
        assert!(in_block("0.0.0.0/0", ip("8.8.8.8")));
        assert!(in_block("2001:db8::/32", ip("2001:db8::1")));
        assert!(!in_block("10.0.0.0/x", ip("10.0.0.1")));
    }

    #[test]
    fn host_resolution() {
        let hosts: BTreeMap<String, ()> = [
            "reviews.default.svc.cluster.local",
            "*.example.com",
            "*.api.example.com",
        ]
        .into_iter()
        .map(|h| (h.to_string(), ()))
        .collect();
        let r = |h, ns| resolve_host(&hosts, h, ns, "cluster.local");
        assert_eq!(
            r("reviews", Some("default")),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(
            r("reviews:9080", Some("default")),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(
            r("reviews.default", None),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(
            r("reviews.default.svc", None),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(r("reviews", Some("other")), None);
        assert_eq!(r("v1.api.example.com", None), Some("*.api.example.com"));
        assert_eq!(r("www.example.com", None), Some("*.example.com"));
        assert_eq!(r("example.com", None), None);
    }

    #[test]
    fn query_and_values() {
        let req = Request {
            path: "/a?x=1&y".into(),
            ..Default::default()
        };
        assert_eq!(req.path_only(), "/a");
        assert_eq!(req.query().get("x"), Some(&"1"));
        assert_eq!(req.query().get("y"), Some(&""));
        let v = Values {
            values: None,
            not_values: vec!["admin*".into()],
        };
        assert!(values_hold(&v, Some("user"), string_match));
        assert!(!values_hold(&v, Some("admin-1"), string_match));
        assert!(values_hold(&v, None, string_match));
        let v = Values {
            values: Some(vec!["*".into()]),
            not_values: vec![],
        };
        assert!(!values_hold(&v, None, string_match));
    }
}
