//! Edge cases of the rules added for the istioctl analyze checks IST0002,
//! IST0116, IST0137, IST0138, IST0140, IST0149, IST0166 and IST0167: where
//! each must stay quiet, and where meshc goes beyond the upstream check.

use meshc_compiler::{Input, Options, analyze};

/// The findings of `code` for a one-file repository: (resource, YAML path).
fn findings(code: &str, yaml: &str) -> Vec<(String, String)> {
    let a = analyze(
        vec![Input::new("t.yaml", yaml.to_string())],
        &Options::default(),
    );
    a.diagnostics
        .iter()
        .filter(|d| d.code() == code)
        .map(|d| {
            (
                d.resource.clone().unwrap_or_default(),
                d.primary
                    .path
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

const DNS: &str = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: dns, namespace: net}
spec:
  selector: {matchLabels: {app: dns}}
  template: {metadata: {labels: {app: dns}}, spec: {}}
---
apiVersion: v1
kind: Service
metadata: {name: dns-udp, namespace: net}
spec: {selector: {app: dns}, ports: [{name: dns, port: 53, protocol: UDP}]}
---
apiVersion: v1
kind: Service
metadata: {name: dns-tcp, namespace: net}
spec: {selector: {app: dns}, ports: [{name: dns-tcp, port: 53, protocol: TCP}]}
";

#[test]
fn port_53_over_udp_and_tcp_is_no_conflict() {
    assert_eq!(findings("MC0113", DNS), vec![]);
}

#[test]
fn protocol_conflicts_are_found_without_namespace_declarations_but_not_outside_the_mesh() {
    let two = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  template: {metadata: {labels: {app: api}ANNOTATIONS}, spec: {}}
---
apiVersion: v1
kind: Service
metadata: {name: api-http, namespace: shop}
spec: {selector: {app: api}, ports: [{name: http, port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: api-grpc, namespace: shop}
spec: {selector: {app: api}, ports: [{name: grpc, port: 8080}]}
";
    let undeclared = two.replace("ANNOTATIONS", "");
    assert_eq!(
        findings("MC0113", &undeclared),
        vec![(
            "Deployment shop/api".to_string(),
            "metadata.name".to_string()
        )]
    );
    let opted_out = two.replace(
        "ANNOTATIONS",
        ", annotations: {sidecar.istio.io/inject: \"false\"}",
    );
    assert_eq!(findings("MC0113", &opted_out), vec![]);
    let uninjected =
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\n{undeclared}");
    assert_eq!(findings("MC0113", &uninjected), vec![]);
}

#[test]
fn a_named_target_port_is_compared_by_name() {
    let yaml = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  template: {metadata: {labels: {app: api}}, spec: {}}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: shop}
spec: {selector: {app: api}, ports: [{name: http, port: 80, targetPort: web}]}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: shop}
spec: {selector: {app: api}, ports: [{name: http, port: 8080, targetPort: web}, {name: http-admin, port: 9090}]}
";
    assert_eq!(findings("MC0114", yaml).len(), 1);
}

fn gateway(name: &str, selector: &str, tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: istio-system}}\nspec:\n  selector: {selector}\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    tls: {tls}\n    hosts: [\"{name}.example.com\"]\n---\n"
    )
}

#[test]
fn a_shared_certificate_is_reported_on_the_gateway_whose_selector_is_contained() {
    let cert = "{mode: SIMPLE, credentialName: wildcard}";
    let yaml = gateway("broad", "{istio: ingressgateway}", cert)
        + &gateway("narrow", "{istio: ingressgateway, type: internal}", cert)
        + &gateway("other", "{istio: egressgateway}", cert);
    assert_eq!(
        findings("MC0210", &yaml),
        vec![(
            "Gateway istio-system/broad".to_string(),
            "spec.servers[0].tls.credentialName".to_string()
        )]
    );
    let files = "{mode: SIMPLE, serverCertificate: /etc/c.pem, privateKey: /etc/k.pem}";
    let yaml = gateway("a", "{istio: ingressgateway}", files)
        + &gateway("b", "{istio: ingressgateway}", files)
        + &gateway("c", "{istio: ingressgateway}", "{mode: PASSTHROUGH}")
        + &gateway("d", "{istio: ingressgateway}", "{mode: PASSTHROUGH}");
    assert_eq!(
        findings("MC0210", &yaml).len(),
        2,
        "a and b, not the passthrough servers"
    );
}

#[test]
fn a_terminating_server_needs_a_certificate_and_mutual_tls_a_client_ca() {
    let quiet = [
        "{mode: SIMPLE, credentialName: shop-cert}",
        "{mode: SIMPLE, credentialNames: [rsa-cert, ecdsa-cert]}",
        "{mode: SIMPLE, tlsCertificates: [{serverCertificate: /c.pem, privateKey: /k.pem}]}",
        // The Secret may hold the CA as well (ca.crt), or name it apart.
        "{mode: MUTUAL, credentialName: partner-cert}",
        "{mode: OPTIONAL_MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}",
        "{mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertCredentialName: partner-ca}",
        // The mesh's own certificate, or nothing to terminate.
        "{mode: ISTIO_MUTUAL}",
        "{mode: PASSTHROUGH}",
    ];
    for tls in quiet {
        let yaml = gateway("g", "{istio: ingressgateway}", tls);
        assert_eq!(findings("MC0304", &yaml), vec![], "{tls}");
    }
    let loud = [
        "{mode: SIMPLE}",
        "{mode: SIMPLE, serverCertificate: /c.pem}",
        "{mode: SIMPLE, credentialName: \"\"}",
        "{mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}",
        "{mode: OPTIONAL_MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem}",
    ];
    for tls in loud {
        let yaml = gateway("g", "{istio: ingressgateway}", tls);
        assert_eq!(
            findings("MC0304", &yaml),
            vec![(
                "Gateway istio-system/g".to_string(),
                "spec.servers[0].tls.mode".to_string()
            )],
            "{tls}"
        );
    }
    // HTTPS without tls at all; plaintext HTTP with only a redirect is fine.
    let server = |protocol: &str, tls: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: g, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: web, protocol: {protocol}}}\n    hosts: [\"*\"]\n{tls}"
        )
    };
    assert_eq!(
        findings("MC0304", &server("HTTPS", "")),
        vec![(
            "Gateway istio-system/g".to_string(),
            "spec.servers[0].port.protocol".to_string()
        )]
    );
    let redirect = server("HTTP", "    tls: {httpsRedirect: true}\n");
    assert_eq!(findings("MC0304", &redirect), vec![]);
    assert_eq!(findings("MC0304", &server("HTTP", "")), vec![]);
}

const CLAIM_ROUTE: &str = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [\"*\"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: edge}
spec:
  hosts: [shop.example.com]
  gateways: [public]
  http:
  - match: [{withoutHeaders: {\"@request.auth.claims.group\": {exact: beta}}}]
    route: [{destination: {host: shop.example.com}}]
";

#[test]
fn a_claim_route_needs_a_request_authentication_for_the_gateway() {
    let missing = findings("MC0406", CLAIM_ROUTE);
    assert_eq!(
        missing,
        vec![(
            "VirtualService edge/shop".to_string(),
            "spec.http[0].match[0].withoutHeaders[\"@request.auth.claims.group\"]".to_string()
        )]
    );
    let ra = |ns: &str, labels: &str| {
        format!(
            "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {labels}}}\n  jwtRules: [{{issuer: https://auth.example.com}}]\n"
        )
    };
    // No gateway pod in the repository: the RequestAuthentication's selector
    // must ask for no label the Gateway's does not.
    let root = CLAIM_ROUTE.to_string() + &ra("istio-system", "{istio: ingressgateway}");
    assert_eq!(findings("MC0406", &root), vec![]);
    let narrower =
        CLAIM_ROUTE.to_string() + &ra("istio-system", "{istio: ingressgateway, zone: a}");
    assert_eq!(findings("MC0406", &narrower).len(), 1);
    let elsewhere = CLAIM_ROUTE.to_string() + &ra("shop", "{istio: ingressgateway}");
    assert_eq!(findings("MC0406", &elsewhere).len(), 1);
    // With the gateway's pod declared, the pod's namespace counts.
    let pod = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: gw-1, namespace: ingress, labels: {istio: ingressgateway}}\nspec: {containers: [{name: istio-proxy}]}\n";
    let in_pod_ns = CLAIM_ROUTE.to_string() + pod + &ra("ingress", "{istio: ingressgateway}");
    assert_eq!(findings("MC0406", &in_pod_ns), vec![]);
    let in_gateway_ns = CLAIM_ROUTE.to_string() + pod + &ra("edge", "{istio: ingressgateway}");
    assert_eq!(findings("MC0406", &in_gateway_ns).len(), 1);
}

#[test]
fn sidecars_in_ambient() {
    let ns = |labels: &str| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: app, labels: {labels}}}\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: app}}\nspec: {{egress: [{{hosts: [\"./*\"]}}]}}\n"
        )
    };
    assert_eq!(
        findings("MC0115", &ns("{istio.io/dataplane-mode: ambient}")).len(),
        1
    );
    assert_eq!(
        findings(
            "MC0115",
            &ns("{istio.io/dataplane-mode: ambient, istio-injection: enabled}")
        ),
        vec![],
        "injection wins over ambient"
    );
    assert_eq!(
        findings(
            "MC0115",
            &ns("{istio.io/dataplane-mode: ambient, istio.io/rev: canary}")
        ),
        vec![]
    );
    // A workload-scoped Sidecar whose every pod is ambient, in a sidecar namespace.
    let pods = |second: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p1, namespace: app, labels: {{app: a, istio.io/dataplane-mode: ambient}}}}\nspec: {{}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p2, namespace: app, labels: {{app: a{second}}}}}\nspec: {{}}\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: a, namespace: app}}\nspec: {{workloadSelector: {{labels: {{app: a}}}}, egress: [{{hosts: [\"./*\"]}}]}}\n"
        )
    };
    assert_eq!(
        findings("MC0115", &pods(", istio.io/dataplane-mode: ambient")),
        vec![(
            "Sidecar app/a".to_string(),
            "spec.workloadSelector.labels".to_string()
        )]
    );
    assert_eq!(findings("MC0115", &pods("")), vec![], "p2 has a sidecar");
}

#[test]
fn gateway_routes_and_mesh_subsets() {
    let yaml = |gateway_subset: &str, mesh_gateways: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: mesh, namespace: shop}}\nspec:\n  hosts: [reviews]\n  gateways: {mesh_gateways}\n  http: [{{route: [{{destination: {{host: reviews, subset: v1}}}}]}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: edge, namespace: shop}}\nspec:\n  hosts: [shop.example.com]\n  gateways: [public]\n  http: [{{route: [{{destination: {{host: reviews.shop.svc.cluster.local{gateway_subset}}}}}]}}]\n"
        )
    };
    assert_eq!(
        findings("MC0211", &yaml("", "[mesh]")).len(),
        1,
        "FQDN and short name are one host"
    );
    assert_eq!(findings("MC0211", &yaml(", subset: v1", "[mesh]")), vec![]);
    assert_eq!(
        findings("MC0211", &yaml("", "[other-gateway]")),
        vec![],
        "the subset split is not a mesh one"
    );
}

#[test]
fn policies_attached_by_target_ref_are_not_selector_mistakes() {
    let yaml = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: edge, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: web}]
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec:
  selector: {matchLabels: {gateway.networking.k8s.io/gateway-name: web}}
  jwtRules: [{issuer: https://auth.example.com}]
";
    assert_eq!(
        findings("MC0116", yaml),
        vec![(
            "RequestAuthentication shop/jwt".to_string(),
            "spec.selector.matchLabels".to_string()
        )]
    );
    // Telemetry and WasmPlugin too, through a pod of the Gateway.
    let yaml = "
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: web, app: web}}
spec: {containers: [{name: istio-proxy}]}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: logs, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  accessLogging: [{providers: [{name: envoy}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: attached, namespace: shop}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: web}]
  accessLogging: [{providers: [{name: envoy}]}]
---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: auth, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  url: oci://example.com/auth:1
";
    assert_eq!(
        findings("MC0116", yaml),
        vec![
            (
                "Telemetry shop/logs".to_string(),
                "spec.selector.matchLabels".to_string()
            ),
            (
                "WasmPlugin shop/auth".to_string(),
                "spec.selector.matchLabels".to_string()
            ),
        ]
    );
}

#[test]
fn deprecated_fields_in_every_traffic_policy() {
    let yaml = "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r, namespace: shop}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      portLevelSettings:
      - port: {number: 9080}
        loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 30s}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: egress.example.com}}
";
    assert_eq!(
        findings("MC0013", yaml),
        vec![
            (
                "DestinationRule shop/r".to_string(),
                "spec.subsets[0].trafficPolicy.portLevelSettings[0].loadBalancer.warmupDurationSecs"
                    .to_string()
            ),
            (
                "Sidecar shop/default".to_string(),
                "spec.outboundTrafficPolicy.egressProxy".to_string()
            ),
        ]
    );
}

#[test]
fn subsets_of_a_service_entry_are_checked_against_its_endpoints() {
    let yaml = |subset_labels: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: rpc, namespace: shop}}
spec:
  hosts: [rpc.example.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{name: grpc, number: 8765, protocol: GRPC}}]
  endpoints:
  - {{address: 10.0.0.1, labels: {{cluster: east}}}}
  - {{address: 10.0.0.2, labels: {{cluster: west}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: rpc, namespace: shop}}
spec:
  host: rpc.example.internal
  subsets: [{{name: s, labels: {subset_labels}}}]
"
        )
    };
    // No workload is declared: inline endpoints are enough.
    assert_eq!(findings("MC0109", &yaml("{cluster: west}")), vec![]);
    assert_eq!(
        findings("MC0109", &yaml("{cluster: north}")),
        vec![(
            "DestinationRule shop/rpc".to_string(),
            "spec.subsets[0].labels".to_string()
        )]
    );
}

fn envoy_filter(name: &str, priority: &str, patches: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n{priority}  configPatches:\n{patches}---\n"
    )
}

fn patch(apply_to: &str, op: &str, name: &str, version: bool) -> String {
    let proxy = if version {
        "      proxy: {proxyVersion: '^1\\.2.*'}\n"
    } else {
        ""
    };
    format!(
        "  - applyTo: {apply_to}\n    match:\n      context: SIDECAR_INBOUND\n{proxy}    patch:\n      operation: {op}\n      value: {{name: {name}}}\n"
    )
}

#[test]
fn envoy_filter_patches() {
    // REPLACE of a virtual host is supported; of a cluster it is skipped.
    let replace = envoy_filter(
        "a",
        "  priority: 1\n",
        &(patch("VIRTUAL_HOST", "REPLACE", "vh", false) + &patch("CLUSTER", "REPLACE", "c", false)),
    );
    assert_eq!(
        findings("MC0213", &replace),
        vec![(
            "EnvoyFilter shop/a".to_string(),
            "spec.configPatches[1].patch.operation".to_string()
        )]
    );
    assert_eq!(findings("MC0212", &replace), vec![], "a priority orders it");
    // Without a priority: one finding for the plain relative patches, one
    // for those whose filter is also patched per proxy version.
    let relative = envoy_filter(
        "b",
        "",
        &(patch("HTTP_FILTER", "INSERT_AFTER", "lua", true)
            + &patch("HTTP_FILTER", "INSERT_BEFORE", "lua", false)
            + &patch("NETWORK_FILTER", "REMOVE", "tcp", false)
            + &patch("HTTP_FILTER", "INSERT_FIRST", "first", false)),
    );
    let found = findings("MC0212", &relative);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].1, "spec.configPatches[0].patch.operation");
    assert_eq!(found[1].1, "spec.configPatches[1].patch.operation");
    let a = analyze(vec![Input::new("t.yaml", relative)], &Options::default());
    let codes: Vec<Vec<&str>> = a
        .diagnostics
        .iter()
        .filter(|d| d.code() == "MC0212")
        .map(|d| d.upstream_codes())
        .collect();
    assert_eq!(codes, vec![vec!["IST0151"], vec!["IST0155"]]);
}

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: infra, }
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, hostname: shop.example.com, port: 80, protocol: HTTP, ALLOWED}
  - {name: admin, hostname: admin.example.com, port: 8080, protocol: HTTP}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {edge: allowed}}
---
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: shop}
spec: {selector: {app: shop}, ports: [{name: http, port: 8080}]}
---
";

fn route(parent: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: shop}}\nspec:\n  parentRefs: [{parent}]\n  rules: [{{backendRefs: [{{name: shop, port: 8080}}]}}]\n"
    )
}

#[test]
fn route_parents_and_allowed_routes() {
    let repo = |allowed: &str, parent: &str| GATEWAY.replace("ALLOWED", allowed) + &route(parent);
    let parent = "{name: web, namespace: infra}";
    assert_eq!(
        findings("MC0117", &repo("", parent)).len(),
        1,
        "Same by default"
    );
    let all = "allowedRoutes: {namespaces: {from: All}}";
    assert_eq!(findings("MC0117", &repo(all, parent)), vec![]);
    let selector =
        "allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {edge: allowed}}}}";
    assert_eq!(findings("MC0117", &repo(selector, parent)), vec![]);
    let other =
        "allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {edge: other}}}}";
    assert_eq!(findings("MC0117", &repo(other, parent)).len(), 1);
    // The listener named by sectionName decides, and must exist.
    let admin_only = "{name: web, namespace: infra, sectionName: admin}";
    assert_eq!(
        findings("MC0117", &repo(all, admin_only)).len(),
        1,
        "admin is Same"
    );
    let http_only = "{name: web, namespace: infra, sectionName: http}";
    assert_eq!(findings("MC0117", &repo(all, http_only)), vec![]);
    let missing = "{name: web, namespace: infra, sectionName: https}";
    assert_eq!(findings("MC0117", &repo(all, missing)).len(), 1);
    assert_eq!(
        findings("MC0117", &repo(all, "{name: nope, namespace: infra}")).len(),
        1
    );
    // A mesh route's parent is a Service.
    assert_eq!(
        findings(
            "MC0117",
            &repo(all, "{group: \"\", kind: Service, name: shop}")
        ),
        vec![]
    );
    assert_eq!(
        findings(
            "MC0117",
            &repo(all, "{group: \"\", kind: Service, name: shopp}")
        )
        .len(),
        1
    );
}

#[test]
fn cross_namespace_backends_need_a_grant() {
    let edge_route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: edge}
spec:
  parentRefs: [{name: web, namespace: infra}]
  rules: [{backendRefs: [{name: shop, namespace: shop, port: 8080}, {name: gone, weight: 0}]}]
---
";
    let repo = GATEWAY.replace("ALLOWED", "allowedRoutes: {namespaces: {from: All}}") + edge_route;
    assert_eq!(findings("MC0119", &repo).len(), 1);
    assert_eq!(
        findings("MC0118", &repo),
        vec![],
        "a backend of weight 0 is not checked"
    );
    let grant = |kind: &str, name: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: g, namespace: shop}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: {kind}, namespace: edge}}]\n  to: [{{group: \"\", kind: Service{name}}}]\n"
        )
    };
    assert_eq!(
        findings("MC0119", &(repo.clone() + &grant("HTTPRoute", ""))),
        vec![]
    );
    assert_eq!(
        findings(
            "MC0119",
            &(repo.clone() + &grant("HTTPRoute", ", name: shop"))
        ),
        vec![]
    );
    assert_eq!(
        findings(
            "MC0119",
            &(repo.clone() + &grant("HTTPRoute", ", name: other"))
        )
        .len(),
        1
    );
    assert_eq!(
        findings("MC0119", &(repo + &grant("GRPCRoute", ""))).len(),
        1,
        "wrong kind"
    );
}

#[test]
fn listeners_conflict_within_and_across_gateways() {
    let gw = |name: &str, listeners: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: infra}}\nspec:\n  gatewayClassName: istio\n  listeners: {listeners}\n---\n"
        )
    };
    let one = gw(
        "a",
        "[{name: x, hostname: h.example.com, port: 80, protocol: HTTP}, {name: y, hostname: h.example.com, port: 80, protocol: HTTP}, {name: z, hostname: h.example.com, port: 80, protocol: HTTPS}]",
    );
    let a = analyze(vec![Input::new("t.yaml", one)], &Options::default());
    let codes: Vec<Vec<&str>> = a
        .diagnostics
        .iter()
        .filter(|d| d.code() == "MC0214")
        .map(|d| d.upstream_codes())
        .collect();
    assert_eq!(
        codes,
        vec![vec!["KIA1503"], vec!["KIA1503"]],
        "x and y, not z"
    );
    let two = gw("a", "[{name: x, port: 80, protocol: HTTP}]")
        + &gw("b", "[{name: x, port: 80, protocol: HTTP}]");
    assert_eq!(
        findings("MC0214", &two).len(),
        2,
        "both Gateways claim every host on 80"
    );
    let apart = gw("a", "[{name: x, port: 80, protocol: HTTP}]")
        + &gw("b", "[{name: x, port: 8080, protocol: HTTP}]");
    assert_eq!(findings("MC0214", &apart), vec![]);
}

/// The Gateway API's mesh (GAMMA) conformance routes are valid configuration:
/// each, beside the suite's manifests, lints without an error.
#[test]
fn gateway_api_mesh_conformance_routes_are_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/gateway-api/mesh");
    let manifests = std::fs::read_to_string(dir.join("manifests.yaml")).unwrap();
    let mut tests: Vec<_> = std::fs::read_dir(dir.join("tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    tests.sort();
    assert!(tests.len() >= 20, "{} route files", tests.len());
    for t in tests {
        let text = std::fs::read_to_string(&t).unwrap();
        let a = analyze(
            vec![
                Input::new("manifests.yaml", manifests.clone()),
                Input::new(t.display().to_string(), text),
            ],
            &Options::default(),
        );
        let errors: Vec<String> = a
            .diagnostics
            .iter()
            .filter(|d| d.severity == meshc_compiler::diagnostic::Severity::Error)
            .map(|d| format!("{} {}", d.code(), d.message))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", t.display());
        assert!(
            a.resources
                .iter()
                .any(|r| matches!(r.kind.as_str(), "HTTPRoute" | "GRPCRoute"))
        );
    }
}

/// A VirtualService may bind to a Gateway API Gateway by name; its hosts are
/// checked against the listeners' hostnames.
#[test]
fn virtual_services_bind_to_gateway_api_gateways() {
    let repo = |host: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: infra}}
spec:
  gatewayClassName: istio
  listeners: [{{name: http, hostname: \"*.example.com\", port: 80, protocol: HTTP}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: v, namespace: infra}}
spec:
  hosts: [{host}]
  gateways: [infra/web]
  http: [{{route: [{{destination: {{host: {host}}}}}]}}]
"
        )
    };
    assert_eq!(findings("MC0103", &repo("shop.example.com")), vec![]);
    assert_eq!(findings("MC0106", &repo("shop.example.com")), vec![]);
    assert_eq!(findings("MC0106", &repo("shop.example.org")).len(), 1);
}

#[test]
fn duplicate_destination_rules_matter_only_where_the_host_is_imported() {
    let repo = |egress: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: shop}}
spec: {{egress: [{{hosts: [{egress}]}}]}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: a, namespace: shop}}
spec: {{host: api.billing.svc.cluster.local, exportTo: [\".\"], trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: b, namespace: shop}}
spec: {{host: api.billing.svc.cluster.local, exportTo: [\".\"], trafficPolicy: {{loadBalancer: {{simple: LEAST_REQUEST}}}}}}
"
        )
    };
    assert_eq!(
        findings("MC0205", &repo("\"./*\", \"istio-system/*\"")),
        vec![]
    );
    assert_eq!(findings("MC0205", &repo("\"./*\", \"billing/*\"")).len(), 2);
    assert_eq!(
        findings("MC0205", &repo("\"*/api.billing.svc.cluster.local\"")).len(),
        2
    );
    assert_eq!(
        findings(
            "MC0205",
            &repo("\"billing/other.billing.svc.cluster.local\"")
        ),
        vec![]
    );
}
