//! Property tests of the one evaluator.

use std::collections::BTreeMap;

use meshc_ir::eval::{self, Decider, Peer, Request, Routed};
use meshc_ir::*;
use proptest::prelude::*;

fn mesh() -> Mesh {
    Mesh {
        trust_domain: "cluster.local".into(),
        cluster_domain: "cluster.local".into(),
        root_namespace: "istio-system".into(),
    }
}

fn dest(subset: &str, weight: u32) -> WeightedDestination {
    WeightedDestination {
        host: "reviews.default.svc.cluster.local".into(),
        subset: Some(subset.into()),
        port: None,
        weight,
        labels: Map::default(),
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
    }
}

fn rule(name: &str, matches: Vec<HttpMatch>, to: &str) -> HttpRule {
    HttpRule {
        name: name.into(),
        origin: format!("VirtualService default/r {name}"),
        matches,
        action: HttpAction::Route(vec![dest(to, 100)]),
        rewrite: None,
        request_headers: HeaderOps::default(),
        response_headers: HeaderOps::default(),
        retries: Retries::istio_default(),
        timeout_ms: None,
        fault: None,
        mirrors: vec![],
        cors: None,
    }
}

fn host(http: Vec<HttpRule>) -> HostPolicy {
    let policy = TrafficPolicy {
        load_balancer: LoadBalancer::LeastRequest,
        connection_pool: ConnectionPool::default(),
        outlier_detection: None,
        tls: TlsMode::IstioMutual,
        ports: BTreeMap::new(),
    };
    HostPolicy {
        http,
        ..HostPolicy::new("default", policy)
    }
}

/// Weights summing to 100 over 1..6 destinations.
fn weights() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..100, 1..6).prop_map(|mut w| {
        // All zero: the first takes everything.
        let sum: u32 = w.iter().sum();
        let mut acc = 0;
        for x in w.iter_mut() {
            *x = (*x * 100).checked_div(sum).unwrap_or(0);
            acc += *x;
        }
        w[0] += 100 - acc;
        w
    })
}

const PATHS: [&str; 5] = ["/", "/api", "/api/v1", "/static", "/api/v2/x"];
const METHODS: [&str; 3] = ["GET", "POST", "DELETE"];
const PRINCIPALS: [&str; 3] = [
    "cluster.local/ns/shop/sa/cart",
    "cluster.local/ns/shop/sa/web",
    "cluster.local/ns/ops/sa/admin",
];

fn uri_match() -> impl Strategy<Value = HttpMatch> {
    (0usize..PATHS.len(), any::<bool>()).prop_map(|(i, exact)| HttpMatch {
        uri: Some(if exact {
            StrMatch::Exact(PATHS[i].into())
        } else {
            StrMatch::Prefix(PATHS[i].into())
        }),
        ..HttpMatch::default()
    })
}

fn values(pool: &'static [&'static str]) -> impl Strategy<Value = Values> {
    (
        prop::option::of(prop::collection::vec(0..pool.len(), 1..3)),
        prop::collection::vec(0..pool.len(), 0..2),
    )
        .prop_map(move |(v, n)| Values {
            values: v.map(|v| v.into_iter().map(|i| pool[i].to_string()).collect()),
            not_values: n.into_iter().map(|i| pool[i].to_string()).collect(),
        })
}

fn authz_rule() -> impl Strategy<Value = AuthzRule> {
    (values(&PRINCIPALS), values(&METHODS), values(&PATHS)).prop_map(|(p, m, paths)| AuthzRule {
        from: vec![SourceMatch {
            principals: p,
            ..SourceMatch::default()
        }],
        to: vec![OperationMatch {
            methods: m,
            paths,
            ..OperationMatch::default()
        }],
        when: vec![],
    })
}

fn policies(prefix: &'static str) -> impl Strategy<Value = Vec<AuthzPolicy>> {
    prop::collection::vec(prop::collection::vec(authz_rule(), 0..3), 0..3).prop_map(move |ps| {
        ps.into_iter()
            .enumerate()
            .map(|(i, rules)| AuthzPolicy {
                name: format!("default/{prefix}-{i}"),
                provider: None,
                rules,
            })
            .collect()
    })
}

fn request_and_peer() -> impl Strategy<Value = (Request, Peer)> {
    (
        0..PATHS.len(),
        0..METHODS.len(),
        prop::option::of(0..PRINCIPALS.len()),
    )
        .prop_map(|(p, m, who)| {
            (
                Request {
                    host: "reviews".into(),
                    port: Some(9080),
                    method: METHODS[m].into(),
                    path: PATHS[p].into(),
                    scheme: "http".into(),
                    ..Request::default()
                },
                Peer {
                    namespace: Some("default".into()),
                    principal: who.map(|i| PRINCIPALS[i].to_string()),
                    ..Peer::default()
                },
            )
        })
}

fn workload(authz: Authz) -> WorkloadPolicy {
    WorkloadPolicy {
        namespace: "default".into(),
        service_account: "reviews".into(),
        identity: "spiffe://cluster.local/ns/default/sa/reviews".into(),
        labels: Map::default(),
        meshed: true,
        mtls: Mtls {
            mode: MtlsMode::Strict,
            ports: BTreeMap::new(),
            decided_by: None,
        },
        authz,
        egress: vec!["*/*".into()],
    }
}

/// Header names: the first three are read by generated policy, the rest never.
const HEADERS: [&str; 5] = ["x-user", "x-canary", "x-tenant", "x-other", "user-agent"];
const VALUES: [&str; 2] = ["a", "b"];

/// Header matches (`headers` or `withoutHeaders`) on the read names.
fn header_match() -> impl Strategy<Value = HttpMatch> {
    (0usize..3, 0..VALUES.len(), any::<bool>()).prop_map(|(h, v, without)| {
        let mut m = HttpMatch::default();
        let on = if without {
            &mut m.without_headers
        } else {
            &mut m.headers
        };
        on.insert(HEADERS[h].into(), StrMatch::Exact(VALUES[v].into()));
        m
    })
}

/// An authorization rule whose condition reads a header (named in any case).
fn header_condition_rule() -> impl Strategy<Value = AuthzRule> {
    (0usize..3, 0..VALUES.len(), any::<bool>()).prop_map(|(h, v, upper)| {
        let name = if upper {
            HEADERS[h].to_ascii_uppercase()
        } else {
            HEADERS[h].to_string()
        };
        AuthzRule {
            from: vec![],
            to: vec![],
            when: vec![Condition {
                key: format!("request.headers[{name}]"),
                values: Values {
                    values: Some(vec![VALUES[v].into()]),
                    not_values: vec![],
                },
            }],
        }
    })
}

proptest! {
    /// A request carrying only the headers `headers_read` names is routed
    /// and authorized exactly as the request with all its headers (what
    /// lets the proxy copy no others).
    #[test]
    fn only_the_headers_read_decide(
        matches in prop::collection::vec(prop::collection::vec(header_match(), 0..3), 1..5),
        deny in prop::collection::vec(header_condition_rule(), 0..3),
        allow in prop::collection::vec(header_condition_rule(), 0..3),
        sent in prop::collection::btree_map(0..HEADERS.len(), 0..VALUES.len(), 0..5),
    ) {
        let rules: Vec<_> = matches.into_iter().enumerate()
            .map(|(i, m)| rule(&format!("r{i}"), m, &format!("v{i}"))).collect();
        let mut ir = Ir::new(mesh());
        ir.hosts.insert("reviews.default.svc.cluster.local".into(), host(rules));
        let policy = |name: &str, rules| AuthzPolicy { name: name.into(), provider: None, rules };
        let w = workload(Authz {
            custom: vec![],
            deny: vec![policy("default/deny", deny)],
            allow: if allow.is_empty() { vec![] } else { vec![policy("default/allow", allow)] },
        });
        ir.workloads.insert("default/reviews".into(), w.clone());
        let read = eval::headers_read(&ir);
        prop_assert!(read.iter().all(|h| HEADERS[..3].contains(&h.as_str())), "{read:?}");
        let full = Request {
            host: "reviews".into(),
            port: Some(9080),
            method: "GET".into(),
            path: "/".into(),
            scheme: "http".into(),
            headers: sent.iter().map(|(h, v)| (HEADERS[*h].to_string(), VALUES[*v].to_string())).collect(),
            ..Request::default()
        };
        let mut kept = full.clone();
        kept.headers.retain(|h, _| read.contains(h));
        let peer = Peer { namespace: Some("default".into()), ..Peer::default() };
        let (a, b) = (eval::route(&ir, &full, &peer).unwrap(), eval::route(&ir, &kept, &peer).unwrap());
        prop_assert_eq!(a.rule_name(), b.rule_name());
        let (a, b) = (eval::authorize(&w, &full, &peer), eval::authorize(&w, &kept, &peer));
        prop_assert_eq!((a.allowed, a.decider, a.policy), (b.allowed, b.decider, b.policy));
    }

    /// Over the 100 rolls, each destination is picked exactly its weight's times.
    #[test]
    fn weights_are_honoured(w in weights()) {
        let ds: Vec<_> = w.iter().enumerate().map(|(i, &w)| dest(&format!("v{i}"), w)).collect();
        let mut counts = vec![0u32; ds.len()];
        for roll in 0..100 {
            let d = eval::pick(&ds, roll).expect("weights sum to 100");
            let i = ds.iter().position(|x| std::ptr::eq(x, d)).unwrap();
            counts[i] += 1;
        }
        prop_assert_eq!(counts, w);
        prop_assert!(eval::pick(&ds, 100).is_none());
    }

    /// The first rule with a matching alternative decides; no earlier rule matches.
    #[test]
    fn first_match_wins(
        matches in prop::collection::vec(prop::collection::vec(uri_match(), 0..3), 1..6),
        (req, peer) in request_and_peer(),
    ) {
        let rules: Vec<_> = matches.into_iter().enumerate()
            .map(|(i, m)| rule(&format!("r{i}"), m, &format!("v{i}"))).collect();
        let mut ir = Ir::new(mesh());
        ir.hosts.insert("reviews.default.svc.cluster.local".into(), host(rules.clone()));
        let d = eval::route(&ir, &req, &peer).expect("host resolves");
        let holds = |r: &HttpRule| r.matches.is_empty() || r.matches.iter().any(|m| eval::http_matches(m, &req, &peer));
        match d.routed {
            Routed::Rule { index, rule } => {
                prop_assert!(holds(rule));
                prop_assert!(rules[..index].iter().all(|r| !holds(r)));
                prop_assert_eq!(d.destinations()[0].subset.clone(), Some(format!("v{index}")));
            }
            Routed::NoMatch => prop_assert!(rules.iter().all(|r| !holds(r))),
            Routed::Default => prop_assert!(false, "a host with rules never takes the default route"),
        }
    }

    /// A matching DENY always wins over any ALLOW; with no ALLOW policy,
    /// whatever is not denied is allowed; with some, only what one matches.
    #[test]
    fn authorization_order(
        deny in policies("deny"),
        allow in policies("allow"),
        (req, peer) in request_and_peer(),
    ) {
        let w = workload(Authz { custom: vec![], deny: deny.clone(), allow: allow.clone() });
        let d = eval::authorize(&w, &req, &peer);
        let any = |ps: &[AuthzPolicy]| ps.iter().any(|p| p.rules.iter().any(|r| eval::rule_matches(r, &req, &peer)));
        if any(&deny) {
            prop_assert!(!d.allowed);
            prop_assert_eq!(d.decider, Decider::Deny);
        } else if allow.is_empty() {
            prop_assert!(d.allowed);
            prop_assert_eq!(d.decider, Decider::NoAllowPolicies);
        } else if any(&allow) {
            prop_assert!(d.allowed);
            prop_assert_eq!(d.decider, Decider::Allow);
        } else {
            prop_assert!(!d.allowed);
            prop_assert_eq!(d.decider, Decider::NoAllowMatched);
        }
        // The deciding rule really matches.
        if let Some((name, i)) = &d.policy {
            let p = deny.iter().chain(&allow).find(|p| &p.name == name).unwrap();
            prop_assert!(eval::rule_matches(&p.rules[*i], &req, &peer));
        }
    }

    /// A TCP connection is never allowed where an HTTP request on the same
    /// port from the same peer would be denied: HTTP attributes make a DENY
    /// wider and an ALLOW void (Istio's TCP filter fails closed).
    #[test]
    fn tcp_authorization_fails_closed(
        deny in policies("deny"),
        allow in policies("allow"),
        (req, peer) in request_and_peer(),
    ) {
        let w = workload(Authz { custom: vec![], deny, allow });
        let tcp = eval::authorize_tcp(&w, req.port, &peer);
        if tcp.allowed {
            prop_assert!(eval::authorize(&w, &req, &peer).allowed);
        }
    }

    /// The canonical encoding round-trips and the hash follows the content.
    #[test]
    fn encoding_round_trips(allow in policies("allow"), w in weights()) {
        let mut ir = Ir::new(mesh());
        ir.workloads.insert("default/reviews".into(), workload(Authz { allow, ..Authz::default() }));
        let mut r = rule("split", vec![], "v0");
        r.action = HttpAction::Route(w.iter().enumerate().map(|(i, &w)| dest(&format!("v{i}"), w)).collect());
        ir.hosts.insert("reviews.default.svc.cluster.local".into(), host(vec![r]));
        let back = Ir::decode(&ir.encode()).unwrap();
        prop_assert_eq!(&back, &ir);
        prop_assert_eq!(back.hash(), ir.hash());
        prop_assert!(meshc_ir::diff::diff(&ir, &back).is_empty());
    }
}

#[test]
fn empty_allow_policy_denies_everything_but_an_empty_rule_allows_everything() {
    let (req, peer) = (
        Request {
            host: "reviews".into(),
            method: "GET".into(),
            path: "/".into(),
            ..Request::default()
        },
        Peer::default(),
    );
    let nothing = AuthzPolicy {
        name: "default/none".into(),
        provider: None,
        rules: vec![],
    };
    let w = workload(Authz {
        allow: vec![nothing.clone()],
        ..Authz::default()
    });
    assert_eq!(
        eval::authorize(&w, &req, &peer).decider,
        Decider::NoAllowMatched
    );
    let all = AuthzPolicy {
        rules: vec![AuthzRule::default()],
        ..nothing
    };
    let w = workload(Authz {
        allow: vec![all],
        ..Authz::default()
    });
    let d = eval::authorize(&w, &req, &peer);
    assert!(d.allowed);
    assert_eq!(d.policy, Some(("default/none".into(), 0)));
}

#[test]
fn diff_names_weight_changes_and_reach() {
    let mut a = Ir::new(mesh());
    a.workloads
        .insert("default/productpage".into(), workload(Authz::default()));
    let mut r = rule("canary", vec![], "v1");
    r.action = HttpAction::Route(vec![dest("v1", 95), dest("v2", 5)]);
    a.hosts.insert(
        "reviews.default.svc.cluster.local".into(),
        host(vec![r.clone()]),
    );
    let mut b = a.clone();
    r.action = HttpAction::Route(vec![dest("v1", 80), dest("v2", 20)]);
    b.hosts
        .insert("reviews.default.svc.cluster.local".into(), host(vec![r]));
    let changes: Vec<String> = meshc_ir::diff::diff(&a, &b)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        changes,
        [
            "reviews.default: http rule \"canary\" to reviews.default v1 weight 95 -> 80",
            "reviews.default: http rule \"canary\" to reviews.default v2 weight 5 -> 20",
        ]
    );
    let c = &meshc_ir::diff::diff(&a, &b)[0];
    assert_eq!(c.reaches, ["default/productpage"]);
}

#[test]
fn tcp_authorization_keeps_connection_attributes_only() {
    let web = Peer {
        principal: Some(PRINCIPALS[1].into()),
        ..Peer::default()
    };
    let cart = Peer {
        principal: Some(PRINCIPALS[0].into()),
        ..Peer::default()
    };
    let policy = |name: &str, rule: AuthzRule| AuthzPolicy {
        name: format!("default/{name}"),
        provider: None,
        rules: vec![rule],
    };
    let from_web = AuthzRule {
        from: vec![SourceMatch {
            principals: Values {
                values: Some(vec![PRINCIPALS[1].into()]),
                not_values: vec![],
            },
            ..SourceMatch::default()
        }],
        ..AuthzRule::default()
    };
    let get_only = AuthzRule {
        to: vec![OperationMatch {
            methods: Values {
                values: Some(vec!["GET".into()]),
                not_values: vec![],
            },
            ..OperationMatch::default()
        }],
        ..AuthzRule::default()
    };
    // ALLOW by principal: web's connection passes, cart's does not.
    let w = workload(Authz {
        allow: vec![policy("from-web", from_web.clone())],
        ..Authz::default()
    });
    assert!(eval::authorize_tcp(&w, Some(5432), &web).allowed);
    let d = eval::authorize_tcp(&w, Some(5432), &cart);
    assert_eq!((d.allowed, d.decider), (false, Decider::NoAllowMatched));
    // ALLOW naming a method: void for TCP, so nothing is allowed.
    let w = workload(Authz {
        allow: vec![policy("get", get_only.clone())],
        ..Authz::default()
    });
    assert!(!eval::authorize_tcp(&w, Some(5432), &web).allowed);
    // DENY naming a method: applied without it, so it denies every connection.
    let w = workload(Authz {
        deny: vec![policy("no-get", get_only)],
        ..Authz::default()
    });
    let d = eval::authorize_tcp(&w, Some(5432), &web);
    assert_eq!(d.decider, Decider::Deny);
    assert_eq!(d.policy, Some(("default/no-get".into(), 0)));
    // A port condition still counts.
    let other_port = AuthzRule {
        to: vec![OperationMatch {
            ports: Values {
                values: Some(vec!["9000".into()]),
                not_values: vec![],
            },
            ..OperationMatch::default()
        }],
        ..from_web
    };
    let w = workload(Authz {
        allow: vec![policy("port", other_port)],
        ..Authz::default()
    });
    assert!(eval::authorize_tcp(&w, Some(9000), &web).allowed);
    assert!(!eval::authorize_tcp(&w, Some(5432), &web).allowed);
}

#[test]
fn tcp_routes_match_port_and_source_then_fall_back_to_the_host() {
    let l4 = |name: &str, m: Vec<L4Match>, subset: &str| L4Rule {
        name: name.into(),
        origin: format!("VirtualService default/db {name}"),
        matches: m,
        destinations: vec![dest(subset, 100)],
    };
    let mut h = host(vec![]);
    h.tcp = vec![
        l4(
            "batch",
            vec![L4Match {
                port: Some(5432),
                source_labels: [("app".to_string(), "batch".to_string())].into(),
                ..L4Match::default()
            }],
            "replica",
        ),
        l4(
            "primary",
            vec![L4Match {
                port: Some(5432),
                ..L4Match::default()
            }],
            "primary",
        ),
        l4(
            "by-address",
            vec![L4Match {
                destination_subnets: vec!["10.0.0.0/8".into()],
                ..L4Match::default()
            }],
            "local",
        ),
    ];
    let mut ir = Ir::new(mesh());
    ir.hosts
        .insert("reviews.default.svc.cluster.local".into(), h);
    let peer = |app: &str| Peer {
        namespace: Some("default".into()),
        labels: [("app".to_string(), app.to_string())].into(),
        ..Peer::default()
    };
    let subset = |d: &eval::TcpDecision| d.destinations()[0].subset.clone();
    let conn = |port: u16, sni: Option<&'static str>| eval::L4Conn {
        port: Some(port),
        sni,
        destination: None,
    };
    // Destination subnets hold on the address the client connected to, and
    // never when the proxy does not know it.
    let at = |ip: &str| eval::L4Conn {
        port: Some(7000),
        sni: None,
        destination: Some(ip.parse().unwrap()),
    };
    let d = eval::route_tcp(&ir, "reviews", at("10.1.2.3"), &peer("web")).unwrap();
    assert_eq!(
        (d.rule_name(), subset(&d)),
        ("by-address", Some("local".into()))
    );
    let d = eval::route_tcp(&ir, "reviews", at("192.168.0.1"), &peer("web")).unwrap();
    assert_eq!(d.rule_name(), "default");
    let d = eval::route_tcp(&ir, "reviews", conn(7000, None), &peer("web")).unwrap();
    assert_eq!(d.rule_name(), "default");
    let d = eval::route_tcp(&ir, "reviews", conn(5432, None), &peer("batch")).unwrap();
    assert_eq!(
        (d.rule_name(), subset(&d)),
        ("batch", Some("replica".into()))
    );
    let d = eval::route_tcp(&ir, "reviews", conn(5432, None), &peer("web")).unwrap();
    assert_eq!(
        (d.rule_name(), subset(&d)),
        ("primary", Some("primary".into()))
    );
    // No rule for the port: the host itself, on that port.
    let d = eval::route_tcp(&ir, "reviews.default", conn(6000, None), &peer("web")).unwrap();
    assert_eq!(d.rule_name(), "default");
    let to = &d.destinations()[0];
    assert_eq!((to.subset.as_deref(), to.port), (None, Some(6000)));
    assert!(eval::route_tcp(&ir, "ratings", conn(5432, None), &peer("web")).is_none());

    // TLS rules choose by the ClientHello's server name, before TCP rules.
    let h = ir
        .hosts
        .get_mut("reviews.default.svc.cluster.local")
        .unwrap();
    h.tls = vec![l4(
        "by-sni",
        vec![L4Match {
            sni_hosts: vec!["*.example.com".into()],
            ..L4Match::default()
        }],
        "edge",
    )];
    let d = eval::route_tcp(
        &ir,
        "reviews",
        conn(5432, Some("API.example.com")),
        &peer("web"),
    )
    .unwrap();
    assert_eq!(
        (d.rule_name(), d.tls, subset(&d)),
        ("by-sni", true, Some("edge".into()))
    );
    let d = eval::route_tcp(&ir, "reviews", conn(5432, Some("other.org")), &peer("web")).unwrap();
    assert_eq!((d.rule_name(), d.tls), ("primary", false));
    let d = eval::route_tcp(&ir, "reviews", conn(5432, None), &peer("web")).unwrap();
    assert_eq!((d.rule_name(), d.tls), ("primary", false));
}

#[test]
fn gateway_for_needs_a_server_on_the_port_admitting_the_host_over_the_same_transport() {
    let gateway = |servers: Vec<GatewayServer>, hosts: &[&str]| GatewayPolicy {
        selector: [("app".to_string(), "ingress".to_string())].into(),
        servers,
        hosts: hosts
            .iter()
            .map(|h| (h.to_string(), vec![rule("r", vec![], "v1")]))
            .collect(),
        l4: BTreeMap::new(),
    };
    let server = |port: u16, hosts: &[&str], tls: Option<&str>| GatewayServer {
        port,
        protocol: if tls.is_some() { "HTTPS" } else { "HTTP" }.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        tls: tls.map(str::to_string),
        termination: tls.map(|_| Termination::default()),
        https_redirect: false,
    };
    let mut ir = Ir::new(mesh());
    // `a/tls` is first by name and admits the host on 443 only through TLS.
    ir.gateways.insert(
        "a/tls".into(),
        gateway(
            vec![server(443, &["*"], Some("SIMPLE"))],
            &["shop.example.com"],
        ),
    );
    ir.gateways.insert(
        "b/public".into(),
        gateway(
            vec![
                server(80, &["*.example.com"], None),
                server(
                    443,
                    &["shop.example.com", "api.example.com"],
                    Some("MUTUAL"),
                ),
            ],
            &["shop.example.com", "api.example.com"],
        ),
    );
    // A server on the port admitting the host, but no routes for it.
    ir.gateways.insert(
        "c/empty".into(),
        gateway(vec![server(81, &["*"], None)], &["other.example.com"]),
    );
    let me = Peer::default();
    let on = |host: &str, port: u16, tls: bool| {
        eval::gateway_for(&ir, host, port, tls, &me).map(|(g, s)| (g, s.port, s.tls.clone()))
    };
    let plain = |host: &str, port: u16| on(host, port, false).map(|(g, ..)| g);
    assert_eq!(plain("shop.example.com", 80), Some("b/public"));
    assert_eq!(plain("SHOP.example.com:80", 80), Some("b/public"));
    assert_eq!(plain("api.example.com", 80), Some("b/public"));
    // The wildcard admits it, but no route is bound for it.
    assert_eq!(plain("www.example.com", 80), None);
    // `*.example.com` does not admit the bare domain.
    assert_eq!(plain("example.com", 80), None);
    // Plaintext is not served by a TLS server; no server at all on 8080.
    assert_eq!(plain("shop.example.com", 443), None);
    assert_eq!(plain("shop.example.com", 8080), None);
    assert_eq!(plain("shop.example.com", 81), None);
    assert_eq!(plain("other.example.com", 81), Some("c/empty"));
    // Over TLS: the terminating servers, first gateway by name; a
    // plaintext server does not take a request that came over TLS.
    assert_eq!(
        on("shop.example.com", 443, true),
        Some(("a/tls", 443, Some("SIMPLE".into())))
    );
    assert_eq!(
        on("api.example.com", 443, true),
        Some(("b/public", 443, Some("MUTUAL".into())))
    );
    assert_eq!(on("shop.example.com", 80, true), None);
    // Which server takes the handshake: by the ClientHello's name; without
    // one, only a server for any host.
    let hello = |sni| eval::terminating_server(&ir, 443, sni).map(|(g, _)| g);
    assert_eq!(hello(Some("shop.example.com")), Some("a/tls"));
    assert_eq!(hello(Some("API.example.com")), Some("a/tls"));
    assert_eq!(hello(None), Some("a/tls"));
    assert_eq!(
        eval::terminating_server(&ir, 80, Some("shop.example.com")),
        None
    );
    ir.gateways.remove("a/tls");
    let hello = |sni| eval::terminating_server(&ir, 443, sni).map(|(g, _)| g);
    assert_eq!(hello(Some("api.example.com")), Some("b/public"));
    assert_eq!(hello(Some("www.example.com")), None);
    assert_eq!(hello(None), None);
    // And the route it leads to is the gateway's.
    let req = Request {
        host: "shop.example.com".into(),
        port: Some(80),
        method: "GET".into(),
        path: "/".into(),
        scheme: "http".into(),
        headers: BTreeMap::new(),
        gateway: Some("b/public".into()),
    };
    let d = eval::route(&ir, &req, &me).unwrap();
    assert_eq!(d.host, "shop.example.com");
    assert!(matches!(d.routed, Routed::Rule { .. }));
}

#[test]
fn gateway_l4_routes_tcp_by_port_and_passthrough_by_server_name() {
    let l4 = |name: &str, port: u16, sni: &[&str], subset: &str| L4Rule {
        name: name.into(),
        origin: format!("VirtualService shop/{name}"),
        matches: vec![L4Match {
            port: Some(port),
            sni_hosts: sni.iter().map(|h| h.to_string()).collect(),
            ..L4Match::default()
        }],
        destinations: vec![dest(subset, 100)],
    };
    let server = |port: u16, protocol: &str, hosts: &[&str], tls: Option<&str>| GatewayServer {
        port,
        protocol: protocol.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        tls: tls.map(str::to_string),
        termination: tls
            .filter(|t| *t != "PASSTHROUGH")
            .map(|_| Termination::default()),
        https_redirect: false,
    };
    let mut ir = Ir::new(mesh());
    ir.gateways.insert(
        "shop/public".into(),
        GatewayPolicy {
            selector: [("app".to_string(), "ingress".to_string())].into(),
            servers: vec![
                server(80, "HTTP", &["*"], None),
                server(9000, "TCP", &["*"], None),
                server(9443, "TLS", &["*.example.com"], Some("PASSTHROUGH")),
                server(443, "HTTPS", &["*"], Some("SIMPLE")),
                // One port, two ways: passed through by name, or terminated.
                server(8443, "TLS", &["db.example.com"], Some("PASSTHROUGH")),
                server(8443, "HTTPS", &["www.example.com"], Some("SIMPLE")),
            ],
            hosts: BTreeMap::new(),
            l4: [
                ("*".to_string(), vec![l4("db-tcp", 9000, &[], "v1")]),
                (
                    "db.example.com".to_string(),
                    vec![l4("db-tls", 9443, &["db.example.com"], "v2")],
                ),
            ]
            .into(),
        },
    );
    assert_eq!(eval::gateway_port(&ir, 80), eval::GatewayPort::Http);
    assert_eq!(
        eval::gateway_port(&ir, 9000),
        eval::GatewayPort::L4 {
            passthrough: false,
            terminate: false
        }
    );
    assert_eq!(
        eval::gateway_port(&ir, 9443),
        eval::GatewayPort::L4 {
            passthrough: true,
            terminate: false
        }
    );
    assert_eq!(eval::gateway_port(&ir, 443), eval::GatewayPort::Https);
    assert_eq!(
        eval::gateway_port(&ir, 8443),
        eval::GatewayPort::L4 {
            passthrough: true,
            terminate: true
        }
    );
    assert_eq!(eval::gateway_port(&ir, 8080), eval::GatewayPort::None);
    let me = Peer::default();
    let route = |port, sni| {
        let conn = eval::L4Conn {
            sni,
            ..Default::default()
        };
        eval::route_gateway_tcp(&ir, port, conn, &me).map(|r| r.name.as_str())
    };
    // TCP: by port; a ClientHello changes nothing, TLS rules do not apply.
    assert_eq!(route(9000, None), Some("db-tcp"));
    assert_eq!(route(9000, Some("db.example.com")), Some("db-tcp"));
    // PASSTHROUGH: the server name must be admitted by the server and
    // matched by a TLS rule; TCP rules do not apply.
    assert_eq!(route(9443, Some("DB.example.com")), Some("db-tls"));
    assert_eq!(route(9443, Some("www.example.com")), None);
    assert_eq!(route(9443, Some("db.elsewhere.org")), None);
    assert_eq!(route(9443, None), None);
    // Ports without an L4 server.
    assert_eq!(route(80, None), None);
    assert_eq!(route(443, Some("db.example.com")), None);
    // The HTTP gateway lookup ignores the L4 servers.
    assert_eq!(
        eval::gateway_for(&ir, "db.example.com", 9000, false, &me),
        None
    );
}

#[test]
fn a_terminating_tls_server_routes_its_decrypted_stream_by_tcp_routes() {
    let tcp = |name: &str, port: u16, subset: &str| L4Rule {
        name: name.into(),
        origin: format!("VirtualService shop/{name}"),
        matches: vec![L4Match {
            port: Some(port),
            ..L4Match::default()
        }],
        destinations: vec![dest(subset, 100)],
    };
    let tls_rule = L4Rule {
        name: "db-tls".into(),
        origin: "VirtualService shop/db-tls".into(),
        matches: vec![L4Match {
            port: Some(9444),
            sni_hosts: vec!["db.example.com".into()],
            ..L4Match::default()
        }],
        destinations: vec![dest("v2", 100)],
    };
    let server = |port: u16, protocol: &str, tls: &str| GatewayServer {
        port,
        protocol: protocol.into(),
        hosts: vec!["db.example.com".into()],
        tls: Some(tls.into()),
        termination: Some(Termination::default()),
        https_redirect: false,
    };
    let mut ir = Ir::new(mesh());
    ir.gateways.insert(
        "shop/public".into(),
        GatewayPolicy {
            selector: [("app".to_string(), "ingress".to_string())].into(),
            servers: vec![
                server(9444, "TLS", "SIMPLE"),
                server(9445, "TLS", "MUTUAL"),
                server(443, "HTTPS", "SIMPLE"),
            ],
            hosts: BTreeMap::new(),
            l4: [(
                "db.example.com".to_string(),
                vec![
                    tls_rule,
                    tcp("db-mutual", 9445, "v1"),
                    tcp("db", 9444, "v1"),
                ],
            )]
            .into(),
        },
    );
    let s = |port| {
        ir.gateways["shop/public"]
            .servers
            .iter()
            .find(|s| s.port == port)
            .unwrap()
    };
    // A TLS server that terminates carries TCP; an HTTPS one, HTTP.
    assert!(eval::terminates_tcp(s(9444)) && !eval::terminates(s(9444)));
    assert!(eval::terminates(s(443)) && !eval::terminates_tcp(s(443)));
    // Without credentials there is nothing to terminate with.
    let mut bare = s(9444).clone();
    bare.termination = None;
    assert!(!eval::terminates_tcp(&bare));
    assert_eq!(eval::gateway_port(&ir, 9444), eval::GatewayPort::Https);
    let hello = |port, sni| eval::terminating_server(&ir, port, sni).map(|(g, s)| (g, s.port));
    assert_eq!(
        hello(9444, Some("DB.example.com")),
        Some(("shop/public", 9444))
    );
    assert_eq!(hello(9444, Some("www.example.com")), None);
    // Inside: TCP rules by port, never the TLS rule that names the host.
    let me = Peer::default();
    let inside = |gateway, port| {
        let conn = eval::L4Conn {
            sni: Some("db.example.com"),
            ..Default::default()
        };
        eval::route_terminated_tcp(&ir, gateway, port, conn, &me).map(|r| r.name.as_str())
    };
    assert_eq!(inside("shop/public", 9444), Some("db"));
    assert_eq!(inside("shop/public", 9445), Some("db-mutual"));
    assert_eq!(inside("shop/public", 9000), None);
    assert_eq!(inside("shop/elsewhere", 9444), None);
    // Not an opaque-TCP server: the passthrough lookup does not take it.
    let conn = eval::L4Conn {
        sni: Some("db.example.com"),
        ..Default::default()
    };
    assert_eq!(eval::route_gateway_tcp(&ir, 9444, conn, &me), None);
    // Nor does an HTTP request over TLS on its port.
    assert_eq!(
        eval::gateway_for(&ir, "db.example.com", 9444, true, &me),
        None
    );
}
