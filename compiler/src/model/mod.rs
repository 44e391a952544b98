//! The typed model of the resources meshc reads.
//!
//! Istio kinds come from [`istio_gen`], generated from the upstream CRDs, strict
//! about unknown fields. Kubernetes kinds are modelled only as far as meshc reads
//! them (selectors, labels, ports, service accounts) and accept other fields:
//! meshc is not a Kubernetes validator. Every struct derives serde and schemars;
//! the schema stage validates raw documents against `schema_for::<Object<S>>()`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod gateway_api;
#[allow(missing_docs)]
pub mod istio_gen;

pub use gateway_api::*;
pub use istio_gen::*;

pub use meshc_ir::Map;

/// The name an enum value has in YAML (`INSERT_BEFORE`, `ISTIO_MUTUAL`), as
/// its serde renaming gives it.
pub fn enum_name<T: Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Kubernetes' `int-or-string`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A number.
    Int(i64),
    /// A string (a named port, a percentage).
    String(String),
}

impl JsonSchema for IntOrString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrString".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"anyOf": [{"type": "integer"}, {"type": "string"}]})
    }
}

/// The part of Kubernetes' `ObjectMeta` that policy uses; other fields pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectMeta {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Map<String, String>>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, String>>,
}

/// An Istio object: strict envelope around a generated spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IstioObject<S> {
    /// `group/version`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// The spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<S>,
    /// Status written by controllers; not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// A Kubernetes object: lenient envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KubeObject<S> {
    /// `group/version`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// The spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<S>,
}

/// `Service.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceSpec {
    /// Pods selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Map<String, String>>,
    /// Ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<KubeServicePort>>,
    /// `ClusterIP`, `NodePort`, `LoadBalancer`, `ExternalName`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// For `ExternalName` services.
    #[serde(
        rename = "externalName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub external_name: Option<String>,
}

/// A Service port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KubeServicePort {
    /// Name (`http`, `grpc-web`, ...), which Istio reads as the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port number.
    #[schemars(extend("minimum" = 1, "maximum" = 65535))]
    pub port: i64,
    /// Container port.
    #[serde(
        rename = "targetPort",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub target_port: Option<IntOrString>,
    /// `TCP`, `UDP`, `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Application protocol.
    #[serde(
        rename = "appProtocol",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub app_protocol: Option<String>,
}

/// Spec of Deployment, StatefulSet and DaemonSet: the pod template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkloadSpec {
    /// The pod template.
    #[serde(default)]
    pub template: PodTemplate,
}

/// A pod template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PodTemplate {
    /// Template metadata (labels, annotations).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Pod spec.
    #[serde(default)]
    pub spec: PodSpec,
}

/// The part of a pod spec policy uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PodSpec {
    /// Service account (identity).
    #[serde(
        rename = "serviceAccountName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_account_name: Option<String>,
    /// Deprecated alias of `serviceAccountName`.
    #[serde(
        rename = "serviceAccount",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_account: Option<String>,
}

/// Every kind meshc models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// networking.istio.io
    VirtualService,
    /// networking.istio.io
    DestinationRule,
    /// networking.istio.io
    Gateway,
    /// networking.istio.io
    ServiceEntry,
    /// networking.istio.io
    Sidecar,
    /// security.istio.io
    PeerAuthentication,
    /// security.istio.io
    AuthorizationPolicy,
    /// security.istio.io
    RequestAuthentication,
    /// v1
    Namespace,
    /// v1
    Service,
    /// v1
    ServiceAccount,
    /// v1
    Pod,
    /// apps/v1
    Deployment,
    /// apps/v1
    StatefulSet,
    /// apps/v1
    DaemonSet,
    /// networking.istio.io (v1alpha3 only)
    EnvoyFilter,
    /// gateway.networking.k8s.io: the Gateway API's Gateway
    K8sGateway,
    /// gateway.networking.k8s.io
    HttpRoute,
    /// gateway.networking.k8s.io
    GrpcRoute,
    /// gateway.networking.k8s.io
    ReferenceGrant,
    /// telemetry.istio.io
    Telemetry,
    /// extensions.istio.io (v1alpha1 only)
    WasmPlugin,
}

impl Kind {
    /// All kinds.
    pub const ALL: [Kind; 22] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::Namespace,
        Kind::Service,
        Kind::ServiceAccount,
        Kind::Pod,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::EnvoyFilter,
        Kind::K8sGateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::ReferenceGrant,
        Kind::Telemetry,
        Kind::WasmPlugin,
    ];

    /// The kind's name as written in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::EnvoyFilter => "EnvoyFilter",
            Kind::K8sGateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Telemetry => "Telemetry",
            Kind::WasmPlugin => "WasmPlugin",
        }
    }

    /// The kind's name where `as_str` is ambiguous: the Gateway API's
    /// Gateway is `Gateway.gateway.networking.k8s.io` (as `kubectl` writes
    /// it), every other kind its plain name.
    pub fn qualified(self) -> &'static str {
        match self {
            Kind::K8sGateway => "Gateway.gateway.networking.k8s.io",
            k => k.as_str(),
        }
    }

    /// The API group (empty for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Gateway
            | Kind::ServiceEntry
            | Kind::Sidecar
            | Kind::EnvoyFilter => "networking.istio.io",
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                "security.istio.io"
            }
            Kind::Namespace | Kind::Service | Kind::ServiceAccount | Kind::Pod => "",
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet => "apps",
            Kind::K8sGateway | Kind::HttpRoute | Kind::GrpcRoute | Kind::ReferenceGrant => {
                "gateway.networking.k8s.io"
            }
            Kind::Telemetry => "telemetry.istio.io",
            Kind::WasmPlugin => "extensions.istio.io",
        }
    }

    /// Versions served for this kind.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::EnvoyFilter => return &["v1alpha3"],
            Kind::Telemetry => return &["v1", "v1alpha1"],
            Kind::WasmPlugin => return &["v1alpha1"],
            _ => {}
        }
        match self.group() {
            "networking.istio.io" => &["v1", "v1beta1", "v1alpha3"],
            "security.istio.io" => &["v1", "v1beta1"],
            "gateway.networking.k8s.io" => &["v1", "v1beta1", "v1alpha2"],
            _ => &["v1"],
        }
    }

    /// The kind named `kind` in API group `group`, if meshc models it.
    pub fn lookup(group: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind && k.group() == group)
    }

    /// The JSON Schema of a whole document of this kind, from the typed model.
    ///
    /// Optional fields are not nullable: Kubernetes prunes `null` values before
    /// validating, and so does meshc ([`crate::yaml::Node::to_json`]). Without
    /// the `anyOf [T, null]` wrapper, errors point inside the value.
    pub fn schema(self) -> serde_json::Value {
        fn schema_of<T: JsonSchema>() -> serde_json::Value {
            let mut v = schemars::schema_for!(T).to_value();
            strip_null(&mut v);
            v
        }
        match self {
            Kind::VirtualService => schema_of::<IstioObject<VirtualServiceSpec>>(),
            Kind::DestinationRule => schema_of::<IstioObject<DestinationRuleSpec>>(),
            Kind::Gateway => schema_of::<IstioObject<GatewaySpec>>(),
            Kind::ServiceEntry => schema_of::<IstioObject<ServiceEntrySpec>>(),
            Kind::Sidecar => schema_of::<IstioObject<SidecarSpec>>(),
            Kind::PeerAuthentication => schema_of::<IstioObject<PeerAuthenticationSpec>>(),
            Kind::AuthorizationPolicy => schema_of::<IstioObject<AuthorizationPolicySpec>>(),
            Kind::RequestAuthentication => schema_of::<IstioObject<RequestAuthenticationSpec>>(),
            Kind::EnvoyFilter => schema_of::<IstioObject<EnvoyFilterSpec>>(),
            Kind::Telemetry => schema_of::<IstioObject<TelemetrySpec>>(),
            Kind::WasmPlugin => schema_of::<IstioObject<WasmPluginSpec>>(),
            Kind::Service => schema_of::<KubeObject<ServiceSpec>>(),
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet => {
                schema_of::<KubeObject<WorkloadSpec>>()
            }
            Kind::Pod => schema_of::<KubeObject<PodSpec>>(),
            Kind::Namespace | Kind::ServiceAccount => schema_of::<KubeObject<serde_json::Value>>(),
            Kind::K8sGateway => schema_of::<KubeObject<K8sGatewaySpec>>(),
            Kind::HttpRoute | Kind::GrpcRoute => schema_of::<KubeObject<RouteSpec>>(),
            Kind::ReferenceGrant => schema_of::<KubeObject<ReferenceGrantSpec>>(),
        }
    }
}

/// Remove the `null` alternatives schemars adds for `Option<T>`:
/// `{"anyOf": [T, {"type": "null"}], ...}` becomes `T` with the other keys, and
/// `"type": [t, "null"]` becomes `t`.
fn strip_null(v: &mut serde_json::Value) {
    use serde_json::Value as J;
    match v {
        J::Object(map) => {
            if let Some(J::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let t = types.pop().expect("one type");
                    map.insert("type".into(), t);
                }
            }
            let is_null = |s: &J| s.get("type").and_then(J::as_str) == Some("null");
            if let Some(J::Array(alts)) = map.get("anyOf")
                && alts.len() == 2
                && alts.iter().any(is_null)
            {
                let inner = alts
                    .iter()
                    .find(|a| !is_null(a))
                    .cloned()
                    .expect("one non-null alternative");
                map.remove("anyOf");
                if let J::Object(inner) = inner {
                    for (k, x) in inner {
                        map.entry(k).or_insert(x);
                    }
                }
            }
            map.values_mut().for_each(strip_null);
        }
        J::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}

/// A typed spec.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs, clippy::large_enum_variant)]
pub enum Spec {
    VirtualService(VirtualServiceSpec),
    /// Boxed, as are the other specs much larger than the rest: a `Spec` is
    /// as large as its largest variant, and a repository holds one per
    /// resource.
    DestinationRule(Box<DestinationRuleSpec>),
    Gateway(GatewaySpec),
    ServiceEntry(ServiceEntrySpec),
    Sidecar(Box<SidecarSpec>),
    PeerAuthentication(PeerAuthenticationSpec),
    AuthorizationPolicy(AuthorizationPolicySpec),
    RequestAuthentication(RequestAuthenticationSpec),
    EnvoyFilter(EnvoyFilterSpec),
    Telemetry(TelemetrySpec),
    WasmPlugin(Box<WasmPluginSpec>),
    Service(ServiceSpec),
    Workload(WorkloadSpec),
    Pod(PodSpec),
    K8sGateway(K8sGatewaySpec),
    /// HTTPRoute and GRPCRoute.
    Route(RouteSpec),
    ReferenceGrant(ReferenceGrantSpec),
    /// Namespace and ServiceAccount: metadata only.
    None,
}

impl Destination {
    /// `port.number`, when given.
    pub fn port_number(&self) -> Option<i64> {
        self.port.as_ref().and_then(|p| p.number)
    }
}

impl Spec {
    /// Deserialise the spec of a document of `kind` (already schema-checked)
    /// from its JSON.
    pub fn from_json(
        kind: Kind,
        doc: serde_json::Value,
    ) -> Result<(ObjectMeta, Spec), serde_json::Error> {
        Self::decode(kind, doc)
    }

    /// The same, straight from the document's YAML tree: what
    /// [`Spec::from_json`] gives for [`crate::yaml::Node::to_json`], without
    /// building that JSON.
    pub fn from_node(
        kind: Kind,
        doc: &crate::yaml::Node,
    ) -> Result<(ObjectMeta, Spec), serde_json::Error> {
        Self::decode(kind, crate::yaml::de::NodeDe(doc))
    }

    fn decode<'de, D>(kind: Kind, doc: D) -> Result<(ObjectMeta, Spec), serde_json::Error>
    where
        D: serde::Deserializer<'de, Error = serde_json::Error>,
    {
        fn istio<'de, S: Deserialize<'de> + Default, D>(
            doc: D,
            f: fn(S) -> Spec,
        ) -> Result<(ObjectMeta, Spec), serde_json::Error>
        where
            D: serde::Deserializer<'de, Error = serde_json::Error>,
        {
            let o = IstioObject::<S>::deserialize(doc)?;
            Ok((o.metadata, f(o.spec.unwrap_or_default())))
        }
        fn kube<'de, S: Deserialize<'de> + Default, D>(
            doc: D,
            f: fn(S) -> Spec,
        ) -> Result<(ObjectMeta, Spec), serde_json::Error>
        where
            D: serde::Deserializer<'de, Error = serde_json::Error>,
        {
            let o = KubeObject::<S>::deserialize(doc)?;
            Ok((o.metadata, f(o.spec.unwrap_or_default())))
        }
        match kind {
            Kind::VirtualService => istio(doc, Spec::VirtualService),
            Kind::DestinationRule => istio(doc, |s| Spec::DestinationRule(Box::new(s))),
            Kind::Gateway => istio(doc, Spec::Gateway),
            Kind::ServiceEntry => istio(doc, Spec::ServiceEntry),
            Kind::Sidecar => istio(doc, |s| Spec::Sidecar(Box::new(s))),
            Kind::PeerAuthentication => istio(doc, Spec::PeerAuthentication),
            Kind::AuthorizationPolicy => istio(doc, Spec::AuthorizationPolicy),
            Kind::RequestAuthentication => istio(doc, Spec::RequestAuthentication),
            Kind::EnvoyFilter => istio(doc, Spec::EnvoyFilter),
            Kind::Telemetry => istio(doc, Spec::Telemetry),
            Kind::WasmPlugin => istio(doc, |s| Spec::WasmPlugin(Box::new(s))),
            Kind::Service => kube(doc, Spec::Service),
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet => kube(doc, Spec::Workload),
            Kind::Pod => kube(doc, Spec::Pod),
            Kind::Namespace | Kind::ServiceAccount => kube(doc, |_: serde_json::Value| Spec::None),
            Kind::K8sGateway => kube(doc, Spec::K8sGateway),
            Kind::HttpRoute | Kind::GrpcRoute => kube(doc, Spec::Route),
            Kind::ReferenceGrant => kube(doc, Spec::ReferenceGrant),
        }
    }
}
