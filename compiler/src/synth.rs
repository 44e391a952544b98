//! A deterministic generator of realistic policy repositories, for benchmarks
//! and scale tests: per service a Service, two Deployments (v1, v2), a
//! VirtualService with matched rules and a canary split, a DestinationRule, a
//! workload PeerAuthentication and an AuthorizationPolicy (about 7 resources,
//! 5 KB). Services are grouped 100 to a namespace; every generated repository
//! lints clean. Pure: it returns `(path, text)` pairs and does no I/O.

/// Generate a repository of `services` services.
pub fn repository(services: usize) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let namespaces = services.div_ceil(100);
    files.push((
        "mesh.yaml".to_string(),
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n".to_string(),
    ));
    for ns in 0..namespaces {
        files.push((
            format!("ns-{ns:03}/namespace.yaml"),
            format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{ns:03}\n  labels:\n    istio-injection: enabled\n"),
        ));
    }
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for i in 0..services {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let ns = format!("ns-{:03}", i / 100);
        let name = format!("svc-{i:05}");
        // Callers come from a lower tier ([0, 8) call themselves, [8, 64) are
        // called from [0, 8), the rest from [0, 64)), so call paths are at most
        // two hops deep, as in a layered application.
        let caller_index = match i {
            0..8 => i,
            8..64 => rng as usize % 8,
            _ => rng as usize % 64,
        };
        let caller = format!("svc-{caller_index:05}");
        let canary = 5 + (rng >> 8) as u32 % 45;
        let port = 8000 + (rng >> 16) as u32 % 1000;
        files.push((
            format!("{ns}/{name}.yaml"),
            service(
                &ns,
                &name,
                &caller,
                canary,
                port,
                i / 100 == caller_index / 100,
            ),
        ));
    }
    files
}

fn service(ns: &str, name: &str, caller: &str, canary: u32, port: u32, same_ns: bool) -> String {
    let caller_ns = if same_ns {
        ns.to_string()
    } else {
        format!("ns-{}", &caller[4..7])
    };
    let stable = 100 - canary;
    let mut s = format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
  labels:
    app: {name}
spec:
  selector:
    app: {name}
  ports:
  - name: http
    port: {port}
    targetPort: 8080
"#
    );
    for v in ["v1", "v2"] {
        s += &format!(
            r#"---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}-{v}
  namespace: {ns}
spec:
  replicas: 3
  selector:
    matchLabels:
      app: {name}
      version: {v}
  template:
    metadata:
      labels:
        app: {name}
        version: {v}
    spec:
      serviceAccountName: {name}
      containers:
      - name: app
        image: registry.example.com/{name}:{v}
        ports:
        - containerPort: 8080
"#
        );
    }
    s += &format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
  namespace: {ns}
spec:
  hosts:
  - {name}
  http:
  - name: internal-api
    match:
    - uri:
        prefix: /internal/
      headers:
        x-team:
          exact: platform
    route:
    - destination:
        host: {name}
        subset: v1
    timeout: 2s
  - name: testers
    match:
    - headers:
        end-user:
          regex: "^(qa|test)-.*"
    - queryParams:
        canary:
          exact: "true"
    route:
    - destination:
        host: {name}
        subset: v2
  - name: canary
    route:
    - destination:
        host: {name}
        subset: v1
        port:
          number: {port}
      weight: {stable}
    - destination:
        host: {name}
        subset: v2
        port:
          number: {port}
      weight: {canary}
    retries:
      attempts: 1
      perTryTimeout: 1s
      retryOn: gateway-error,connect-failure
    timeout: 5s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}
  namespace: {ns}
spec:
  host: {name}.{ns}.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 200
      http:
        http1MaxPendingRequests: 100
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: {name}
  namespace: {ns}
spec:
  selector:
    matchLabels:
      app: {name}
  mtls:
    mode: STRICT
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: {name}
  namespace: {ns}
spec:
  selector:
    matchLabels:
      app: {name}
  action: ALLOW
  rules:
  - from:
    - source:
        principals:
        - cluster.local/ns/{caller_ns}/sa/{caller}
    to:
    - operation:
        methods: ["GET", "POST"]
        paths: ["/api/*"]
"#
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Input, Options, analyze};

    #[test]
    fn generated_repositories_are_deterministic_and_clean() {
        let a = repository(250);
        assert_eq!(a, repository(250));
        let inputs = a.into_iter().map(|(p, t)| Input::new(p, t)).collect();
        let analysis = analyze(inputs, &Options::default());
        assert!(
            analysis.diagnostics.is_empty(),
            "{:?}",
            analysis
                .diagnostics
                .iter()
                .take(3)
                .map(|d| &d.message)
                .collect::<Vec<_>>()
        );
        assert_eq!(analysis.resources.len(), 250 * 7 + 3 + 1);
    }
}
