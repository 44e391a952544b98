//! Incremental compilation gives what a full compile gives: random edits
//! (values changed, documents dropped, files added, moved, removed and put
//! back) to real repositories, each compiled by one long-lived `Session` and
//! from scratch, comparing diagnostics (with their spans), resources and IR.

use std::collections::BTreeMap;
use std::path::Path;

use meshc_compiler::incremental::{Lowered, RegistryUse, Session};
use meshc_compiler::{Compiled, Input, Options, compile, synth};

/// The same edits every run: a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Value edits that keep a document well-formed; many keep it error-free,
/// so scoped lowering runs often.
const REPLACEMENTS: &[(&str, &str)] = &[
    ("mode: STRICT", "mode: PERMISSIVE"),
    ("mode: PERMISSIVE", "mode: STRICT"),
    ("mode: STRICT", "mode: DISABLE"),
    ("mode: ISTIO_MUTUAL", "mode: DISABLE"),
    ("subset: v1", "subset: v2"),
    ("subset: v2", "subset: v1"),
    ("subset: v2", "subset: v9"),
    ("timeout: 2s", "timeout: 4s"),
    ("version: v2", "version: v1"),
    ("prefix: /internal/", "prefix: /private/"),
    ("exact: platform", "exact: ops"),
    ("action: ALLOW", "action: DENY"),
    ("attempts: 3", "attempts: 1"),
    ("istio-injection: enabled", "istio-injection: disabled"),
    ("maxConnections: ", "maxConnections: 1"),
    ("namespace: ns-001", "namespace: ns-000"),
    ("weight: ", "weight: 1"),
    // Subsets renamed: the routes to them dangle, or stop dangling.
    ("  - name: v2\n", "  - name: v7\n"),
    ("  - name: v7\n", "  - name: v2\n"),
    ("mode: DISABLE", "mode: ISTIO_MUTUAL"),
    // Retries on and off along a call chain (the `retries` repository).
    ("attempts: 2", "attempts: 0"),
    ("attempts: 0", "attempts: 2"),
    // What the registry does not copy of Services, workloads and
    // ServiceEntries (the `ports` repository): target ports, Service and
    // workload metadata labels, replicas, endpoint labels.
    ("targetPort: 9080", "targetPort: 9081"),
    ("targetPort: 9081", "targetPort: 9080"),
    ("targetPort: 8080", "targetPort: 8081"),
    ("targetPort: 8081", "targetPort: 8080"),
    ("release: canary", "release: istio"),
    ("release: istio", "release: canary"),
    ("managed: none", "managed: istio.io-mesh-controller"),
    ("managed: istio.io-mesh-controller", "managed: none"),
    ("replicas: 1", "replicas: 2"),
    ("track: v1", "track: v2"),
    ("track: v2", "track: v1"),
    // And what it does copy.
    ("appProtocol: http", "appProtocol: tcp"),
    ("appProtocol: tcp", "appProtocol: http"),
    ("selector: {app: api}", "selector: {app: web}"),
    ("selector: {app: web}", "selector: {app: api}"),
    ("hosts: [ledger.example.com]", "hosts: [books.example.com]"),
    ("exportTo: [\"*\"]", "exportTo: [\".\"]"),
    ("exportTo: \"*\"", "exportTo: \".\""),
    ("serviceAccountName: web", "serviceAccountName: front"),
    ("serviceAccountName: front", "serviceAccountName: web"),
    // The principal a policy names: the account it waits for moves.
    ("sa/front]", "sa/back]"),
    ("sa/back]", "sa/front]"),
    // Patched in place: ports, a port's name (its protocol), a ServiceEntry
    // port's protocol, a DestinationRule's host, a workload's pod labels.
    ("port: 9090", "port: 9091"),
    ("port: 9091", "port: 9090"),
    ("port: 80\n", "port: 81\n"),
    ("port: 81\n", "port: 80\n"),
    ("- name: http\n", "- name: grpc\n"),
    ("- name: grpc\n", "- name: http\n"),
    ("protocol: HTTPS}", "protocol: TLS}"),
    ("protocol: TLS}", "protocol: HTTPS}"),
    (
        "host: legacy.shop.svc.cluster.local",
        "host: api.shop.svc.cluster.local",
    ),
    (
        "host: api.shop.svc.cluster.local",
        "host: legacy.shop.svc.cluster.local",
    ),
    ("labels: {istio: ingress}}", "labels: {istio: egress}}"),
    ("labels: {istio: egress}}", "labels: {istio: ingress}}"),
    // A port a route names (bookinfo); a pod and a selector of the call
    // chain (`retries`), which take a hop out of it.
    ("    port: 9080\n", "    port: 9081\n"),
    ("    port: 9081\n", "    port: 9080\n"),
    ("labels: {app: b}", "labels: {app: z}"),
    ("labels: {app: z}", "labels: {app: b}"),
    ("selector: {app: c}", "selector: {app: z}"),
    ("selector: {app: z}", "selector: {app: c}"),
    // Pod labels (the `labels` repository) that no selector picks but rules
    // read (ambient mode, a Kubernetes Gateway's name) or that nothing reads
    // (`tier`), and one that a policy selects.
    ("dataplane-mode: ambient,", "dataplane-mode: none,"),
    ("dataplane-mode: none,", "dataplane-mode: ambient,"),
    (
        "gateway.networking.k8s.io/gateway-name: web}",
        "gateway.example.com/name: web}",
    ),
    (
        "gateway.example.com/name: web}",
        "gateway.networking.k8s.io/gateway-name: web}",
    ),
    ("tier: front}", "tier: back}"),
    ("tier: back}", "tier: front}"),
    ("labels: {app: gw,", "labels: {app: gx,"),
    ("labels: {app: gx,", "labels: {app: gw,"),
    // Gateways and Sidecars (the `gateways` repository, bookinfo's and
    // store's): the registry keeps them by index and reads their specs
    // again, so these keep it, and the rules that read them say so. A
    // certificate two Gateways share, a server host two serve, a server
    // port no Service exposes, a selector (and the JWT rules its pods
    // have), a host the bound VirtualService has or not.
    (
        "{credentialName: partner-cert,",
        "{credentialName: shop-cert,",
    ),
    (
        "{credentialName: shop-cert,",
        "{credentialName: partner-cert,",
    ),
    (
        "[front/partner.example.com]\n    tls: {cred",
        "[front/secure.example.com]\n    tls: {cred",
    ),
    (
        "[front/secure.example.com]\n    tls: {cred",
        "[front/partner.example.com]\n    tls: {cred",
    ),
    (
        "number: 443, name: https-partner",
        "number: 8443, name: https-partner",
    ),
    (
        "number: 8443, name: https-partner",
        "number: 443, name: https-partner",
    ),
    ("selector: {istio: ingress}", "selector: {istio: edge}"),
    ("selector: {istio: edge}", "selector: {istio: ingress}"),
    ("front/shop.example.com]", "front/books.example.com]"),
    ("front/books.example.com]", "front/shop.example.com]"),
    (
        "- bookinfo/bookinfo.example.com",
        "- bookinfo/books.example.com",
    ),
    (
        "- bookinfo/books.example.com",
        "- bookinfo/bookinfo.example.com",
    ),
    // A namespace's Sidecar importing the host two namespaces configure (or
    // not); a workload Sidecar's selector (an ambient pod's, or not).
    ("hosts: [./*, istio-system/*]", "hosts: [./*, front/*]"),
    ("hosts: [./*, front/*]", "hosts: [./*, istio-system/*]"),
    (
        "workloadSelector: {labels: {app: web}}",
        "workloadSelector: {labels: {app: api}}",
    ),
    (
        "workloadSelector: {labels: {app: api}}",
        "workloadSelector: {labels: {app: web}}",
    ),
    // A Gateway API Gateway: a listener's name (a route's section), its
    // hostname (which the registry copies), its port (another listener's).
    ("sectionName: http}", "sectionName: https}"),
    ("sectionName: https}", "sectionName: http}"),
    ("{name: http, port: 80,", "{name: https, port: 80,"),
    ("{name: https, port: 80,", "{name: http, port: 80,"),
    ("hostname: web.example.com}", "hostname: www.example.com}"),
    ("hostname: www.example.com}", "hostname: web.example.com}"),
    ("{name: other, port: 8080,", "{name: other, port: 80,"),
    ("{name: other, port: 80,", "{name: other, port: 8080,"),
    // ServiceEntry hosts (patched into the registry): one renamed, one
    // added (a host of another namespace's Service, which the namespace's
    // `./*` egress then imports), and back.
    ("hosts: [api.example.com]", "hosts: [api2.example.com]"),
    ("hosts: [api2.example.com]", "hosts: [api.example.com]"),
    ("hosts: [ext-grpc.example.com]", "hosts: [ext.example.com]"),
    (
        "hosts: [ext.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 9000, name: grpc",
        "hosts: [ext-grpc.example.com]\n  location: MESH_EXTERNAL\n  resolution: DNS\n  ports: [{number: 9000, name: grpc",
    ),
    (
        "hosts: [mirror.example.com]",
        "hosts: [mirror.example.com, web.front.svc.cluster.local]",
    ),
    (
        "hosts: [mirror.example.com, web.front.svc.cluster.local]",
        "hosts: [mirror.example.com]",
    ),
    (
        "hosts: [ledger.example.com]",
        "hosts: [ledger.example.com, books.example.com]",
    ),
    (
        "hosts: [ledger.example.com, books.example.com]",
        "hosts: [ledger.example.com]",
    ),
    // The Sidecar edge of the `retries` call chain, there or not.
    ("[./b.n.svc.cluster.local]", "[./z.n.svc.cluster.local]"),
    ("[./z.n.svc.cluster.local]", "[./b.n.svc.cluster.local]"),
];

/// The `gateways` repository: two Istio Gateways on the same pods, a
/// VirtualService bound to both that routes on a JWT claim (the pods have a
/// RequestAuthentication), a Gateway API Gateway with a route, and a
/// DestinationRule, a VirtualService (and one for a wildcard covering it)
/// and two ServiceEntries (HTTP and HTTPS) for hosts configured twice,
/// which apply together only where a namespace's Sidecar imports the host.
const GATEWAYS_INGRESS: &str = "apiVersion: v1
kind: Namespace
metadata: {name: front}
---
apiVersion: v1
kind: Namespace
metadata: {name: back}
---
apiVersion: v1
kind: Service
metadata: {name: ingress, namespace: istio-system}
spec:
  selector:
    istio: ingress
  ports: [{name: http, port: 80}, {name: https, port: 443}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingress}}
  template:
    metadata: {labels: {istio: ingress}}
    spec: {containers: [{name: istio-proxy, image: istio/proxyv2}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingress}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [front/shop.example.com]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [front/secure.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: partner, namespace: istio-system}
spec:
  selector: {istio: ingress}
  servers:
  - port: {number: 443, name: https-partner, protocol: HTTPS}
    hosts: [front/partner.example.com]
    tls: {credentialName: partner-cert, mode: SIMPLE}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingress}}
  jwtRules: [{issuer: \"https://issuer.example.com\", jwksUri: \"https://issuer.example.com/jwks\"}]
";

const GATEWAYS_FRONT: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: front}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: front}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: front}
spec:
  hosts: [shop.example.com, partner.example.com]
  gateways: [istio-system/public, istio-system/partner]
  http:
  - name: admins
    match: [{headers: {\"@request.auth.claims.group\": {exact: admins}}}]
    route: [{destination: {host: web}}]
  - name: all
    route: [{destination: {host: web}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: front}
spec:
  host: web.front.svc.cluster.local
  exportTo: [\"*\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: front}
spec:
  hosts: [web.front.svc.cluster.local]
  exportTo: [\"*\"]
  http: [{route: [{destination: {host: web.front.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api-http, namespace: front}
spec:
  hosts: [api.example.com]
  exportTo: [back]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 8443, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api-https, namespace: front}
spec:
  hosts: [api.example.com]
  exportTo: [back]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 8443, name: https, protocol: HTTPS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext-http, namespace: front}
spec:
  hosts: [ext.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 9000, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext-grpc, namespace: front}
spec:
  hosts: [ext-grpc.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 9000, name: grpc, protocol: GRPC}]
";

const GATEWAYS_BACK: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: back}
spec:
  egress:
  - hosts: [./*, istio-system/*]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web-copy, namespace: back}
spec:
  host: web.front.svc.cluster.local
  exportTo: [\".\"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-copy, namespace: back}
spec:
  hosts: [web.front.svc.cluster.local]
  exportTo: [\".\"]
  http: [{route: [{destination: {host: web.front.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wild, namespace: back}
spec:
  hosts: [\"*.front.svc.cluster.local\"]
  exportTo: [\".\"]
  http: [{route: [{destination: {host: api.example.com}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: mirror, namespace: back}
spec:
  hosts: [mirror.example.com]
  exportTo: [\".\"]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 80, name: http, protocol: HTTP}]
";

const GATEWAYS_API: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: front}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: web.example.com}
  - {name: other, port: 8080, protocol: HTTP, hostname: web.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: front}
spec:
  parentRefs: [{name: web, sectionName: http}]
  hostnames: [web.example.com]
  rules: [{backendRefs: [{name: web, port: 80}]}]
";

/// The `labels` repository: a Sidecar whose only workload runs in ambient
/// mode, and a policy selecting a Kubernetes Gateway's pod.
const LABELS_EDGE: &str = "apiVersion: v1
kind: Namespace
metadata: {name: edge}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: web, namespace: edge}
spec:
  workloadSelector: {labels: {app: web}}
  egress:
  - hosts: [\"./*\"]
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: edge
  labels: {app: web, istio.io/dataplane-mode: ambient, tier: front}
spec:
  containers: [{name: c, image: i}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: guard, namespace: edge}
spec:
  selector:
    matchLabels: {app: gw}
  action: DENY
  rules:
  - to:
    - operation: {paths: [\"/admin/*\"]}
---
apiVersion: v1
kind: Pod
metadata:
  name: gw-istio
  namespace: edge
  labels: {app: gw, gateway.networking.k8s.io/gateway-name: web}
spec:
  containers: [{name: istio-proxy, image: istio/proxyv2}]
";

/// The `mtls` repository: server modes (PeerAuthentication) and client
/// modes (DestinationRule TLS) that agree or conflict as edits flip them,
/// with a policy on peer identities that needs mTLS; the clients' rule for
/// `web` is written in another namespace than `web`.
const MTLS_MESH: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls:
    mode: STRICT
";

const MTLS_APP: &str = "apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{name: http, port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {serviceAccountName: web, containers: [{name: c, image: i}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/front]}}]
";

const MTLS_CLIENTS: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: ops}
spec:
  host: web.shop.svc.cluster.local
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shop-wide, namespace: shop}
spec:
  host: '*.shop.svc.cluster.local'
  trafficPolicy:
    tls:
      mode: DISABLE
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: shop, namespace: shop}
spec:
  mtls:
    mode: STRICT
";

/// The `ports` repository: a workload behind two Services that forward
/// different ports to one container port, a Service with an unnamed port,
/// an ingress Gateway listening on a Service's target port, a ServiceEntry
/// whose endpoints' labels a DestinationRule's subsets select, and a
/// workload's PERMISSIVE override of its namespace's STRICT policy.
const PORTS_SHOP: &str = "apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: shop
  labels: {gateway.istio.io/managed: none}
spec:
  replicas: 1
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {serviceAccountName: api, containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports:
  - name: http
    port: 9080
    targetPort: 9080
---
apiVersion: v1
kind: Service
metadata: {name: api-alt, namespace: shop}
spec:
  selector: {app: api}
  ports:
  - name: http
    appProtocol: http
    port: 9090
    targetPort: 9080
---
apiVersion: v1
kind: Service
metadata:
  name: legacy
  namespace: shop
  labels: {release: canary}
  annotations: {networking.istio.io/exportTo: \"*\"}
spec:
  selector: {app: api}
  ports:
  - port: 7000
";

const PORTS_EDGE: &str = "apiVersion: v1
kind: Namespace
metadata: {name: edge, labels: {istio-injection: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ingress, namespace: edge}
spec:
  replicas: 1
  selector: {matchLabels: {istio: ingress}}
  template:
    metadata: {labels: {istio: ingress}}
    spec: {containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Service
metadata: {name: ingress, namespace: edge}
spec:
  selector: {istio: ingress}
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: edge}
spec:
  selector: {istio: ingress}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [\"*/api.example.com\"]
";

const PORTS_EXTERNAL: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ledger, namespace: shop}
spec:
  hosts: [ledger.example.com]
  exportTo: [\"*\"]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: STATIC
  endpoints:
  - address: 10.0.0.1
    labels: {track: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ledger, namespace: edge}
spec:
  host: ledger.example.com
  subsets:
  - name: one
    labels: {track: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: legacy, namespace: edge}
spec:
  host: legacy.shop.svc.cluster.local
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 10}}}
";

/// The `ports` repository's mTLS: a namespace-wide policy and a workload's
/// PERMISSIVE override of it.
const PORTS_MTLS: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec:
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  mtls:
    mode: PERMISSIVE
";

/// A service of the `retries` repository: a Service, its Pod, and a
/// VirtualService retrying twice.
fn retrying_service(name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: n}}
spec: {{selector: {{app: {name}}}, ports: [{{name: http, port: 80}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: n, labels: {{app: {name}}}}}
spec: {{serviceAccountName: {name}, containers: [{{name: c, image: i}}]}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: n}}
spec:
  hosts: [{name}]
  http:
  - route: [{{destination: {{host: {name}}}}}]
    timeout: 2s
    retries: {{attempts: 2}}
"
    )
}

/// `a` calls `b`: its Sidecar imports `b`'s host (a call edge of MC0501's
/// graph, as an ALLOW policy's principal is).
const SIDECAR_A_TO_B: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: a, namespace: n}
spec: {workloadSelector: {labels: {app: a}}, egress: [{hosts: [./b.n.svc.cluster.local]}]}
";

/// `callee` accepts calls from `caller` only.
fn allow(callee: &str, caller: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {callee}-from-{caller}, namespace: n}}
spec: {{selector: {{matchLabels: {{app: {callee}}}}}, rules: [{{from: [{{source: {{principals: [cluster.local/ns/n/sa/{caller}]}}}}]}}]}}
"
    )
}

const CROSS_SERVICES: &str = "apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: front, namespace: shop}
spec: {selector: {app: front}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {selector: {app: cart}, ports: [{name: http, port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: front, namespace: shop}
spec: {selector: {matchLabels: {app: front}}, template: {metadata: {labels: {app: front}}, spec: {containers: [{name: a, image: a}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart-v1, namespace: shop}
spec: {selector: {matchLabels: {app: cart, version: v1}}, template: {metadata: {labels: {app: cart, version: v1}}, spec: {containers: [{name: a, image: a}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart-v2, namespace: shop}
spec: {selector: {matchLabels: {app: cart, version: v2}}, template: {metadata: {labels: {app: cart, version: v2}}, spec: {containers: [{name: a, image: a}]}}}
";

const CROSS_ROUTING: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front, namespace: shop}
spec:
  hosts: [front]
  http:
  - name: to-cart
    match: [{uri: {prefix: /cart}}]
    delegate: {name: cart-routes}
  - route: [{destination: {host: front}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart-routes, namespace: shop}
spec:
  http:
  - name: canary
    route:
    - destination: {host: cart, subset: v1}
      weight: 90
    - destination: {host: cart, subset: v2}
      weight: 10
    timeout: 2s
";

const CROSS_SUBSETS: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: shop}
spec:
  host: cart
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
";

fn repositories() -> Vec<(&'static str, BTreeMap<String, String>)> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies-examples");
    let mut out = Vec::new();
    for name in ["bookinfo", "store"] {
        let mut files = BTreeMap::new();
        for e in std::fs::read_dir(examples.join(name)).expect("example repository") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "yaml") {
                let text = std::fs::read_to_string(&p).expect("readable example");
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                files.insert(name, text);
            }
        }
        out.push((name, files));
    }
    out.push(("synth-150", synth::repository(150).into_iter().collect()));
    // Rules of one host routing to another host's subsets: a DestinationRule
    // edit must reach the hosts routing to it, and a delegate edit its parent.
    let mut cross = BTreeMap::new();
    cross.insert("services.yaml".to_string(), CROSS_SERVICES.to_string());
    cross.insert("routing.yaml".to_string(), CROSS_ROUTING.to_string());
    cross.insert("subsets.yaml".to_string(), CROSS_SUBSETS.to_string());
    out.push(("cross", cross));
    // A call chain a → b → c → d whose retries multiply past the bound
    // only while enough of its hops retry (a → b through a Sidecar, the
    // others through ALLOW policies).
    let mut retries = BTreeMap::new();
    for name in ["a", "b", "c", "d"] {
        retries.insert(format!("{name}.yaml"), retrying_service(name));
    }
    retries.insert(
        "policies.yaml".to_string(),
        [SIDECAR_A_TO_B, &allow("c", "b"), &allow("d", "c")].join("---\n"),
    );
    out.push(("retries", retries));
    let mut mtls = BTreeMap::new();
    mtls.insert("mesh.yaml".to_string(), MTLS_MESH.to_string());
    mtls.insert("app.yaml".to_string(), MTLS_APP.to_string());
    mtls.insert("clients.yaml".to_string(), MTLS_CLIENTS.to_string());
    out.push(("mtls", mtls));
    let mut ports = BTreeMap::new();
    ports.insert("shop.yaml".to_string(), PORTS_SHOP.to_string());
    ports.insert("edge.yaml".to_string(), PORTS_EDGE.to_string());
    ports.insert("external.yaml".to_string(), PORTS_EXTERNAL.to_string());
    ports.insert("mtls.yaml".to_string(), PORTS_MTLS.to_string());
    out.push(("ports", ports));
    let mut labels = BTreeMap::new();
    labels.insert("edge.yaml".to_string(), LABELS_EDGE.to_string());
    out.push(("labels", labels));
    let mut gateways = BTreeMap::new();
    for (file, text) in [
        ("ingress.yaml", GATEWAYS_INGRESS),
        ("front.yaml", GATEWAYS_FRONT),
        ("back.yaml", GATEWAYS_BACK),
        ("api.yaml", GATEWAYS_API),
    ] {
        gateways.insert(file.to_string(), text.to_string());
    }
    out.push(("gateways", gateways));
    out
}

fn inputs(files: &BTreeMap<String, String>, order: &mut Rng) -> Vec<Input> {
    identified(files, order, None)
}

/// [`inputs`]; given the session they are for, files it has at their id
/// are passed without their bytes ([`Input::known`]), as the reconciler
/// does.
fn identified(
    files: &BTreeMap<String, String>,
    order: &mut Rng,
    session: Option<&Session>,
) -> Vec<Input> {
    // Half the compiles identify the files' bytes, as a Git blob id would
    // (FNV-1a of the text), so the session compares ids, not bytes.
    let ids = order.below(2) == 0;
    let mut v: Vec<Input> = files
        .iter()
        .map(|(p, t)| {
            if !ids {
                return Input::new(p, t);
            }
            let id = t
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                })
                .to_le_bytes();
            if session.is_some_and(|s| s.has(p, &id)) {
                Input::known(p, id)
            } else {
                Input::new(p, t).with_id(id)
            }
        })
        .collect();
    // The session sorts; hand it the files in any order.
    for i in (1..v.len()).rev() {
        v.swap(i, order.below(i + 1));
    }
    v
}

/// Everything observable about a compile, spans included.
fn observe(c: &Compiled) -> (Vec<String>, Vec<String>, Option<BTreeMap<String, String>>) {
    let a = &c.analysis;
    let diagnostics = a
        .diagnostics
        .iter()
        .map(|d| {
            format!(
                "{} {}:{:?} {:?} {:?} {} | {:?} | {:?} | {:?}",
                d.code(),
                a.sources.get(d.primary.span.file).path,
                d.primary.span,
                d.primary.path,
                d.severity,
                d.message,
                d.related
                    .iter()
                    .map(|l| (l.span, &l.path, &l.message))
                    .collect::<Vec<_>>(),
                d.help,
                d.resource,
            )
        })
        .collect();
    let resources = a
        .resources
        .iter()
        .map(|r| {
            format!(
                "{:?} {} {}/{} {:?}",
                r.file, r.doc, r.namespace, r.name, r.span
            )
        })
        .collect();
    let ir = c.ir.as_ref().ok().map(|ir| {
        let json: serde_json::Value =
            serde_json::from_slice(&ir.encode()).expect("IR encodes as JSON");
        let mut parts = BTreeMap::new();
        for (section, v) in json.as_object().expect("IR is an object") {
            match v.as_object() {
                Some(items) => {
                    for (k, item) in items {
                        parts.insert(format!("{section}/{k}"), item.to_string());
                    }
                }
                None => {
                    parts.insert(section.clone(), v.to_string());
                }
            }
        }
        parts
    });
    (diagnostics, resources, ir)
}

fn edit(
    files: &mut BTreeMap<String, String>,
    original: &BTreeMap<String, String>,
    rng: &mut Rng,
) -> String {
    let paths: Vec<String> = files.keys().cloned().collect();
    if paths.is_empty() {
        let (p, t) = original.iter().nth(rng.below(original.len())).unwrap();
        files.insert(p.clone(), t.clone());
        return format!("restore {p}");
    }
    let path = paths[rng.below(paths.len())].clone();
    match rng.below(12) {
        0 => {
            files.remove(&path);
            format!("remove {path}")
        }
        1 | 6 | 7 => {
            // Undo: put back a file as it was (removed or edited), or remove
            // one that was added, so the repository is often clean again.
            let differing: Vec<String> = original
                .keys()
                .chain(files.keys())
                .filter(|p| original.get(*p) != files.get(*p))
                .cloned()
                .collect();
            if differing.is_empty() {
                return "nothing".into();
            }
            let p = &differing[rng.below(differing.len())];
            match original.get(p) {
                Some(t) => files.insert(p.clone(), t.clone()),
                None => files.remove(p),
            };
            format!("restore {p}")
        }
        2 => {
            let text = files.remove(&path).unwrap();
            let to = format!("moved/{}", path.replace('/', "-"));
            files.insert(to.clone(), text);
            format!("move {path} to {to}")
        }
        3 => {
            let docs: Vec<&str> = files[&path].split("\n---\n").collect();
            if docs.len() < 2 {
                return "nothing".into();
            }
            if rng.below(2) == 0 {
                // Two documents swap places: nothing changed but order.
                let mut docs = docs;
                let at = rng.below(docs.len() - 1);
                docs.swap(at, at + 1);
                files.insert(path.clone(), docs.join("\n---\n"));
                return format!("swap documents {at} and {} of {path}", at + 1);
            }
            let drop = rng.below(docs.len());
            let text = docs
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, d)| *d)
                .collect::<Vec<_>>()
                .join("\n---\n");
            files.insert(path.clone(), text);
            format!("drop document {drop} of {path}")
        }
        4 => {
            // A new service: a copy under new names.
            let text = &files[&path];
            let Some(at) = text.find("svc-") else {
                return "nothing".into();
            };
            let old = text[at..at + 9].to_string();
            let new = format!("svc-9{:04}", rng.below(10_000));
            let to = path.replace(&old, &new);
            if to == path {
                return "nothing".into();
            }
            files.insert(to.clone(), text.replace(&old, &new));
            format!("add {to} as a copy of {path}")
        }
        5 => "recompile unchanged".into(),
        _ => {
            let text = &files[&path];
            let candidates: Vec<&(&str, &str)> = REPLACEMENTS
                .iter()
                .filter(|(a, _)| text.contains(a))
                .collect();
            if candidates.is_empty() {
                return "nothing".into();
            }
            let (a, b) = candidates[rng.below(candidates.len())];
            let hits: Vec<usize> = text.match_indices(a).map(|(i, _)| i).collect();
            let at = hits[rng.below(hits.len())];
            let text = format!("{}{b}{}", &text[..at], &text[at + a.len()..]);
            files.insert(path.clone(), text);
            format!("{path}: `{a}` -> `{b}`")
        }
    }
}

#[test]
fn random_edits_compile_as_from_scratch() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut scoped = 0;
    let mut steps = 0;
    // Compiles that carried some rules' findings over, and that ran some
    // rules for the changed resources only.
    let (mut carried, mut focused) = (0, 0);
    // Compiles that patched the registry in place, and that moved it to
    // new positions.
    let (mut patched, mut shifted) = (0, 0);
    // Files passed without their bytes, the session having them.
    let mut known = 0;
    for (name, original) in repositories() {
        let mut session = Session::new(Options::default());
        let mut files = original.clone();
        let mut history = Vec::new();
        let steps_here = if name.starts_with("synth") { 40 } else { 150 };
        for step in 0..steps_here {
            let broken = session.last().is_some_and(|c| c.ir.is_err());
            if broken && rng.below(3) == 0 {
                files = original.clone();
                history.push("reset every file".into());
            } else if step > 0 {
                history.push(edit(&mut files, &original, &mut rng));
            }
            let given = identified(&files, &mut rng, Some(&session));
            known += given.iter().filter(|i| i.content.is_err()).count();
            let incremental = observe(session.compile(given));
            let mut sorted: Vec<Input> = files.iter().map(|(p, t)| Input::new(p, t)).collect();
            sorted.sort_by(|a, b| a.path.cmp(&b.path));
            let full = observe(&compile(sorted, &Options::default()));
            let context = || format!("{name}, after:\n  {}", history.join("\n  "));
            assert_eq!(incremental.0, full.0, "diagnostics differ in {}", context());
            assert_eq!(incremental.1, full.1, "resources differ in {}", context());
            match (&incremental.2, &full.2) {
                (Some(a), Some(b)) => {
                    let differ: Vec<&String> = a
                        .keys()
                        .chain(b.keys())
                        .filter(|k| a.get(*k) != b.get(*k))
                        .collect();
                    assert!(
                        differ.is_empty(),
                        "IR differs at {differ:?} in {}",
                        context()
                    );
                }
                (a, b) => assert_eq!(
                    a.is_some(),
                    b.is_some(),
                    "IR presence differs in {}",
                    context()
                ),
            }
            if matches!(session.stats().lowered, Lowered::Scoped { .. }) {
                scoped += 1;
            }
            let runs = session.stats().rules;
            carried += usize::from(runs.carried > 0);
            focused += usize::from(runs.focused > 0);
            patched += usize::from(session.stats().registry == RegistryUse::Patched);
            shifted += usize::from(session.stats().registry == RegistryUse::Shifted);
            steps += 1;
        }
    }
    // The test is only worth something if most compiles were scoped.
    assert!(
        scoped * 3 >= steps,
        "only {scoped} of {steps} compiles were scoped"
    );
    assert!(
        carried * 3 >= steps && focused * 4 >= steps,
        "of {steps} compiles, {carried} carried findings over and {focused} ran rules for the changed resources"
    );
    assert!(
        patched * 20 >= steps,
        "only {patched} of {steps} compiles patched the registry"
    );
    assert!(
        shifted * 20 >= steps,
        "only {shifted} of {steps} compiles moved the registry"
    );
    assert!(
        known >= steps,
        "only {known} files were passed without bytes"
    );
}

/// A file passed without its bytes is reused only by a session that has it
/// at that id; anywhere else it is unreadable, never empty.
#[test]
fn a_file_without_its_bytes_needs_a_session_that_has_its_id() {
    let files: BTreeMap<String, String> = synth::repository(3).into_iter().collect();
    let given = |known: &str| -> Vec<Input> {
        files
            .iter()
            .map(|(p, t)| {
                if p == known {
                    Input::known(p, b"v1".to_vec())
                } else {
                    Input::new(p, t).with_id(t.len().to_le_bytes())
                }
            })
            .collect()
    };
    let (path, text) = files.iter().nth(1).unwrap();
    let mut session = Session::new(Options::default());
    assert!(!session.has(path, b"v1"));
    let all: Vec<Input> = files
        .iter()
        .map(|(p, t)| {
            let id = if p == path {
                b"v1".to_vec()
            } else {
                t.len().to_le_bytes().to_vec()
            };
            Input::new(p, t).with_id(id)
        })
        .collect();
    let clean = observe(session.compile(all));
    assert!(session.has(path, b"v1"));
    assert!(!session.has(path, b"v2"));
    assert!(!session.has("elsewhere.yaml", b"v1"));
    assert_eq!(observe(session.compile(given(path))), clean);
    assert_eq!(session.stats().loaded, 0);
    // Another id: the session cannot take the file without its bytes.
    let mut other = given(path);
    for i in &mut other {
        if &i.path == path {
            *i = Input::known(path, b"v2".to_vec());
        }
    }
    let c = session.compile(other);
    assert!(c.ir.is_err());
    let unreadable = c
        .analysis
        .diagnostics
        .iter()
        .find(|d| d.code() == "MC0004")
        .expect("the file is reported unreadable");
    assert_eq!(
        c.analysis.sources.get(unreadable.primary.span.file).path,
        *path
    );
    assert!(!session.has(path, b"v2"));
    // With its bytes again, all is as before.
    let mut back = given(path);
    for i in &mut back {
        if &i.path == path {
            *i = Input::new(path, text).with_id(b"v2".to_vec());
        }
    }
    assert_eq!(observe(session.compile(back)), clean);
    // A plain compile reports it unreadable too.
    let plain = compile(given(path), &Options::default());
    assert!(
        plain
            .analysis
            .diagnostics
            .iter()
            .any(|d| d.code() == "MC0004")
    );
}

#[test]
fn an_unchanged_repository_loads_nothing_and_lowers_nothing() {
    let files: BTreeMap<String, String> = synth::repository(120).into_iter().collect();
    let mut session = Session::new(Options::default());
    let mut order = Rng(7);
    let first = session
        .compile(inputs(&files, &mut order))
        .ir
        .clone()
        .expect("clean");
    assert_eq!(session.stats().loaded, files.len());
    assert_eq!(session.stats().lowered, Lowered::Full);
    let again = session
        .compile(inputs(&files, &mut order))
        .ir
        .clone()
        .expect("clean");
    assert_eq!(session.stats().loaded, 0);
    assert_eq!(
        session.stats().lowered,
        Lowered::Scoped {
            hosts: 0,
            workloads: 0,
            gateways: 0
        }
    );
    assert_eq!(first.hash(), again.hash());

    // One VirtualService's timeout: one file loaded, one host lowered again.
    let mut edited = files.clone();
    let path = "ns-000/svc-00042.yaml".to_string();
    let text = edited[&path].replacen("timeout: 2s", "timeout: 3s", 1);
    edited.insert(path, text);
    session.compile(inputs(&edited, &mut order));
    assert_eq!(session.stats().loaded, 1);
    assert_eq!(
        session.stats().lowered,
        Lowered::Scoped {
            hosts: 1,
            workloads: 0,
            gateways: 0
        }
    );
}

#[test]
fn several_files_changed_in_place_keep_every_span_right() {
    // Same paths, a few files changed, documents dropped and added: the
    // session splices the new resources in; offsets must stay right.
    let files: BTreeMap<String, String> = synth::repository(120).into_iter().collect();
    let mut session = Session::new(Options::default());
    let mut order = Rng(11);
    session.compile(inputs(&files, &mut order));
    let mut edited = files.clone();
    let drop_first = |t: &str| {
        t.split_once("\n---\n")
            .map(|(_, rest)| rest.to_string())
            .unwrap()
    };
    let a = "ns-000/svc-00003.yaml".to_string();
    let b = "ns-000/svc-00007.yaml".to_string();
    let c = "ns-001/svc-00150.yaml".to_string();
    let c = if edited.contains_key(&c) {
        c
    } else {
        "ns-001/svc-00110.yaml".to_string()
    };
    edited.insert(a.clone(), drop_first(&edited[&a]));
    let account = |n: &str| {
        format!(
            "\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {n}, namespace: ns-000}}\n"
        )
    };
    edited.insert(
        b.clone(),
        format!("{}{}{}", edited[&b], account("extra-a"), account("extra-b")),
    );
    edited.insert(
        c.clone(),
        edited[&c].replacen("timeout: 2s", "timeout: 5s", 1),
    );
    let incremental = observe(session.compile(inputs(&edited, &mut order)));
    assert_eq!(session.stats().loaded, 3);
    assert_eq!(session.stats().removed, 0);
    let mut sorted: Vec<Input> = edited.iter().map(|(p, t)| Input::new(p, t)).collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let full = observe(&compile(sorted, &Options::default()));
    assert_eq!(incremental.0, full.0);
    assert_eq!(incremental.1, full.1);
    assert_eq!(incremental.2, full.2);
}

#[test]
fn documents_swapped_then_an_edit_elsewhere_name_the_right_policy() {
    // Two PeerAuthentications of one namespace swap places in their file;
    // then a DestinationRule's TLS mode changes, so the mTLS rules run
    // again. What points to a policy by its place must follow the swap:
    // MC0303's related label names the namespace-wide policy.
    let policies = [
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: shop}\nspec:\n  mtls: {mode: STRICT}\n",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  mtls: {mode: STRICT}\n",
    ];
    let rule = |mode: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: shop, namespace: shop}}\nspec:\n  host: '*.shop.svc.cluster.local'\n  trafficPolicy:\n    tls: {{mode: {mode}}}\n"
        )
    };
    let mut files = BTreeMap::new();
    files.insert("policies.yaml".to_string(), policies.join("---\n"));
    files.insert("rules.yaml".to_string(), rule("DISABLE"));
    let mut session = Session::new(Options::default());
    let mut order = Rng(5);
    let mut steps = vec![files.clone()];
    files.insert(
        "policies.yaml".to_string(),
        [policies[1], policies[0]].join("---\n"),
    );
    steps.push(files.clone());
    files.insert("rules.yaml".to_string(), rule("SIMPLE"));
    steps.push(files);
    for (n, files) in steps.iter().enumerate() {
        let incremental = observe(session.compile(inputs(files, &mut order)));
        let sorted: Vec<Input> = files.iter().map(|(p, t)| Input::new(p, t)).collect();
        let full = observe(&compile(sorted, &Options::default()));
        assert!(
            full.0.iter().any(|d| d.contains("MC0303")),
            "step {n}: the conflict is reported: {:?}",
            full.0
        );
        assert_eq!(incremental.0, full.0, "step {n}");
        assert_eq!(incremental.2, full.2, "step {n}");
    }
}

#[test]
fn a_route_moved_to_another_host_is_found_by_that_hosts_next_edit() {
    // A port edit patches the registry and asks which VirtualServices name
    // the Service (the naming index is built); the route then moves to
    // another Service; that Service's port changes: the index must have
    // followed the route, or MC0104 misses it.
    let service = |name: &str, port: u16| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {{app: {name}}}\n  ports:\n  - {{name: http, port: {port}}}\n"
        )
    };
    let route = |host: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: front, namespace: shop}}\nspec:\n  hosts: [front]\n  http:\n  - route:\n    - destination: {{host: {host}, port: {{number: 80}}}}\n"
        )
    };
    let mut files = BTreeMap::new();
    files.insert(
        "services.yaml".to_string(),
        [service("a", 80), service("b", 80), service("front", 80)].join("---\n"),
    );
    files.insert("route.yaml".to_string(), route("a"));
    let mut steps = vec![files.clone()];
    let services = |a: u16, b: u16| [service("a", a), service("b", b), service("front", 80)];
    files.insert("services.yaml".to_string(), services(81, 80).join("---\n"));
    steps.push(files.clone());
    files.insert("route.yaml".to_string(), route("b"));
    steps.push(files.clone());
    files.insert("services.yaml".to_string(), services(81, 82).join("---\n"));
    steps.push(files);
    step_through(&steps, |n, full, session| {
        if n == 3 {
            assert_eq!(session.stats().registry, RegistryUse::Patched);
            assert!(
                full.iter().any(|d| d.contains("MC0104")),
                "the moved route's port is reported: {full:?}"
            );
        }
    });
}

/// Compile `steps` (the files at each step) in one session, each compared
/// with a full compile of the same files; `check` then looks at step `n`'s
/// diagnostics and the session.
/// A repository of the files of `lists` (`(path, text)`; a later one of a
/// path wins).
fn files_of(lists: &[&[(&str, &str)]]) -> BTreeMap<String, String> {
    lists
        .iter()
        .flat_map(|l| l.iter())
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect()
}

fn step_through(steps: &[BTreeMap<String, String>], check: impl Fn(usize, &[String], &Session)) {
    let mut session = Session::new(Options::default());
    let mut order = Rng(7);
    for (n, files) in steps.iter().enumerate() {
        let incremental = observe(session.compile(inputs(files, &mut order)));
        let sorted: Vec<Input> = files.iter().map(|(p, t)| Input::new(p, t)).collect();
        let full = observe(&compile(sorted, &Options::default()));
        assert_eq!(incremental.0, full.0, "step {n}");
        check(n, &full.0, &session);
    }
}

#[test]
fn a_principal_moved_to_another_account_is_found_by_that_accounts_next_edit() {
    // A service-account edit patches the registry and asks which policies
    // name the accounts it moved between (the principal index is built);
    // the policy then names another account; a workload takes that
    // account: the index must have followed the principal, or MC0403 keeps
    // reporting an account that is now in use.
    let workloads = |a: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: shop, labels: {{app: a}}}}\nspec: {{serviceAccountName: {a}, containers: [{{name: c, image: i}}]}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: b, namespace: shop, labels: {{app: b}}}}\nspec: {{serviceAccountName: b, containers: [{{name: c, image: i}}]}}\n"
        )
    };
    let policy = |account: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: b, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: b}}}}\n  rules:\n  - from: [{{source: {{principals: [cluster.local/ns/shop/sa/{account}]}}}}]\n"
        )
    };
    let mut files = BTreeMap::new();
    files.insert("pods.yaml".to_string(), workloads("a"));
    files.insert("policy.yaml".to_string(), policy("front"));
    let mut steps = vec![files.clone()];
    files.insert("pods.yaml".to_string(), workloads("front"));
    steps.push(files.clone());
    files.insert("policy.yaml".to_string(), policy("back"));
    steps.push(files.clone());
    files.insert("pods.yaml".to_string(), workloads("back"));
    steps.push(files);
    step_through(&steps, |n, full, session| {
        let unknown = full.iter().any(|d| d.contains("MC0403"));
        // `front` is unused at first and `back` after the policy moves to it,
        // until a pod takes it.
        assert_eq!(unknown, n == 0 || n == 2, "step {n}: {full:?}");
        if n == 3 {
            assert_eq!(session.stats().registry, RegistryUse::Patched);
        }
    });
}

#[test]
fn gateway_and_sidecar_edits_keep_the_registry_and_rerun_what_reads_them() {
    // Each edit changes a Gateway's, a Sidecar's or a Gateway API
    // Gateway's spec, or a ServiceEntry's hosts, and makes findings appear
    // (then, undone, go): the registry is kept (patched for a listener
    // hostname or ServiceEntry hosts, which it copies), and every rule that
    // reads those specs runs again.
    let edits: &[(&str, &str, &str, &[&str])] = &[
        (
            "ingress.yaml",
            "{credentialName: partner-cert,",
            "{credentialName: shop-cert,",
            &["MC0210"],
        ),
        (
            "ingress.yaml",
            "[front/partner.example.com]",
            "[front/secure.example.com]",
            &["MC0106", "MC0206"],
        ),
        (
            "ingress.yaml",
            "number: 443, name: https-partner",
            "number: 8443, name: https-partner",
            &["MC0112"],
        ),
        (
            "ingress.yaml",
            "selector: {istio: ingress}",
            "selector: {istio: edge}",
            &["MC0107", "MC0406"],
        ),
        (
            "ingress.yaml",
            "front/shop.example.com]",
            "front/books.example.com]",
            &["MC0106"],
        ),
        (
            "back.yaml",
            "hosts: [./*, istio-system/*]",
            "hosts: [./*, front/*]",
            &["MC0203", "MC0204", "MC0205"],
        ),
        (
            "api.yaml",
            "sectionName: http}",
            "sectionName: https}",
            &["MC0117"],
        ),
        (
            "api.yaml",
            "{name: http, port: 80,",
            "{name: https, port: 80,",
            &["MC0117"],
        ),
        (
            "api.yaml",
            "{name: other, port: 8080,",
            "{name: other, port: 80,",
            &["MC0214"],
        ),
        (
            "api.yaml",
            "hostname: web.example.com}",
            "hostname: www.example.com}",
            &[],
        ),
        (
            "back.yaml",
            "hosts: [mirror.example.com]",
            "hosts: [mirror.example.com, web.front.svc.cluster.local]",
            &["MC0203", "MC0205"],
        ),
        (
            "front.yaml",
            "hosts: [api.example.com]",
            "hosts: [api2.example.com]",
            &[],
        ),
        (
            "front.yaml",
            "hosts: [ext-grpc.example.com]",
            "hosts: [ext.example.com]",
            &["MC0204"],
        ),
    ];
    let original = repositories()
        .into_iter()
        .find(|(name, _)| *name == "gateways")
        .expect("the gateways repository")
        .1;
    let mut steps = vec![original.clone()];
    for (file, from, to, _) in edits {
        let mut files = original.clone();
        let text = &files[*file];
        assert!(text.contains(from), "{file}: `{from}`");
        files.insert(file.to_string(), text.replacen(from, to, 1));
        steps.push(files);
        steps.push(original.clone());
    }
    step_through(&steps, |n, full, session| {
        let codes: Vec<&str> = full.iter().map(|d| &d[..6]).collect();
        if n == 0 {
            assert!(codes.is_empty(), "the repository is clean: {full:?}");
            return;
        }
        let (_, from, _, expected) = edits[(n - 1) / 2];
        let edited = n % 2 == 1;
        let mut found: Vec<&str> = codes.clone();
        found.sort_unstable();
        found.dedup();
        let want: &[&str] = if edited { expected } else { &[] };
        assert_eq!(found, want, "step {n} (`{from}`, edited: {edited})");
        let registry = session.stats().registry;
        // A listener hostname, or a ServiceEntry's hosts.
        let copied = from.starts_with("hostname:")
            || (from.starts_with("hosts: [") && from.ends_with(".example.com]"));
        assert_eq!(
            registry,
            if copied {
                RegistryUse::Patched
            } else {
                RegistryUse::Kept
            },
            "step {n} (`{from}`)"
        );
    });
}

#[test]
fn documents_added_or_removed_rerun_only_what_they_reach_when_the_registry_holds_the_same() {
    // A document added to or removed from a file changes how many resources
    // there are: the registry moves to the new positions (or, when documents
    // changed places, is built again). The rules carry their findings over
    // and run again where the changed kinds and hosts reach; when a
    // namespace came into use or went out of it, the rules reading which
    // namespaces exist (`NS_LABELS`) run in full.
    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: shop}\nspec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: reviews-v1, namespace: shop}\nspec:\n  selector: {matchLabels: {app: reviews, version: v1}}\n  template:\n    metadata: {labels: {app: reviews, version: v1}}\n    spec: {containers: [{name: c, image: i}]}\n";
    const RATINGS: &str = "\n---\napiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: shop}\nspec:\n  selector: {app: ratings}\n  ports: [{name: http, port: 9080}]\n";
    const ROUTE: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: shop}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 90}\n    - {destination: {host: reviews, subset: v2}, weight: 10}\n";
    let rule = |subsets: &str| {
        format!(
            "\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: shop}}\nspec:\n  host: reviews\n  subsets: [{subsets}]\n"
        )
    };
    let policy = |name: &str| {
        format!(
            "\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: reviews}}}}\n  rules:\n  - to: [{{operation: {{methods: [GET]}}}}]\n"
        )
    };
    let policy_ = policy("reviews");
    let (first, second, third) = (policy("reviews-get"), policy("second"), policy("third"));
    const ELSEWHERE: &str = "\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: other}\nspec:\n  mtls: {mode: STRICT}\n";
    let v1 = "{name: v1, labels: {version: v1}}";
    let both = "{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}";
    let step = |service: &str, routes: String| {
        BTreeMap::from([
            ("service.yaml".to_string(), service.to_string()),
            ("routes.yaml".to_string(), routes),
        ])
    };
    let steps = [
        // 0: v2 is dangling.
        step(SERVICE, format!("{ROUTE}{}", rule(v1))),
        // 1: a policy document added: the rules carry over.
        step(SERVICE, format!("{ROUTE}{}{policy_}", rule(v1))),
        // 2: the DestinationRule's document removed: v1 dangles too.
        step(SERVICE, format!("{ROUTE}{policy_}")),
        // 3: put back with both subsets: nothing dangles.
        step(SERVICE, format!("{ROUTE}{}{policy_}", rule(both))),
        // 4: a Service added: the registry takes it in, and the rules run
        // where its host and namespace reach.
        step(
            &format!("{SERVICE}{RATINGS}"),
            format!("{ROUTE}{}{policy_}", rule(both)),
        ),
        // 5: a policy in a namespace nothing used: the rules reading which
        // namespaces exist run in full, the others carry over.
        step(
            &format!("{SERVICE}{RATINGS}"),
            format!("{ROUTE}{}{policy_}{ELSEWHERE}", rule(both)),
        ),
        // 6: and removed again, with the first DestinationRule back.
        step(
            &format!("{SERVICE}{RATINGS}"),
            format!("{ROUTE}{}{policy_}", rule(v1)),
        ),
        // 7: the policy renamed: gone under one name, new under another.
        step(
            &format!("{SERVICE}{RATINGS}"),
            format!("{ROUTE}{}{first}", rule(v1)),
        ),
        // 8: a second policy.
        step(
            &format!("{SERVICE}{RATINGS}"),
            format!("{ROUTE}{first}{second}{}", rule(v1)),
        ),
        // 9: the two swapped and a third added: which of two comes first
        // is part of what rules say, so one of the two counts as gone and
        // new (the other kept its place among the documents that kept
        // their text), and the rules reading policies run again in full.
        step(
            &format!("{SERVICE}{RATINGS}"),
            format!("{ROUTE}{second}{first}{}{third}", rule(v1)),
        ),
    ];
    let dangling = [1, 1, 2, 0, 0, 0, 1, 1, 1, 1];
    let every_rule = [
        true, false, false, false, false, false, false, false, false, false,
    ];
    // The registry moves to the new positions instead of being built again,
    // and takes the new Service of step 4 in.
    let (built, shifted) = (RegistryUse::Built, RegistryUse::Shifted);
    let registry = [
        built, shifted, shifted, shifted, shifted, shifted, shifted, shifted, shifted, shifted,
    ];
    step_through(&steps, |n, full, session| {
        let found = full.iter().filter(|d| d.contains("MC0101")).count();
        assert_eq!(found, dangling[n], "step {n}: {full:?}");
        let stats = session.stats();
        assert_eq!(stats.registry, registry[n], "step {n}");
        let runs = &stats.rules;
        assert_eq!(
            runs.focused + runs.carried == 0,
            every_rule[n],
            "step {n}: {runs:?}"
        );
        // The namespace `other` comes into use, then goes out of it: MC0402,
        // MC0403 and MC0118 read which namespaces exist.
        if n == 5 || n == 6 {
            assert!(runs.full >= 3, "step {n}: {runs:?}");
        }
    });
}

#[test]
fn services_and_workloads_that_come_or_go_move_the_registry_and_rerun_what_they_reach() {
    // A Service or a workload added or removed moves the registry and takes
    // the new ones in; the rules then run where the host, the namespace or
    // the service account reaches, as after a patch. Here a workload that
    // comes makes two PeerAuthentications' selectors overlap (MC0108, run
    // for the namespace's policies, not all), a policy added overlaps them
    // too, and a Service that comes makes a route's host known (MC0102).
    let policy = |name: &str, labels: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {{matchLabels: {labels}}}\n  mtls: {{mode: STRICT}}\n"
        )
    };
    let workload = |name: &str, labels: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {{matchLabels: {labels}}}\n  template:\n    metadata: {{labels: {labels}}}\n    spec: {{containers: [{{name: c, image: i}}]}}\n"
        )
    };
    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: ratings, namespace: shop}\nspec:\n  selector: {app: ratings}\n  ports: [{name: http, port: 9080}]\n";
    const ROUTE: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings, namespace: shop}\nspec:\n  hosts: [ratings]\n  http:\n  - route:\n    - destination: {host: ratings}\n";
    let base = BTreeMap::from([
        (
            "policies.yaml".to_string(),
            format!(
                "{}---\n{}",
                policy("a", "{app: reviews}"),
                policy("b", "{tier: web}")
            ),
        ),
        (
            "reviews.yaml".to_string(),
            workload("reviews-v1", "{app: reviews}"),
        ),
        ("route.yaml".to_string(), ROUTE.to_string()),
    ]);
    let with = |more: &[(&str, String)]| {
        let mut files = base.clone();
        for (p, t) in more {
            files.insert(p.to_string(), t.clone());
        }
        files
    };
    let both = || {
        (
            "web.yaml",
            workload("web-reviews", "{app: reviews, tier: web}"),
        )
    };
    let third = || ("more.yaml", policy("c", "{tier: web}"));
    let service = || ("ratings.yaml", SERVICE.to_string());
    let steps = [
        with(&[]),
        // 1: a workload both select: each of the two names the other.
        with(&[both()]),
        // 2: a third policy selecting it: each of the three names the others.
        with(&[both(), third()]),
        // 3: the workload gone: none overlap.
        with(&[third()]),
        // 4: the route's host comes into being.
        with(&[third(), service()]),
        // 5: and goes again.
        with(&[third()]),
    ];
    let overlaps = [0, 2, 3, 0, 0, 0];
    let unknown = [1, 1, 1, 1, 0, 1];
    step_through(&steps, |n, full, session| {
        let count = |code: &str| full.iter().filter(|d| d.contains(code)).count();
        assert_eq!(count("MC0108"), overlaps[n], "step {n}: {full:?}");
        assert_eq!(count("MC0102"), unknown[n], "step {n}: {full:?}");
        if n > 0 {
            let stats = session.stats();
            assert_eq!(stats.registry, RegistryUse::Shifted, "step {n}");
            assert!(
                stats.rules.carried > 0 && stats.rules.focused > 0,
                "step {n}: {:?}",
                stats.rules
            );
        }
    });
}

#[test]
fn a_selection_change_reruns_retry_amplification_only_when_the_call_graph_may_differ() {
    // MC0501 reads the registry through the call index and the Sidecars'
    // workloads: after a pod's labels or service account change, it runs
    // again only when the index, read again where the change reached,
    // differs, or a Sidecar of that namespace may select otherwise
    // (`parts::CALLS`). Here `a` calls `b` through a Sidecar and `b` calls
    // `c` through an ALLOW policy naming `b`'s account: five tries per
    // hop, 25 over the bound of 10 when the chain holds, 5 when only the
    // last hop does. Each step cuts or mends one link: the Sidecar's
    // selection, the account a principal names, the policy's selection.
    let pod = |name: &str, app: &str, account: &str| {
        retrying_service(name)
            .replace(
                &format!("labels: {{app: {name}}}"),
                &format!("labels: {{app: {app}}}"),
            )
            .replace(
                &format!("serviceAccountName: {name}"),
                &format!("serviceAccountName: {account}"),
            )
            .replace("attempts: 2", "attempts: 4")
    };
    // `a` and its Sidecar in a namespace of their own, so that a change in
    // `n` reaches no Sidecar and only the index can tell.
    const SIDECAR: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: a, namespace: m}
spec: {workloadSelector: {labels: {app: a}}, egress: [{hosts: [n/b.n.svc.cluster.local]}]}
";
    let files = |a: &str, b_account: &str, c: &str| {
        BTreeMap::from([
            (
                "a.yaml".to_string(),
                pod("a", a, "a").replace("namespace: n", "namespace: m"),
            ),
            ("b.yaml".to_string(), pod("b", "b", b_account)),
            ("c.yaml".to_string(), pod("c", c, "c")),
            ("sidecar.yaml".to_string(), SIDECAR.to_string()),
            ("allow.yaml".to_string(), allow("c", "b")),
        ])
    };
    let steps = [
        // 0: `a`'s pod is not the Sidecar's: only b -> c, 5 tries.
        files("x", "b", "c"),
        // 1: it is: a -> b -> c.
        files("a", "b", "c"),
        // 2: `b` runs as another account: the policy no longer names it.
        files("a", "other", "c"),
        // 3: back.
        files("a", "b", "c"),
        // 4: `c`'s pod leaves the policy's selection.
        files("a", "b", "z"),
        // 5: back.
        files("a", "b", "c"),
        // 6: a label nothing selects on, in `n`: the index reads the same,
        // and the finding is carried over.
        files("a", "b", "c")
            .into_iter()
            .map(|(p, t)| {
                (
                    p,
                    t.replace("labels: {app: b}", "labels: {app: b, tier: x}"),
                )
            })
            .collect(),
    ];
    let amplified = [0, 1, 0, 1, 0, 1, 1];
    step_through(&steps, |n, full, session| {
        let found = full.iter().filter(|d| d.contains("MC0501")).count();
        assert_eq!(found, amplified[n], "step {n}: {full:?}");
        if n > 0 {
            assert_eq!(session.stats().registry, RegistryUse::Patched, "step {n}");
        }
    });
}

#[test]
fn a_duplicate_that_changes_places_with_its_first_moves_the_finding() {
    // MC0012 reports the second declaration of an identity, with the first
    // as related: which is second follows resource order. A file renamed
    // past the other declaration's, or two documents swapped, changes it,
    // though no resource changed.
    const POLICY: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: twice, namespace: shop}\nspec: {action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}]}\n";
    const OTHER: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: other, namespace: shop}\nspec: {action: DENY, rules: [{to: [{operation: {methods: [PUT]}}]}]}\n";
    let files = |list: &[(&str, String)]| -> BTreeMap<String, String> {
        list.iter()
            .map(|(p, t)| (p.to_string(), t.clone()))
            .collect()
    };
    let second = POLICY.replace("POST", "GET");
    let steps = [
        files(&[("a.yaml", POLICY.into()), ("b.yaml", second.clone())]),
        // `a.yaml` renamed past `b.yaml`: `b.yaml`'s is first now.
        files(&[("c.yaml", POLICY.into()), ("b.yaml", second.clone())]),
        // Both in one file, then swapped.
        files(&[("d.yaml", format!("{POLICY}---\n{OTHER}---\n{second}"))]),
        files(&[("d.yaml", format!("{second}---\n{OTHER}---\n{POLICY}"))]),
        // The first moved past the second, which keeps its place among the
        // documents that kept their text: the finding moves to the first.
        files(&[("d.yaml", format!("{OTHER}---\n{second}---\n{POLICY}"))]),
        files(&[("d.yaml", format!("{OTHER}---\n{POLICY}---\n{second}"))]),
    ];
    step_through(&steps, |n, full, _| {
        let found = full.iter().filter(|d| d.contains("MC0012")).count();
        assert_eq!(found, 1, "step {n}: {full:?}");
    });
}

#[test]
fn gateways_and_namespaces_that_come_or_go_move_the_registry() {
    // Which gateways exist and which namespaces are declared are the
    // registry's: a Gateway, a Gateway API Gateway or a Namespace that
    // comes or goes moves it. MC0103 (a route's gateway unknown) reads the
    // gateways' names through their kinds and runs again; a Namespace of a
    // namespace in use gives its name with its labels, as a label edit
    // would, and MC0113 (two Services give a port two protocols, in the
    // mesh only) runs again for it. A namespace no resource used before
    // is declared the same way. (A Namespace, having no
    // `metadata.namespace`, is in the default namespace, as every resource
    // without one: an account there keeps that one in use.)
    const WORKLOAD: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: details, namespace: shop}\nspec:\n  selector: {matchLabels: {app: details}}\n  template:\n    metadata: {labels: {app: details}}\n    spec: {containers: [{name: c, image: i}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: details-tcp, namespace: shop}\nspec:\n  selector: {app: details}\n  ports: [{name: tcp, port: 9080}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: details-http, namespace: shop}\nspec:\n  selector: {app: details}\n  ports: [{name: http, port: 9080}]\n";
    const ROUTE: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: front, namespace: shop}\nspec:\n  hosts: [front.example.com]\n  gateways: [edge]\n  http:\n  - route:\n    - destination: {host: details-http}\n";
    const GATEWAY: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: edge, namespace: shop}\nspec:\n  selector: {app: details}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [front.example.com]\n";
    const K8S_GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: edge, namespace: shop}\nspec:\n  gatewayClassName: istio\n  listeners:\n  - {name: http, port: 80, protocol: HTTP, hostname: front.example.com}\n";
    const SHOP: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
    const ACCOUNT: &str =
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: ops, namespace: default}\n";
    const BILLING: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: billing}\n";
    let base = [
        ("route.yaml", ROUTE),
        ("shop.yaml", WORKLOAD),
        ("sa.yaml", ACCOUNT),
    ];
    let with = |more: &[(&str, &str)]| files_of(&[&base, more]);
    let steps = [
        with(&[]),
        // 1: the Gateway the route names.
        with(&[("gw.yaml", GATEWAY)]),
        // 2: its namespace declared without injection: out of the mesh.
        with(&[("gw.yaml", GATEWAY), ("ns.yaml", SHOP)]),
        // 3: and no longer.
        with(&[("gw.yaml", GATEWAY)]),
        // 4: the Gateway gone.
        with(&[]),
        // 5: a Gateway API Gateway of that name.
        with(&[("gw.yaml", K8S_GATEWAY)]),
        // 6: a namespace nothing used.
        with(&[("gw.yaml", K8S_GATEWAY), ("ns.yaml", BILLING)]),
    ];
    let unknown = [1, 0, 0, 0, 1, 0, 0];
    let protocols = [1, 1, 0, 1, 1, 1, 1];
    step_through(&steps, |n, full, session| {
        let count = |code: &str| full.iter().filter(|d| d.contains(code)).count();
        assert_eq!(count("MC0103"), unknown[n], "step {n}: {full:?}");
        assert_eq!(count("MC0113"), protocols[n], "step {n}: {full:?}");
        if n == 0 {
            return;
        }
        let stats = session.stats();
        assert_eq!(stats.registry, RegistryUse::Shifted, "step {n}");
        assert!(stats.rules.carried > 0, "step {n}: {:?}", stats.rules);
    });
}

#[test]
fn a_namespace_that_comes_into_use_or_gets_its_first_account_reruns_what_reads_it() {
    // MC0403 reports a principal naming a service account no workload of
    // its namespace uses, but only in a namespace with some account: the
    // first account that comes (or the last that goes) changes it for every
    // principal naming that namespace, not only for those naming the
    // account. MC0402 reports a source namespace the repository neither
    // declares nor uses: a resource that brings a namespace into use (or
    // takes it out) changes it.
    const POLICY: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-b, namespace: shop}\nspec:\n  action: ALLOW\n  rules:\n  - from:\n    - source: {principals: [cluster.local/ns/shop/sa/b]}\n    - source: {namespaces: [billing]}\n";
    const SHOP: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n";
    const ACCOUNT: &str =
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: shop}\n";
    const BILLING: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ledger, namespace: billing}\nspec: {host: ledger}\n";
    let base = [("policy.yaml", POLICY), ("ns.yaml", SHOP)];
    let with = |more: &[(&str, &str)]| files_of(&[&base, more]);
    let steps = [
        with(&[]),
        with(&[("sa.yaml", ACCOUNT)]),
        with(&[]),
        with(&[("billing.yaml", BILLING)]),
        with(&[]),
    ];
    let account = [0, 1, 0, 0, 0];
    let namespace = [1, 1, 1, 0, 1];
    step_through(&steps, |n, full, session| {
        let count = |code: &str| full.iter().filter(|d| d.contains(code)).count();
        assert_eq!(count("MC0403"), account[n], "step {n}: {full:?}");
        assert_eq!(count("MC0402"), namespace[n], "step {n}: {full:?}");
        if n > 0 {
            assert_eq!(session.stats().registry, RegistryUse::Shifted, "step {n}");
        }
    });
}
