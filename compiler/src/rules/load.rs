//! Load and schema rules (`MC00xx`): raised by the loader and the schema stage,
//! not by semantic checks.

use crate::declare_rule;

declare_rule! {
    /// ## What it does
    /// Reports text that is not valid YAML: unclosed brackets or quotes, bad
    /// indentation, tabs used for indentation, aliases without anchors.
    ///
    /// ## Why is this bad?
    /// `kubectl apply` rejects the whole file, and a GitOps controller stalls on it.
    /// Other documents in the same file are still checked.
    ///
    /// ## Example
    /// ```yaml
    /// spec:
    ///   hosts: [reviews
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    /// spec:
    ///   hosts: [reviews]
    /// ```
    pub static YAML_SYNTAX = {
        code: "MC0001",
        name: "yaml-syntax",
        group: Load,
        severity: Error,
        summary: "The document is not valid YAML",
        equivalents: [],
    };
}

declare_rule! {
    /// ## What it does
    /// Reports a mapping that sets the same key twice.
    ///
    /// ## Why is this bad?
    /// YAML forbids it, yet many parsers keep the last value silently, so the
    /// first value looks applied in review but is not. `kubectl` rejects it.
    ///
    /// ## Example
    /// ```yaml
    /// spec:
    ///   mtls:
    ///     mode: STRICT
    ///     mode: PERMISSIVE
    /// ```
    ///
    /// ## Fix
    /// Keep one of the keys:
    /// ```yaml
    /// spec:
    ///   mtls:
    ///     mode: STRICT
    /// ```
    pub static DUPLICATE_KEY = {
        code: "MC0002",
        name: "duplicate-key",
        group: Load,
        severity: Error,
        summary: "A mapping sets the same key twice",
        equivalents: [],
    };
}

declare_rule! {
    /// ## What it does
    /// Reports a document that exceeds meshc's safety limits: alias expansion
    /// beyond the node budget (an "alias bomb"), or nesting deeper than any mesh
    /// resource needs.
    ///
    /// ## Why is this bad?
    /// A few lines of anchors and aliases can expand to billions of nodes and take
    /// down every tool that reads the repository, the API server included.
    ///
    /// ## Example
    /// ```yaml
    /// a: &a [x, x, x, x, x, x, x, x, x]
    /// b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    /// c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    /// ```
    ///
    /// ## Fix
    /// Write the values out, or reuse less; policy resources never need this.
    /// ```yaml
    /// a: [x, x]
    /// ```
    pub static YAML_LIMITS = {
        code: "MC0003",
        name: "yaml-limits",
        group: Load,
        severity: Error,
        summary: "The document exceeds a safety limit (alias expansion, nesting)",
        equivalents: [],
    };
}

declare_rule! {
    /// ## What it does
    /// Reports a file meshc cannot read as policy: not UTF-8, larger than the size
    /// limit (16 MiB by default), or unreadable.
    ///
    /// ## Why is this bad?
    /// Kubernetes manifests are UTF-8 text; a binary or a huge generated file in a
    /// policy repository is almost always committed by mistake.
    ///
    /// ## Example
    /// ```yaml
    /// # a file saved as Latin-1:
    /// metadata:
    ///   name: caf\xe9
    /// ```
    ///
    /// ## Fix
    /// Save the file as UTF-8, or move it out of the policy paths.
    /// ```yaml
    /// metadata:
    ///   name: cafe
    /// ```
    pub static UNREADABLE_FILE = {
        code: "MC0004",
        name: "unreadable-file",
        group: Load,
        severity: Error,
        summary: "The file is not UTF-8, too large, or unreadable",
        equivalents: [],
    };
}

declare_rule! {
    /// ## What it does
    /// Checks each Istio resource against its schema: unknown fields, wrong types,
    /// values outside their enum or range, and fields that exclude each other.
    /// The schema is generated from meshc's typed model, which is generated from
    /// Istio's own CRDs, so it agrees with what the API server accepts.
    ///
    /// ## Why is this bad?
    /// The API server rejects the resource, or (with lax validation) silently drops
    /// a misspelt field such as `timout`, so the policy is not what it reads.
    ///
    /// ## Example
    /// ```yaml
    /// apiVersion: networking.istio.io/v1
    /// kind: VirtualService
    /// spec:
    ///   http:
    ///   - timout: 5s
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    ///   http:
    ///   - timeout: 5s
    /// ```
    pub static SCHEMA = {
        code: "MC0010",
        name: "schema",
        group: Load,
        severity: Error,
        summary: "The resource does not match its schema",
        equivalents: [("IST0106", "schema.ValidationAnalyzer")],
    };
}

declare_rule! {
    /// ## What it does
    /// Reports a document without `apiVersion`, `kind` or `metadata.name`, or
    /// with values of the wrong type there.
    ///
    /// ## Why is this bad?
    /// Nothing can apply or reference a resource without its identity.
    ///
    /// ## Example
    /// ```yaml
    /// apiVersion: networking.istio.io/v1
    /// kind: DestinationRule
    /// spec:
    ///   host: reviews
    /// ```
    ///
    /// ## Fix
    /// ```yaml
    /// metadata:
    ///   name: reviews
    /// ```
    pub static RESOURCE_IDENTITY = {
        code: "MC0011",
        name: "resource-identity",
        group: Load,
        severity: Error,
        summary: "The document lacks apiVersion, kind or metadata.name",
        equivalents: [],
    };
}

declare_rule! {
    /// ## What it does
    /// Reports two documents that declare the same kind, namespace and name.
    ///
    /// ## Why is this bad?
    /// Only one of them exists in the cluster; which one depends on apply order.
    ///
    /// ## Example
    /// ```yaml
    /// kind: VirtualService
    /// metadata: {name: reviews, namespace: shop}
    /// ---
    /// kind: VirtualService
    /// metadata: {name: reviews, namespace: shop}
    /// ```
    ///
    /// ## Fix
    /// Merge the two resources or rename one.
    /// ```yaml
    /// metadata: {name: reviews-canary, namespace: shop}
    /// ```
    pub static DUPLICATE_RESOURCE = {
        code: "MC0012",
        name: "duplicate-resource",
        group: Load,
        severity: Error,
        summary: "Two documents declare the same resource",
        equivalents: [],
    };
}

declare_rule! {
    /// ## What it does
    /// Reports a rule code in a `meshc.dev/ignore` annotation or in `meshc.toml`
    /// that names no rule.
    ///
    /// ## Why is this bad?
    /// A misspelt suppression suppresses nothing, and the intent is lost.
    ///
    /// ## Example
    /// ```yaml
    /// metadata:
    ///   annotations:
    ///     meshc.dev/ignore: "MC9999"
    /// ```
    ///
    /// ## Fix
    /// Use a code that `meshc rules` lists.
    /// ```yaml
    ///     meshc.dev/ignore: "MC0101"
    /// ```
    pub static UNKNOWN_CODE = {
        code: "MC0020",
        name: "unknown-code",
        group: Load,
        severity: Warning,
        summary: "A suppression or configuration names an unknown rule code",
        equivalents: [],
    };
}
