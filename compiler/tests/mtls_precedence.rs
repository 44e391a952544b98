//! PeerAuthentication precedence among workload policies: the first by
//! namespace and name that selects a workload decides its mode (an `UNSET`
//! one defers to the next), and the first that selects it gives its port
//! overrides, whichever label its selector names first.

use meshc_compiler::{Input, Options, compile};
use meshc_ir::MtlsMode;

const REPO: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  template: {metadata: {labels: {app: api, version: v1}}, spec: {}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web, version: v2}}, spec: {}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: a-unset, namespace: shop}
spec:
  selector: {matchLabels: {version: v1}}
  mtls: {mode: UNSET}
  portLevelMtls: {'8080': {mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: b-strict, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: c-disable, namespace: shop}
spec:
  selector: {matchLabels: {app: api, version: v1}}
  mtls: {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: d-web, namespace: shop}
spec:
  selector: {matchLabels: {version: v2, app: web}}
  mtls: {mode: PERMISSIVE}
";

#[test]
fn the_first_selecting_workload_policy_decides() {
    // Overlapping workload policies are an error (MC0108); the precedence
    // still decides what runs, so that rule is silenced here.
    let mut options = Options::default();
    options.settings.ignore.push("MC0108".into());
    let c = compile(vec![Input::new("t.yaml", REPO.to_string())], &options);
    let ir = c.ir.expect("the repository compiles");
    let api = &ir.workloads["shop/api"].mtls;
    // a-unset selects it first but defers; b-strict is next (c-disable,
    // later by name, also selects it).
    assert_eq!(api.mode, MtlsMode::Strict);
    assert!(
        format!("{:?}", api.decided_by).contains("b-strict"),
        "{:?}",
        api.decided_by
    );
    // The port overrides come from the first selecting policy, a-unset.
    assert_eq!(api.ports.get(&8080), Some(&MtlsMode::Disable));
    // d-web's selector names `app` first once sorted, and still selects web.
    let web = &ir.workloads["shop/web"].mtls;
    assert_eq!(web.mode, MtlsMode::Permissive);
    assert!(format!("{:?}", web.decided_by).contains("d-web"));
}
