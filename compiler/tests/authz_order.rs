//! Which AuthorizationPolicies a workload gets, and in which order: the
//! mesh-wide ones (root namespace, no selector), its namespace's and those
//! whose selector picks it, each list (CUSTOM, DENY, ALLOW) in namespace and
//! name order whatever the file order, and AUDIT nowhere.

use meshc_compiler::{Input, Options, compile};

const WORKLOADS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: z, labels: {istio-injection: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: a}
spec:
  selector: {matchLabels: {app: api}}
  template: {metadata: {labels: {app: api}}, spec: {}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: z}
spec:
  selector: {matchLabels: {app: web}}
  template: {metadata: {labels: {app: web}}, spec: {}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: db, namespace: z}
spec:
  selector: {matchLabels: {app: db}}
  template: {metadata: {labels: {app: db}}, spec: {}}
";

/// An ALLOW (or `action`) policy named `name` in `ns`, for `selector` if any.
fn policy(ns: &str, name: &str, action: &str, selector: Option<&str>) -> String {
    let selector = selector.map_or(String::new(), |app| {
        format!("  selector: {{matchLabels: {{app: {app}}}}}\n")
    });
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec:\n{selector}  action: {action}\n  \
         rules: [{{to: [{{operation: {{methods: [GET]}}}}]}}]\n"
    )
}

fn names(list: &[meshc_ir::AuthzPolicy]) -> Vec<String> {
    list.iter().map(|p| p.name.clone()).collect()
}

#[test]
fn a_workload_gets_mesh_wide_namespace_and_selected_policies_in_order() {
    let policies = [
        policy("z", "z-web", "ALLOW", Some("web")),
        policy("istio-system", "mesh-allow", "ALLOW", None),
        policy("a", "a-all", "ALLOW", None),
        policy("z", "y-deny", "DENY", None),
        policy("istio-system", "mesh-deny", "DENY", None),
        policy("a", "b-api", "ALLOW", Some("api")),
        policy("z", "audit", "AUDIT", None),
        policy("istio-system", "mesh-z", "ALLOW", Some("nothing")),
    ];
    let mut irs = Vec::new();
    // The same policies in two file orders give the same IR.
    for order in [
        policies.to_vec(),
        policies.iter().rev().cloned().collect::<Vec<_>>(),
    ] {
        let inputs = vec![
            Input::new("workloads.yaml", WORKLOADS.to_string()),
            Input::new("policies.yaml", order.concat()),
        ];
        let c = compile(inputs, &Options::default());
        irs.push(c.ir.expect("the repository compiles"));
    }
    assert_eq!(irs[0], irs[1]);
    let ir = &irs[0];
    let api = &ir.workloads["a/api"].authz;
    assert_eq!(
        names(&api.allow),
        ["a/a-all", "a/b-api", "istio-system/mesh-allow"]
    );
    assert_eq!(names(&api.deny), ["istio-system/mesh-deny"]);
    let web = &ir.workloads["z/web"].authz;
    assert_eq!(names(&web.allow), ["istio-system/mesh-allow", "z/z-web"]);
    assert_eq!(names(&web.deny), ["istio-system/mesh-deny", "z/y-deny"]);
    let db = &ir.workloads["z/db"].authz;
    assert_eq!(names(&db.allow), ["istio-system/mesh-allow"]);
    assert_eq!(names(&db.deny), ["istio-system/mesh-deny", "z/y-deny"]);
    assert!(db.custom.is_empty());
}
