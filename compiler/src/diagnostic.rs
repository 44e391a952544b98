//! The diagnostic model, shared by every rule and every renderer.
//!
//! A diagnostic is data: a rule (code, severity, docs), a message, a primary label
//! (span plus YAML path), related labels, help, the resource it is about and the
//! upstream codes it is equivalent to. Rendering lives in `meshc-validator`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::rules::RuleMeta;
use crate::source::Span;
use crate::yaml::YamlPath;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; never fails a run.
    Info,
    /// Likely a mistake; fails a run with `--deny-warnings`.
    Warning,
    /// Breaks traffic or is rejected by the mesh; fails a run.
    Error,
}

impl Severity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
    /// Parse `error`, `warning` or `info`.
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "error" => Some(Severity::Error),
            "warning" | "warn" => Some(Severity::Warning),
            "info" => Some(Severity::Info),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A check of another tool that a meshc finding corresponds to: an
/// `istioctl analyze` message code with the analyzer that emits it, or a Kiali
/// validation code with its checker. Conformance scoring matches on both,
/// because one IST code (IST0101) is emitted by many analyzers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Upstream {
    /// `IST0101`, `KIA1107`.
    pub code: &'static str,
    /// The analyzer or checker, `virtualservice.DestinationRuleAnalyzer`.
    pub check: &'static str,
}

/// The distinct codes of `upstream`, in order.
pub fn distinct_codes<'a>(upstream: impl IntoIterator<Item = &'a Upstream>) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Vec::new();
    for u in upstream {
        if !v.contains(&u.code) {
            v.push(u.code);
        }
    }
    v
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code, self.check)
    }
}

/// A span with an optional YAML path and label text.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// The YAML path of the node, when known.
    pub path: Option<YamlPath>,
    /// Text shown at the span.
    pub message: Option<String>,
}

impl Label {
    /// A label at `span`.
    pub fn new(span: Span) -> Self {
        Label {
            span,
            path: None,
            message: None,
        }
    }
    /// Set the YAML path.
    pub fn with_path(mut self, path: YamlPath) -> Self {
        self.path = Some(path);
        self
    }
    /// Set the text.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

/// One finding.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// The rule that found it (code, name, docs, equivalents).
    pub rule: &'static RuleMeta,
    /// Effective severity (the rule's default unless configured otherwise).
    pub severity: Severity,
    /// One line saying what is wrong, naming the offending values.
    pub message: String,
    /// Where it is.
    pub primary: Label,
    /// Other places that explain it.
    pub related: Vec<Label>,
    /// How to fix it.
    pub help: Option<String>,
    /// The resource, as `Kind namespace/name`.
    pub resource: Option<String>,
    /// The upstream checks this finding corresponds to (a subset of the rule's).
    pub upstream: Vec<Upstream>,
}

impl Diagnostic {
    /// A diagnostic of `rule` at `primary`, with the rule's default severity.
    pub fn new(rule: &'static RuleMeta, message: impl Into<String>, primary: Label) -> Self {
        Diagnostic {
            rule,
            severity: rule.severity,
            message: message.into(),
            primary,
            related: Vec::new(),
            help: None,
            resource: None,
            upstream: rule.equivalents.to_vec(),
        }
    }
    /// Add a related label.
    pub fn with_related(mut self, label: Label) -> Self {
        self.related.push(label);
        self
    }
    /// Set the help text.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    /// Set the resource.
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }
    /// Keep only the upstream equivalents with these codes: a rule that covers
    /// several upstream checks says which one this finding is.
    pub fn with_upstream(mut self, codes: &[&str]) -> Self {
        self.upstream.retain(|u| codes.contains(&u.code));
        self
    }
    /// Keep only the upstream equivalents emitted by these analyzers or
    /// checkers: for a rule whose one code stands for several of them.
    pub fn with_upstream_checks(mut self, checks: &[&str]) -> Self {
        self.upstream.retain(|u| checks.contains(&u.check));
        self
    }
    /// The distinct upstream codes, in the rule's order.
    pub fn upstream_codes(&self) -> Vec<&'static str> {
        distinct_codes(&self.upstream)
    }
    /// The rule's code, such as `MC0101`.
    pub fn code(&self) -> &'static str {
        self.rule.code
    }
}
