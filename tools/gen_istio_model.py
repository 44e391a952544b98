#!/usr/bin/env python3
"""Generate compiler/src/model/istio_gen.rs from Istio's upstream CRD schemas.

Why generated: Istio's API has hundreds of fields and constraints; hand-written
structs drift from upstream. This script turns each CRD's `spec` schema into Rust
structs deriving serde (with `deny_unknown_fields`) and schemars, carrying every
JSON-Schema constraint (bounds, lengths, patterns, enums, oneOf/anyOf/allOf) as
schemars `extend` attributes, so that the JSON Schema schemars generates from the
types is the upstream schema. CEL rules (`x-kubernetes-validations`) are not
JSON Schema and are left to meshc's own rules.

Usage: python3 tools/gen_istio_model.py ../shared/schemas/istio/crd-all.gen.yaml \
           > compiler/src/model/istio_gen.rs && cargo fmt
Needs PyYAML. Output is deterministic.
"""
import json
import re
import sys

import yaml

KINDS = [
    "VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "Sidecar",
    "PeerAuthentication", "AuthorizationPolicy", "RequestAuthentication", "EnvoyFilter",
    "Telemetry", "WasmPlugin",
]

# Friendly names (Istio's proto message names) for schemas at these paths.
NAMES = {
    "VirtualService": "VirtualServiceSpec",
    "VirtualService.http[]": "HttpRoute",
    "VirtualService.http[].match[]": "HttpMatchRequest",
    "VirtualService.http[].route[]": "HttpRouteDestination",
    "VirtualService.http[].route[].destination": "Destination",
    "VirtualService.http[].mirror": "Destination",
    "VirtualService.http[].mirror.port": "PortSelector",
    "VirtualService.http[].route[].destination.port": "PortSelector",
    "VirtualService.http[].match[].uri": "StringMatch",
    "VirtualService.http[].corsPolicy.allowOrigins[]": "StringMatch",
    "VirtualService.tcp[].route[]": "RouteDestination",
    "VirtualService.http[].fault.abort": "Abort",
    "VirtualService.http[].fault.delay": "Delay",
    "VirtualService.http[].fault.abort.percentage": "Percent",
    "VirtualService.http[].retries": "HttpRetry",
    "VirtualService.http[].fault": "HttpFaultInjection",
    "VirtualService.http[].redirect": "HttpRedirect",
    "VirtualService.http[].rewrite": "HttpRewrite",
    "VirtualService.http[].corsPolicy": "CorsPolicy",
    "VirtualService.http[].headers": "Headers",
    "VirtualService.http[].headers.request": "HeaderOperations",
    "VirtualService.http[].delegate": "Delegate",
    "VirtualService.http[].directResponse": "HttpDirectResponse",
    "VirtualService.http[].mirrors[]": "HttpMirrorPolicy",
    "VirtualService.http[].mirrorPercentage": "Percent",
    "VirtualService.tls[]": "TlsRoute",
    "VirtualService.tls[].match[]": "TlsMatchAttributes",
    "VirtualService.tls[].route[]": "RouteDestination",
    "VirtualService.tcp[]": "TcpRoute",
    "VirtualService.tcp[].match[]": "L4MatchAttributes",
    "DestinationRule": "DestinationRuleSpec",
    "DestinationRule.trafficPolicy": "TrafficPolicy",
    "DestinationRule.subsets[]": "Subset",
    "DestinationRule.trafficPolicy.tls": "ClientTlsSettings",
    "DestinationRule.trafficPolicy.loadBalancer": "LoadBalancerSettings",
    "DestinationRule.trafficPolicy.connectionPool": "ConnectionPoolSettings",
    "DestinationRule.trafficPolicy.outlierDetection": "OutlierDetection",
    "DestinationRule.trafficPolicy.portLevelSettings[]": "PortTrafficPolicy",
    "DestinationRule.trafficPolicy.connectionPool.http": "HttpSettings",
    "DestinationRule.trafficPolicy.connectionPool.tcp": "TcpSettings",
    "DestinationRule.trafficPolicy.tls.mode": "ClientTlsMode",
    "DestinationRule.trafficPolicy.loadBalancer.simple": "SimpleLb",
    "DestinationRule.workloadSelector": "WorkloadSelector",
    "Gateway": "GatewaySpec",
    "Gateway.servers[]": "Server",
    "Gateway.servers[].port": "GatewayPort",
    "Gateway.servers[].tls": "ServerTlsSettings",
    "ServiceEntry": "ServiceEntrySpec",
    "ServiceEntry.ports[]": "ServicePort",
    "ServiceEntry.endpoints[]": "WorkloadEntrySpec",
    "Sidecar": "SidecarSpec",
    "Sidecar.egress[]": "IstioEgressListener",
    "Sidecar.ingress[]": "IstioIngressListener",
    "PeerAuthentication": "PeerAuthenticationSpec",
    "PeerAuthentication.mtls": "PeerAuthenticationMutualTls",
    "PeerAuthentication.mtls.mode": "MutualTlsMode",
    "PeerAuthentication.selector": "WorkloadSelector",
    "AuthorizationPolicy": "AuthorizationPolicySpec",
    "AuthorizationPolicy.action": "AuthorizationAction",
    "AuthorizationPolicy.rules[]": "AuthorizationRule",
    "AuthorizationPolicy.rules[].from[]": "RuleFrom",
    "AuthorizationPolicy.rules[].from[].source": "Source",
    "AuthorizationPolicy.rules[].to[]": "RuleTo",
    "AuthorizationPolicy.rules[].to[].operation": "Operation",
    "AuthorizationPolicy.rules[].when[]": "Condition",
    "AuthorizationPolicy.targetRef": "PolicyTargetReference",
    "RequestAuthentication": "RequestAuthenticationSpec",
    "RequestAuthentication.jwtRules[]": "JwtRule",
    "EnvoyFilter": "EnvoyFilterSpec",
    "EnvoyFilter.configPatches[]": "EnvoyConfigObjectPatch",
    "EnvoyFilter.configPatches[].patch": "EnvoyFilterPatch",
    "EnvoyFilter.configPatches[].match": "EnvoyConfigObjectMatch",
    "EnvoyFilter.configPatches[].applyTo": "EnvoyFilterApplyTo",
    "EnvoyFilter.configPatches[].patch.operation": "EnvoyFilterPatchOperation",
    "EnvoyFilter.configPatches[].match.proxy": "EnvoyFilterProxyMatch",
    "EnvoyFilter.configPatches[].match.listener": "EnvoyFilterListenerMatch",
    "Telemetry": "TelemetrySpec",
    "WasmPlugin": "WasmPluginSpec",
}

RUST_KEYWORDS = {"match", "type", "ref", "mod", "use", "in", "loop", "move", "self", "static", "struct", "where", "async", "await", "do", "box", "final", "override", "priv", "try", "yield", "abstract", "become", "macro", "typeof", "unsized", "virtual", "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for", "if", "impl", "let", "mut", "pub", "return", "super", "trait", "true", "unsafe", "while", "dyn", "gen"}

CONSTRAINTS = ["maximum", "minimum", "maxLength", "minLength", "maxItems", "minItems",
               "maxProperties", "minProperties", "pattern", "exclusiveMinimum", "exclusiveMaximum"]
COMBINATORS = ["oneOf", "anyOf", "allOf", "not"]

structs = {}   # canonical schema json -> name
order = []     # (name, rust source)
used_names = set()


def pascal(s):
    s = re.sub(r"[^A-Za-z0-9]+", " ", s)
    return "".join(w[:1].upper() + w[1:] for w in s.split())


def snake(s):
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    s = re.sub(r"[^A-Za-z0-9]+", "_", s).lower().strip("_")
    if s in RUST_KEYWORDS:
        return "r#" + s
    if s[:1].isdigit():
        s = "n" + s
    return s


def canon(schema):
    """Schema without descriptions, for structural de-duplication."""
    if isinstance(schema, dict):
        return {k: canon(v) for k, v in sorted(schema.items()) if k != "description"}
    if isinstance(schema, list):
        return [canon(v) for v in schema]
    return schema


def pure_json(schema):
    """Upstream schema fragment as plain JSON Schema (for extend attributes)."""
    if isinstance(schema, dict):
        out = {}
        for k, v in schema.items():
            if k == "description" or k.startswith("x-kubernetes-") or k == "format":
                continue
            out[k] = pure_json(v)
        if schema.get("x-kubernetes-int-or-string"):
            return {"anyOf": [{"type": "integer"}, {"type": "string"}]}
        return out
    if isinstance(schema, list):
        return [pure_json(v) for v in schema]
    return schema


def lit(v):
    """A `json!` literal; integers beyond i32 need a suffix there."""
    if isinstance(v, bool) or v is None or isinstance(v, (str, float)):
        return json.dumps(v)
    if isinstance(v, int):
        return f"{v}_i64" if not -2**31 <= v < 2**31 else str(v)
    if isinstance(v, list):
        return "[" + ", ".join(lit(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)}: {lit(x)}" for k, x in v.items()) + "}"


def unique(name):
    base, n = name, 2
    while name in used_names:
        name = f"{base}{n}"
        n += 1
    used_names.add(name)
    return name


def doc_lines(schema, indent=""):
    d = (schema.get("description") or "").strip().split("\n")[0].strip()
    if not d:
        return ""
    d = d.replace("*/", "* /")
    return f"{indent}/// {d}\n"


def is_leaf(schema):
    """True when the schema holds no object with properties (a generated struct)."""
    if schema.get("type") == "object" and "properties" in schema:
        return False
    if schema.get("type") == "array":
        return is_leaf(schema.get("items", {}))
    if schema.get("type") == "object" and isinstance(schema.get("additionalProperties"), dict):
        return is_leaf(schema["additionalProperties"])
    return True


def rust_type(schema, path):
    if schema.get("x-kubernetes-int-or-string"):
        return "IntOrString"
    t = schema.get("type")
    if t == "object":
        if "properties" in schema:
            return gen_struct(schema, path)
        ap = schema.get("additionalProperties")
        if isinstance(ap, dict):
            return f"Map<String, {rust_type(ap, path + '{}')}>"
        return "serde_json::Value"
    if t == "array":
        return f"Vec<{rust_type(schema.get('items', {}), path + '[]')}>"
    if t == "string":
        if "enum" in schema:
            return gen_enum(schema, path)
        return "String"
    if t == "integer":
        return "i64"
    if t == "number":
        return "f64"
    if t == "boolean":
        return "bool"
    return "serde_json::Value"


def type_name(path):
    # The same messages recur under subsets and port-level settings; name them once.
    path = path.replace(".subsets[].trafficPolicy", ".trafficPolicy")
    if not path.endswith("portLevelSettings[]"):
        path = path.replace(".portLevelSettings[].", ".")
    if path in NAMES:
        return NAMES[path]
    kind, _, rest = path.partition(".")
    parts = [p for p in re.split(r"[.\[\]{}]+", rest) if p]
    return pascal(kind + " " + " ".join(parts[-2:]))


def gen_enum(schema, path):
    key = json.dumps(canon(schema), sort_keys=True)
    if key in structs:
        return structs[key]
    name = unique(type_name(path))
    structs[key] = name
    src = doc_lines(schema)
    src += "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]\n"
    src += f"pub enum {name} {{\n"
    seen = set()
    for v in schema["enum"]:
        ident = pascal(v.lower()) if v.isupper() or "_" in v else pascal(v)
        if not ident or ident[0].isdigit():
            ident = "V" + ident
        ident0, n = ident, 2
        while ident in seen:
            ident = f"{ident0}{n}"
            n += 1
        seen.add(ident)
        src += f"    #[serde(rename = {lit(v)})]\n    {ident},\n"
    src += "}\n"
    order.append((name, src))
    return name


def gen_struct(schema, path):
    key = json.dumps(canon(schema), sort_keys=True)
    if key in structs:
        return structs[key]
    name = unique(type_name(path))
    structs[key] = name
    slot = len(order)
    order.append((name, None))
    required = set(schema.get("required", []))
    fields = []
    idents = set()
    for fname, fs in schema["properties"].items():
        fpath = f"{path}.{fname}"
        ty = rust_type(fs, fpath)
        attrs = [f"rename = {lit(fname)}"]
        if fname not in required:
            # A message of four fields or more is boxed when optional: an
            # absent one then costs a pointer, not its size (an HTTPRoute held
            # its CORS policy, fault, redirect, rewrite... inline: 1.2 KB; a
            # subset its traffic policy: 1.4 KB).
            # Small messages (a string match, a destination) stay inline:
            # boxing them would cost an allocation each where present.
            if fs.get("type") == "object" and len(fs.get("properties", {})) >= 4:
                ty = f"Box<{ty}>"
            ty = f"Option<{ty}>"
            attrs += ["default", 'skip_serializing_if = "Option::is_none"']
        ext = []
        for c in CONSTRAINTS + COMBINATORS:
            if c in fs and not ("properties" in fs and c in COMBINATORS):
                ext.append((c, pure_json(fs[c])))
        if fs.get("type") == "array" and is_leaf(fs.get("items", {})):
            items = pure_json(fs.get("items", {}))
            if any(c in items for c in CONSTRAINTS + COMBINATORS + ["enum"]):
                ext.append(("items", items))
        if fs.get("type") == "object" and isinstance(fs.get("additionalProperties"), dict) \
                and is_leaf(fs["additionalProperties"]):
            ap = pure_json(fs["additionalProperties"])
            if any(c in ap for c in CONSTRAINTS + COMBINATORS + ["enum"]):
                ext.append(("additionalProperties", ap))
        f = doc_lines(fs, "    ")
        f += f"    #[serde({', '.join(attrs)})]\n"
        if ext:
            f += "    #[schemars(extend(" + ", ".join(f"{lit(k)} = {lit(v)}" for k, v in ext) + "))]\n"
        ident = snake(fname)
        while ident in idents:  # `mirrorPercent` and `mirror_percent` both exist upstream
            ident += "_"
        idents.add(ident)
        f += f"    pub {ident}: {ty},\n"
        fields.append(f)
    src = doc_lines(schema)
    src += "#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]\n"
    src += "#[serde(deny_unknown_fields)]\n"
    ext = [(c, pure_json(schema[c])) for c in CONSTRAINTS + COMBINATORS if c in schema]
    if ext:
        src += "#[schemars(extend(" + ", ".join(f"{lit(k)} = {lit(v)}" for k, v in ext) + "))]\n"
    src += f"pub struct {name} {{\n" + "".join(fields) + "}\n"
    order[slot] = (name, src)
    return name


def main():
    docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    by_kind = {d["spec"]["names"]["kind"]: d for d in docs}
    for kind in KINDS:
        spec = by_kind[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        gen_struct(spec, kind)
    # Required fields have no Default; drop the derive where a required field lacks one.
    out = ["// @generated by tools/gen_istio_model.py from Istio's crd-all.gen.yaml. Do not edit.\n",
           "//! Istio's networking and security API, generated from the upstream CRD schemas.\n",
           "#![allow(missing_docs, clippy::all)]\n",
           "use super::Map;\n",
           "use schemars::JsonSchema;\nuse serde::{Deserialize, Serialize};\n",
           ]
    body = "".join("\n" + src for _, src in order)
    if "IntOrString" in body:
        out.append("use super::IntOrString;\n")
    out.append(body)
    sys.stdout.write("".join(out))


main()
