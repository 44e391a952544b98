//! The Kubernetes Gateway API kinds meshc reads (`gateway.networking.k8s.io`):
//! Gateway, HTTPRoute, GRPCRoute and ReferenceGrant, modelled as far as the
//! rules read them (attachments, backends, listeners, addresses, grants).
//! Like the Kubernetes kinds, they accept fields meshc does not read: the
//! Gateway API's own validation is CEL and webhooks, which meshc does not
//! reproduce.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `Gateway.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct K8sGatewaySpec {
    /// The GatewayClass (`istio`, `istio-waypoint`...).
    #[serde(
        rename = "gatewayClassName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_class_name: Option<String>,
    /// Listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners: Option<Vec<Listener>>,
    /// Requested addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<GatewayAddress>>,
}

/// A Gateway listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Listener {
    /// Name, unique in the Gateway.
    #[serde(default)]
    pub name: String,
    /// Hostname; every host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Port.
    #[serde(default)]
    pub port: i64,
    /// `HTTP`, `HTTPS`, `TLS`, `TCP`, `UDP`, or a domain-prefixed protocol.
    #[serde(default)]
    pub protocol: String,
    /// Which routes may attach.
    #[serde(
        rename = "allowedRoutes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// A listener's `allowedRoutes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AllowedRoutes {
    /// The namespaces routes may come from; the Gateway's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
}

/// `allowedRoutes.namespaces`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RouteNamespaces {
    /// `All`, `Same` (the default) or `Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// For `Selector`: the namespaces' labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<NamespaceSelector>,
}

/// A label selector over namespaces (`matchExpressions` are not read).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NamespaceSelector {
    /// Labels the namespace must have.
    #[serde(
        rename = "matchLabels",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub match_labels: Option<super::Map<String, String>>,
    /// Set-based requirements; when present meshc does not judge the selector.
    #[serde(
        rename = "matchExpressions",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub match_expressions: Option<serde_json::Value>,
}

/// A Gateway address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GatewayAddress {
    /// `IPAddress` (the default), `Hostname` or a domain-prefixed type.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The address.
    #[serde(default)]
    pub value: String,
}

/// `HTTPRoute.spec` and `GRPCRoute.spec`, as far as meshc reads them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RouteSpec {
    /// What the route attaches to: Gateways, or Services for mesh routes.
    #[serde(
        rename = "parentRefs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub parent_refs: Option<Vec<ParentRef>>,
    /// Hostnames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<Vec<String>>,
    /// Rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<RouteRule>>,
}

/// A route rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RouteRule {
    /// Where matching requests go.
    #[serde(
        rename = "backendRefs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_refs: Option<Vec<BackendRef>>,
}

/// A route's `parentRefs[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ParentRef {
    /// API group; `gateway.networking.k8s.io` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; `Gateway` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace; the route's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// A listener name.
    #[serde(
        rename = "sectionName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub section_name: Option<String>,
}

/// A route rule's `backendRefs[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BackendRef {
    /// API group; the core group (`""`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind; `Service` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace; the route's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// Relative weight; 1 when absent, 0 sends nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
}

/// `ReferenceGrant.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReferenceGrantSpec {
    /// Who may refer to objects of this namespace.
    #[serde(default)]
    pub from: Vec<GrantFrom>,
    /// What they may refer to.
    #[serde(default)]
    pub to: Vec<GrantTo>,
}

/// A ReferenceGrant's `from[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GrantFrom {
    /// API group of the referring kind.
    #[serde(default)]
    pub group: String,
    /// The referring kind (`HTTPRoute`...).
    #[serde(default)]
    pub kind: String,
    /// The referring objects' namespace.
    #[serde(default)]
    pub namespace: String,
}

/// A ReferenceGrant's `to[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GrantTo {
    /// API group of the referred kind (`""` for Services).
    #[serde(default)]
    pub group: String,
    /// The referred kind.
    #[serde(default)]
    pub kind: String,
    /// One object's name; every object of the kind when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
