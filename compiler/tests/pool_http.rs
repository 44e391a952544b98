//! The HTTP connection-pool settings that choose how connections are made
//! and kept reach the IR. `h2UpgradePolicy`: `UPGRADE` lifts HTTP/1.1
//! requests to HTTP/2 between proxies, `DO_NOT_UPGRADE` and the default
//! (Istio's mesh-wide one) keep them HTTP/1.1, and `DEFAULT` (or nothing)
//! inherits from the level above, as the other connection-pool settings
//! do. `idleTimeout`, HTTP's and TCP's, is carried in milliseconds,
//! inherited the same way.

use meshc_compiler::{Input, Options, compile};

const REPO: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api-v1, namespace: shop}
spec:
  selector: {matchLabels: {app: api, version: v1}}
  template: {metadata: {labels: {app: api, version: v1}}, spec: {}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api-v2, namespace: shop}
spec:
  selector: {matchLabels: {app: api, version: v2}}
  template: {metadata: {labels: {app: api, version: v2}}, spec: {}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web}}, spec: {}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: shop}
spec:
  host: api
  trafficPolicy:
    connectionPool: {http: {h2UpgradePolicy: UPGRADE, idleTimeout: 30s}, tcp: {idleTimeout: 2h}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {http: {h2UpgradePolicy: DEFAULT, maxRetries: 3}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool: {http: {h2UpgradePolicy: DO_NOT_UPGRADE, idleTimeout: 1.5m}}
";

/// The compiled IR, and the connection pool of `host` (`subset`) on port
/// 8080 in it.
fn compiled() -> std::sync::Arc<meshc_ir::Ir> {
    let c = compile(
        vec![Input::new("t.yaml", REPO.to_string())],
        &Options::default(),
    );
    c.ir.expect("the repository compiles")
}

fn pool(ir: &meshc_ir::Ir, host: &str, subset: Option<&str>) -> meshc_ir::ConnectionPool {
    let (tp, _) = ir.hosts[host].target(subset);
    tp.for_port(Some(8080)).connection_pool.clone()
}

const API: &str = "api.shop.svc.cluster.local";
const WEB: &str = "web.shop.svc.cluster.local";

#[test]
fn the_policy_reaches_the_ir_and_inherits_like_the_other_pool_settings() {
    let ir = compiled();
    let upgrade = |host, subset| pool(&ir, host, subset).h2_upgrade;
    assert!(upgrade(API, None), "UPGRADE on the host");
    assert!(upgrade(API, Some("v1")), "DEFAULT inherits the host's");
    assert!(!upgrade(API, Some("v2")), "DO_NOT_UPGRADE on the subset");
    assert!(
        !upgrade(WEB, None),
        "HTTP/1.1 stays HTTP/1.1 by default, as in Istio"
    );

    // Written only when on, and read back the same.
    let json = serde_json::to_string(&*ir).unwrap();
    assert_eq!(json.matches("\"h2_upgrade\":true").count(), 2, "{json}");
    assert!(!json.contains("\"h2_upgrade\":false"));
    assert!(json.contains("\"idle_timeout_ms\":30000"), "{json}");
    assert!(!json.contains("\"idle_timeout_ms\":null"), "{json}");
    let back: meshc_ir::Ir = serde_json::from_str(&json).unwrap();
    assert_eq!(back, *ir);
}

#[test]
fn the_idle_timeout_reaches_the_ir_and_inherits() {
    let ir = compiled();
    let idle = |host, subset| pool(&ir, host, subset).idle_timeout_ms;
    assert_eq!(idle(API, None), Some(30_000), "set on the host");
    assert_eq!(idle(API, Some("v1")), Some(30_000), "inherited by a subset");
    assert_eq!(idle(API, Some("v2")), Some(90_000), "the subset's own");
    assert_eq!(idle(WEB, None), None, "unset: the data plane's default");
    // TCP's own, beside HTTP's.
    let tcp_idle = |host, subset| pool(&ir, host, subset).tcp_idle_timeout_ms;
    assert_eq!(tcp_idle(API, None), Some(7_200_000));
    assert_eq!(tcp_idle(API, Some("v2")), Some(7_200_000));
    assert_eq!(tcp_idle(WEB, None), None);
}
