//! The rule catalogue: one file per rule, one table of codes.
//!
//! Codes are `MC` plus four digits, grouped by hundreds: `MC00xx` loading and
//! schema, `MC01xx` references, `MC02xx` routing, `MC03xx` mTLS, `MC04xx`
//! authorization, `MC05xx` resilience. A code is never reused. Each rule's doc
//! comment (What it does / Why is this bad? / Example / Fix) is kept as data by
//! [`declare_rule!`], so `meshc explain` prints exactly what the source says.

use crate::analysis::parts::*;
use crate::analysis::{Context, RegistryDelta, Resource};
use crate::diagnostic::{Diagnostic, Severity, Upstream};
use crate::incremental::Change;
use crate::model::Kind;
// The kinds `Reach::Named` and `Reach::HostNamespace` look into.
use crate::naming::NAMING;

pub mod authorization;
pub mod deprecated_field;
pub mod load;
pub mod mtls;
pub mod references;
pub mod resilience;
pub mod routing;
pub(crate) mod walk;

/// Which part of the policy a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// Reading files, YAML and schemas.
    Load,
    /// Names that must resolve to something.
    References,
    /// Traffic routing.
    Routing,
    /// Mutual TLS.
    Mtls,
    /// Authorization.
    Authorization,
    /// Retries, timeouts, circuit breaking.
    Resilience,
}

impl Group {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Load => "load",
            Group::References => "references",
            Group::Routing => "routing",
            Group::Mtls => "mtls",
            Group::Authorization => "authorization",
            Group::Resilience => "resilience",
        }
    }
}

/// A rule's identity and documentation.
#[derive(Debug)]
pub struct RuleMeta {
    /// Stable code, `MC` + 4 digits.
    pub code: &'static str,
    /// Kebab-case name.
    pub name: &'static str,
    /// Group.
    pub group: Group,
    /// Default severity.
    pub severity: Severity,
    /// One-line summary.
    pub summary: &'static str,
    /// Equivalent upstream checks (`IST0101` of `virtualservice.DestinationRuleAnalyzer`).
    pub equivalents: &'static [Upstream],
    /// The rule's documentation in Markdown, from its doc comment.
    pub doc: &'static str,
}

impl RuleMeta {
    /// The distinct upstream codes, in order.
    pub fn upstream_codes(&self) -> Vec<&'static str> {
        crate::diagnostic::distinct_codes(self.equivalents)
    }
    /// The documentation with the one leading space of each `///` line removed.
    pub fn documentation(&self) -> String {
        self.doc
            .lines()
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Declare a rule: its doc comment becomes [`RuleMeta::doc`].
#[macro_export]
macro_rules! declare_rule {
    (
        $(#[doc = $doc:literal])*
        pub static $id:ident = {
            code: $code:literal,
            name: $name:literal,
            group: $group:ident,
            severity: $sev:ident,
            summary: $summary:literal,
            equivalents: [$(($eq:literal, $check:literal)),* $(,)?] $(,)?
        };
    ) => {
        $(#[doc = $doc])*
        pub static $id: $crate::rules::RuleMeta = $crate::rules::RuleMeta {
            code: $code,
            name: $name,
            group: $crate::rules::Group::$group,
            severity: $crate::diagnostic::Severity::$sev,
            summary: $summary,
            equivalents: &[$($crate::diagnostic::Upstream { code: $eq, check: $check }),*],
            doc: concat!($($doc, "\n"),*),
        };
    };
}

/// Every rule, ordered by code.
pub static ALL: &[&RuleMeta] = &[
    &load::YAML_SYNTAX,
    &load::DUPLICATE_KEY,
    &load::YAML_LIMITS,
    &load::UNREADABLE_FILE,
    &load::SCHEMA,
    &load::RESOURCE_IDENTITY,
    &load::DUPLICATE_RESOURCE,
    &deprecated_field::DEPRECATED_FIELD,
    &load::UNKNOWN_CODE,
    &references::dangling_subset::DANGLING_SUBSET,
    &references::unknown_host::UNKNOWN_HOST,
    &references::unknown_gateway::UNKNOWN_GATEWAY,
    &references::destination_port::DESTINATION_PORT,
    &references::export_to_namespace::UNKNOWN_EXPORT_NAMESPACE,
    &references::host_not_in_gateway::HOST_NOT_IN_GATEWAY,
    &references::selector_matches_nothing::SELECTOR_MATCHES_NOTHING,
    &references::ambiguous_selector::AMBIGUOUS_SELECTOR,
    &references::subset_selects_nothing::SUBSET_SELECTS_NOTHING,
    &references::port_protocol::UNDECLARED_PORT_PROTOCOL,
    &references::port_protocol::EXTERNAL_NAME_PORT,
    &references::gateway_port::GATEWAY_PORT_NOT_EXPOSED,
    &references::service_ports::PORT_PROTOCOL_CONFLICT,
    &references::service_ports::TARGET_PORT_CONFLICT,
    &references::ambient_sidecar::SIDECAR_IN_AMBIENT,
    &references::gateway_pod_selector::SELECTOR_ON_GATEWAY_PODS,
    &references::gateway_api::UNKNOWN_ROUTE_PARENT,
    &references::gateway_api::UNKNOWN_ROUTE_BACKEND,
    &references::gateway_api::MISSING_REFERENCE_GRANT,
    &references::gateway_api::UNKNOWN_GRANT_NAMESPACE,
    &routing::unreachable_rule::UNREACHABLE_RULE,
    &routing::weight_sum::WEIGHT_SUM,
    &routing::conflicting_hosts::CONFLICTING_VIRTUAL_SERVICES,
    &routing::service_entry_protocol::SERVICE_ENTRY_PROTOCOL,
    &routing::duplicate_destination_rule::DUPLICATE_DESTINATION_RULE,
    &routing::conflicting_gateways::CONFLICTING_GATEWAYS,
    &routing::service_entry_addresses::SERVICE_ENTRY_NEEDS_ADDRESSES,
    &routing::route_destinations::SINGLE_DESTINATION_WEIGHT,
    &routing::route_destinations::DUPLICATE_ROUTE_DESTINATION,
    &routing::duplicate_certificate::DUPLICATE_GATEWAY_CERTIFICATE,
    &routing::gateway_skips_subsets::GATEWAY_SKIPS_SUBSETS,
    &routing::envoy_filter::ENVOY_FILTER_PATCH_ORDER,
    &routing::envoy_filter::ENVOY_FILTER_PATCH_IGNORED,
    &routing::gateway_api_listeners::CONFLICTING_LISTENERS,
    &routing::gateway_api_listeners::DUPLICATE_GATEWAY_ADDRESS,
    &mtls::permissive_leftover::PERMISSIVE_LEFTOVER,
    &mtls::ca_certificate::UNVERIFIED_SERVER,
    &mtls::mode_conflict::MTLS_MODE_CONFLICT,
    &mtls::server_certificate::GATEWAY_SERVER_WITHOUT_CERTIFICATE,
    &authorization::identity_without_mtls::IDENTITY_WITHOUT_MTLS,
    &authorization::unknown_source_namespace::UNKNOWN_SOURCE_NAMESPACE,
    &authorization::unknown_principal::UNKNOWN_PRINCIPAL,
    &authorization::invalid_method::INVALID_METHOD,
    &authorization::denied_allow_rule::DENIED_ALLOW_RULE,
    &authorization::claim_route::CLAIM_ROUTE_WITHOUT_JWT,
    &resilience::retry_amplification::RETRY_AMPLIFICATION,
    &resilience::retry_timeout::RETRIES_EXCEED_TIMEOUT,
    &resilience::outlier_ejects_all::OUTLIER_EJECTS_ALL,
    &resilience::zero_pool_limit::ZERO_POOL_LIMIT,
];

/// Look a rule up by code (case-insensitive) or by name.
pub fn find(code_or_name: &str) -> Option<&'static RuleMeta> {
    ALL.iter()
        .copied()
        .find(|r| r.code.eq_ignore_ascii_case(code_or_name) || r.name == code_or_name)
}

/// What a rule's findings depend on, so that an incremental compile runs
/// again only the rules an edit can affect ([`crate::incremental`]).
///
/// - `registry`: the parts of the registry it reads
///   ([`crate::analysis::parts`]: a Service's ports, a workload's labels...),
///   each with how far a change to them reaches ([`Reach`]). An edit that
///   changes only what the registry copies of some resources patches it in
///   place ([`crate::analysis::Registry::patch`]), and a rule reading a part
///   that changed runs again for the subjects the change reaches (a global
///   rule: in full). Resources that come, go or change places move the
///   registry ([`crate::analysis::Registry::shift`]) and say what they gave
///   it the same way (a namespace that comes into use or goes out of it as
///   `NS_LABELS`).
/// - `reads` and `kinds`: the resources it reads besides its subjects and
///   the registry. A rule that reads more of a Service, ServiceEntry,
///   workload or Namespace than the registry copies (its spec, its
///   metadata) names the kind; so does one that reads Gateways, Gateway API
///   Gateways or Sidecars, whose specs the registry reads again when asked
///   ([`Context::gateway_hosts`], [`Context::istio_gateways`],
///   [`Context::imports`] and so [`Context::applied_together`]). Which
///   gateways exist is read through those kinds too (MC0103 projects them
///   to their names): no part of the registry says it.
#[derive(Clone, Copy)]
pub(crate) enum Deps {
    /// The rule reports on each of its subjects (resources of `subjects`,
    /// which it walks with [`Context::subjects`]) what that subject, the
    /// registry and the resources of `reads` decide, and every finding
    /// names its subject as [`Diagnostic::resource`]. After an edit it runs
    /// for the changed subjects only.
    Local {
        subjects: &'static [Kind],
        reads: &'static [Kind],
        /// What it reads of the resources of `reads`, when not all.
        project: Option<fn(&Resource) -> String>,
        /// The kinds of `reads` whose resources reach only the subjects of
        /// their own namespace (all of them from the root namespace).
        namespaced: &'static [Kind],
        /// The parts of the registry it reads, and how far a change reaches.
        registry: &'static [(u16, Reach)],
    },
    /// The rule's findings depend on the resources of `kinds` together;
    /// with `project`, only on what it returns for each of them.
    Global {
        kinds: &'static [Kind],
        project: Option<fn(&Resource) -> String>,
        /// The parts of the registry it reads: a change to one runs it.
        registry: &'static [(u16, Reach)],
    },
}

/// Which subjects of a local rule a change to a part of the registry
/// reaches ([`RegistryDelta`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Those that name one of the changed hosts (VirtualServices by their
    /// hosts and destinations, DestinationRules by their host; wildcards
    /// either way); subjects of other kinds, all.
    Named,
    /// Those that name a host of one of the changed resources' namespaces,
    /// or a host that is not a Service's (a ServiceEntry host, a wildcard).
    HostNamespace,
    /// AuthorizationPolicies naming, as an exact principal, a service account
    /// a workload left or took (through the principal index,
    /// [`crate::principals`]); subjects of other kinds, all.
    Account,
    /// Those of the changed resources' namespaces, those of the root
    /// namespace (which select across namespaces) and every Gateway (whose
    /// selector does).
    Namespace,
    /// All of them.
    All,
}

/// Every semantic rule, in the order their findings are collected.
type Check = fn(&Context, &mut Vec<Diagnostic>);
const CHECKS: &[(Check, Deps)] = &[
    (
        crate::check_duplicates,
        Deps::Global {
            kinds: &Kind::ALL,
            project: Some(|_| String::new()),
            registry: &[],
        },
    ),
    (
        references::dangling_subset::check,
        Deps::Local {
            subjects: &[Kind::VirtualService],
            reads: &[Kind::DestinationRule],
            project: Some(references::dangling_subset::project),
            namespaced: &[],
            registry: &[(DR_HOST, Reach::Named)],
        },
    ),
    (
        references::unknown_host::check,
        Deps::Local {
            subjects: &[Kind::VirtualService, Kind::DestinationRule],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[(HOST_EXPORT, Reach::Named)],
        },
    ),
    (
        references::unknown_gateway::check,
        Deps::Local {
            subjects: &[Kind::VirtualService],
            reads: &[Kind::Gateway, Kind::K8sGateway],
            project: Some(|r| r.display()),
            namespaced: &[],
            registry: &[],
        },
    ),
    (
        routing::unreachable_rule::check,
        Deps::Local {
            subjects: &[Kind::VirtualService],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[],
        },
    ),
    (
        routing::weight_sum::check,
        Deps::Local {
            subjects: &[Kind::VirtualService],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[],
        },
    ),
    (
        mtls::permissive_leftover::check,
        Deps::Local {
            subjects: &[Kind::PeerAuthentication],
            reads: &[Kind::PeerAuthentication],
            project: None,
            namespaced: &[Kind::PeerAuthentication],
            registry: &[(WL_LABELS | NS_LABELS, Reach::Namespace)],
        },
    ),
    (
        references::destination_port::check,
        Deps::Local {
            subjects: &[Kind::VirtualService],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[(HOST_EXPORT | HOST_PORTS, Reach::Named)],
        },
    ),
    (
        mtls::ca_certificate::check,
        Deps::Local {
            subjects: &[Kind::DestinationRule],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[],
        },
    ),
    (
        references::export_to_namespace::check,
        Deps::Local {
            subjects: &[
                Kind::VirtualService,
                Kind::DestinationRule,
                Kind::ServiceEntry,
            ],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[(NS_LABELS, Reach::All)],
        },
    ),
    (
        routing::conflicting_hosts::check,
        Deps::Global {
            kinds: &[Kind::VirtualService, Kind::Sidecar],
            project: Some(routing::conflicting_hosts::project),
            registry: &[(SE_HOSTS, Reach::All)],
        },
    ),
    (
        routing::service_entry_protocol::check,
        Deps::Global {
            kinds: &[Kind::Sidecar],
            project: None,
            registry: &[(SE_EXPORT | SE_PORTS | SE_HOSTS, Reach::All)],
        },
    ),
    (
        references::host_not_in_gateway::check,
        Deps::Local {
            subjects: &[Kind::VirtualService],
            reads: &[Kind::Gateway, Kind::K8sGateway],
            project: None,
            namespaced: &[],
            registry: &[],
        },
    ),
    (
        references::selector_matches_nothing::check,
        Deps::Local {
            subjects: crate::analysis::SELECTING_KINDS,
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[(WL_SELECTED, Reach::Namespace)],
        },
    ),
    (
        references::ambiguous_selector::check,
        Deps::Local {
            subjects: &[Kind::Sidecar, Kind::PeerAuthentication],
            reads: &[Kind::Sidecar, Kind::PeerAuthentication],
            project: Some(|r| format!("{:?}", r.selection())),
            namespaced: &[Kind::Sidecar, Kind::PeerAuthentication],
            registry: &[(WL_SELECTED, Reach::Namespace)],
        },
    ),
    (
        references::subset_selects_nothing::check,
        Deps::Local {
            subjects: &[Kind::DestinationRule],
            reads: &[Kind::ServiceEntry],
            project: Some(references::subset_selects_nothing::project),
            namespaced: &[],
            registry: &[
                (HOST_EXPORT | SVC_SELECTOR, Reach::Named),
                (WL_LABELS, Reach::HostNamespace),
            ],
        },
    ),
    (
        routing::duplicate_destination_rule::check,
        Deps::Global {
            kinds: &[Kind::DestinationRule, Kind::Sidecar],
            project: Some(routing::duplicate_destination_rule::project),
            registry: &[(DR_HOST | SE_HOSTS, Reach::All)],
        },
    ),
    (
        authorization::identity_without_mtls::check,
        Deps::Local {
            subjects: &[Kind::AuthorizationPolicy],
            reads: &[Kind::PeerAuthentication, Kind::DestinationRule],
            project: Some(crate::mtls::project),
            namespaced: &[Kind::PeerAuthentication],
            registry: &[(SVC_SELECTOR, Reach::Namespace), (DR_HOST, Reach::All)],
        },
    ),
    (
        routing::conflicting_gateways::check,
        Deps::Global {
            kinds: &[Kind::Gateway],
            project: None,
            registry: &[(WL_SELECTED, Reach::All)],
        },
    ),
    (
        references::port_protocol::check,
        Deps::Local {
            subjects: &[Kind::Service],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[],
        },
    ),
    (
        references::gateway_port::check,
        Deps::Global {
            kinds: &[Kind::Service, Kind::Gateway],
            project: Some(references::gateway_port::project),
            registry: &[(WL_SELECTED | SVC_SELECTOR | SVC_PORTS, Reach::All)],
        },
    ),
    (
        routing::service_entry_addresses::check,
        Deps::Local {
            subjects: &[Kind::ServiceEntry],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[],
        },
    ),
    (
        authorization::unknown_source_namespace::check,
        Deps::Local {
            subjects: &[Kind::AuthorizationPolicy],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[(NS_LABELS, Reach::All)],
        },
    ),
    (
        authorization::unknown_principal::check,
        Deps::Local {
            subjects: &[Kind::AuthorizationPolicy],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[(WL_SA, Reach::Account), (NS_LABELS, Reach::All)],
        },
    ),
    (
        authorization::invalid_method::check,
        Deps::Local {
            subjects: &[Kind::AuthorizationPolicy],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[],
        },
    ),
    (
        resilience::retry_amplification::check,
        Deps::Global {
            kinds: &[
                Kind::VirtualService,
                Kind::AuthorizationPolicy,
                Kind::Sidecar,
            ],
            project: Some(resilience::retry_amplification::project),
            registry: &[(CALLS, Reach::All)],
        },
    ),
    (
        resilience::retry_timeout::check,
        Deps::Local {
            subjects: &[Kind::VirtualService],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[],
        },
    ),
    (
        resilience::outlier_ejects_all::check,
        Deps::Local {
            subjects: &[Kind::DestinationRule],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[],
        },
    ),
    (
        resilience::zero_pool_limit::check,
        Deps::Local {
            subjects: &[Kind::DestinationRule],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[],
        },
    ),
    (
        mtls::server_certificate::check,
        Deps::Local {
            subjects: &[Kind::Gateway],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[],
        },
    ),
    (
        mtls::mode_conflict::check,
        Deps::Global {
            kinds: &[Kind::PeerAuthentication, Kind::DestinationRule],
            project: Some(crate::mtls::project),
            registry: &[(HOST_EXPORT | SVC_SELECTOR | DR_HOST, Reach::All)],
        },
    ),
    (
        authorization::denied_allow_rule::check,
        Deps::Global {
            kinds: &[Kind::AuthorizationPolicy],
            project: None,
            registry: &[],
        },
    ),
    (
        routing::route_destinations::check,
        Deps::Local {
            subjects: &[Kind::VirtualService],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[],
        },
    ),
    (
        deprecated_field::check,
        Deps::Local {
            subjects: &Kind::ALL,
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[],
        },
    ),
    (
        references::service_ports::check,
        Deps::Local {
            subjects: crate::analysis::WORKLOAD_KINDS,
            reads: &[Kind::Service],
            project: None,
            namespaced: &[Kind::Service],
            registry: &[(SVC_SELECTOR | SVC_PORTS | NS_LABELS, Reach::Namespace)],
        },
    ),
    (
        references::ambient_sidecar::check,
        Deps::Global {
            kinds: &[Kind::Sidecar],
            project: None,
            registry: &[(WL_LABELS | NS_LABELS, Reach::All)],
        },
    ),
    (
        routing::duplicate_certificate::check,
        Deps::Global {
            kinds: &[Kind::Gateway],
            project: None,
            registry: &[],
        },
    ),
    (
        routing::gateway_skips_subsets::check,
        Deps::Global {
            kinds: &[Kind::VirtualService],
            project: None,
            registry: &[],
        },
    ),
    (
        authorization::claim_route::check,
        Deps::Local {
            subjects: &[Kind::VirtualService],
            reads: &[Kind::RequestAuthentication, Kind::Gateway],
            project: None,
            namespaced: &[],
            registry: &[(WL_SELECTED, Reach::All)],
        },
    ),
    (
        references::gateway_pod_selector::check,
        Deps::Local {
            subjects: &[
                Kind::AuthorizationPolicy,
                Kind::RequestAuthentication,
                Kind::Telemetry,
                Kind::WasmPlugin,
            ],
            reads: &[],
            project: None,
            namespaced: &[],
            registry: &[(WL_LABELS, Reach::Namespace)],
        },
    ),
    (
        routing::envoy_filter::check,
        Deps::Global {
            kinds: &[Kind::EnvoyFilter],
            project: None,
            registry: &[],
        },
    ),
    (
        references::gateway_api::check,
        Deps::Global {
            kinds: &[
                Kind::HttpRoute,
                Kind::GrpcRoute,
                Kind::ReferenceGrant,
                Kind::K8sGateway,
            ],
            project: None,
            registry: &[(HOST_EXPORT | HOST_PORTS | NS_LABELS, Reach::All)],
        },
    ),
    (
        routing::gateway_api_listeners::check,
        Deps::Global {
            kinds: &[Kind::K8sGateway],
            project: None,
            registry: &[],
        },
    ),
];

/// How the rules ran, for [`crate::incremental::Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleRuns {
    /// Rules run over the whole repository.
    pub full: usize,
    /// Rules run for the changed resources only.
    pub focused: usize,
    /// Rules whose findings were carried over.
    pub carried: usize,
}

/// Run every semantic rule over the analysed repository, or, given the
/// last compile's findings (one list per rule) and what changed since,
/// only what the change can affect. Rules are independent readers of the
/// context, so they run in parallel; the findings come back one list per
/// rule, in the fixed order of `CHECKS`.
pub(crate) fn check_all(
    ctx: &Context,
    previous: Option<(&[Vec<Diagnostic>], &Change)>,
) -> (Vec<Vec<Diagnostic>>, RuleRuns) {
    use rayon::prelude::*;
    let previous = previous.filter(|(p, c)| p.len() == CHECKS.len() && c.findings_may_carry());
    let reached = previous
        .and_then(|(_, c)| c.delta())
        .map(|d| Reached::new(ctx, d));
    let found: Vec<(Vec<Diagnostic>, Run)> = CHECKS
        .par_iter()
        .enumerate()
        .map(|(i, (check, deps))| {
            let full = || {
                let mut v = Vec::new();
                check(ctx, &mut v);
                (v, Run::Full)
            };
            let Some((last, change)) = previous else {
                return full();
            };
            let last = &last[i];
            // How far what changed of the registry reaches the rule.
            let hit: Vec<Reach> = match (change.delta(), deps.registry()) {
                (Some(d), uses) => uses
                    .iter()
                    .filter(|(bits, _)| d.parts & bits != 0)
                    .map(|&(_, reach)| reach)
                    .collect(),
                (None, _) => Vec::new(),
            };
            let carried = match *deps {
                _ if hit.contains(&Reach::All) => None,
                Deps::Global { .. } if !hit.is_empty() => None,
                Deps::Local {
                    subjects,
                    reads,
                    project,
                    namespaced,
                    ..
                } => {
                    let same = |kinds: &[Kind]| {
                        !change.touches(kinds)
                            || project
                                .is_some_and(|p| change.same_projection(kinds, p, ctx.resources))
                    };
                    let others: Vec<Kind> = reads
                        .iter()
                        .copied()
                        .filter(|k| !namespaced.contains(k))
                        .collect();
                    // The namespaces whose subjects a change of a namespaced
                    // read reaches; `None`: everything.
                    let reach: Option<Vec<&str>> = if same(reads) {
                        Some(Vec::new())
                    } else if same(&others) {
                        Some(change.namespaces(namespaced, ctx.resources))
                            .filter(|n| !n.contains(&ctx.settings.root_namespace.as_str()))
                    } else {
                        None
                    };
                    let reached = match &reached {
                        Some(r) if !hit.is_empty() => r.of(subjects, &hit),
                        _ => Vec::new(),
                    };
                    reach.and_then(|namespaces| {
                        focused_run(ctx, *check, last, change, subjects, &namespaces, &reached)
                    })
                }
                Deps::Global { kinds, project, .. } => {
                    let same = !change.touches(kinds)
                        || project.is_some_and(|p| change.same_projection(kinds, p, ctx.resources));
                    if same {
                        carry(ctx, last, change, |_| true).map(|v| (v, Run::Carried))
                    } else {
                        None
                    }
                }
            };
            carried.unwrap_or_else(full)
        })
        .collect();
    let mut runs = RuleRuns::default();
    let findings = found
        .into_iter()
        .map(|(v, run)| {
            match run {
                Run::Full => runs.full += 1,
                Run::Focused => runs.focused += 1,
                Run::Carried => runs.carried += 1,
            }
            v
        })
        .collect();
    (findings, runs)
}

enum Run {
    Full,
    Focused,
    Carried,
}

/// The last compile's findings that `keep` picks, with their labels moved
/// to where they are now; `None` when one cannot be placed.
fn carry(
    ctx: &Context,
    last: &[Diagnostic],
    change: &Change,
    keep: impl Fn(&Diagnostic) -> bool,
) -> Option<Vec<Diagnostic>> {
    last.iter()
        .filter(|d| keep(d))
        .map(|d| change.carry(d, ctx.resources))
        .collect()
}

impl Deps {
    fn registry(&self) -> &'static [(u16, Reach)] {
        match *self {
            Deps::Local { registry, .. } | Deps::Global { registry, .. } => registry,
        }
    }
}

/// The subjects of local rules that a patch of the registry reaches, found
/// once per compile for all the rules that ask ([`Reach`]).
struct Reached<'c> {
    ctx: &'c Context<'c>,
    delta: &'c RegistryDelta,
    /// VirtualServices, then DestinationRules ([`NAMING`]), naming a changed
    /// host: each kind scanned only when a rule about it asks.
    named: [std::sync::OnceLock<Vec<usize>>; 2],
    /// The same, naming a host that may be of a changed namespace.
    host_namespace: [std::sync::OnceLock<Vec<usize>>; 2],
}

impl<'c> Reached<'c> {
    fn new(ctx: &'c Context<'c>, delta: &'c RegistryDelta) -> Self {
        Reached {
            ctx,
            delta,
            named: Default::default(),
            host_namespace: Default::default(),
        }
    }

    fn in_namespaces(&self, ns: &str) -> bool {
        self.delta.namespaces.iter().any(|n| n == ns)
    }

    /// Whether `host`, written in `ns`, names a changed host.
    fn names_changed(&self, host: &str, ns: &str) -> bool {
        let domain = self.ctx.settings.cluster_domain.as_str();
        self.delta.hosts.iter().any(|t| {
            crate::analysis::fqdn_is(t, host, ns, domain)
                || ((t.contains('*') || host.contains('*')) && {
                    let h = self.ctx.fqdn(host, ns);
                    crate::analysis::host_matches(t, &h) || crate::analysis::host_matches(&h, t)
                })
        })
    }

    /// Whether `host`, written in `ns`, may be a host of a changed
    /// namespace: a Service's of one, or anything but a Service's.
    fn names_namespace(&self, host: &str, ns: &str) -> bool {
        // A short name is a Service of `ns` (as `fqdn` qualifies it).
        if !host.contains('.') && !host.starts_with('*') {
            return self.in_namespaces(ns);
        }
        host.contains('*')
            || host
                .strip_suffix(self.ctx.settings.cluster_domain.as_str())
                .and_then(|h| h.strip_suffix(".svc."))
                .and_then(|h| h.rsplit_once('.'))
                .is_none_or(|(_, n)| self.in_namespaces(n))
    }

    /// The VirtualServices (by their hosts and destinations) or
    /// DestinationRules (by their host), as `kind` says, of which `test`
    /// holds for a host, in order: among `candidates` (sorted resource
    /// indices) when given, else among all of them.
    fn naming(
        &self,
        kind: Kind,
        candidates: Option<&[usize]>,
        test: impl Fn(&str, &str) -> bool,
    ) -> Vec<usize> {
        let named = |i: usize| {
            let r = &self.ctx.resources[i];
            let ns = r.namespace.as_str();
            (r.kind == kind && crate::naming::names(r).any(|h| test(h, ns))).then_some(i)
        };
        match candidates {
            Some(c) => c.iter().copied().filter_map(named).collect(),
            None => self
                .ctx
                .indices_of(kind)
                .iter()
                .copied()
                .filter_map(named)
                .collect(),
        }
    }

    /// The subjects (of `kinds`) reached by any of `reaches` (never
    /// [`Reach::All`]), sorted.
    fn of(&self, kinds: &[Kind], reaches: &[Reach]) -> Vec<usize> {
        let ctx = self.ctx;
        let root = ctx.settings.root_namespace.as_str();
        let mut out = Vec::new();
        for &reach in reaches {
            for &kind in kinds {
                let naming = NAMING.iter().position(|&k| k == kind);
                match (reach, naming) {
                    // The naming index gives the few that may name a
                    // changed host.
                    (Reach::Named, Some(n)) => out.extend(self.named[n].get_or_init(|| {
                        let candidates = ctx.naming().candidates(&self.delta.hosts);
                        self.naming(kind, candidates.as_deref(), |h, ns| {
                            self.names_changed(h, ns)
                        })
                    })),
                    // A host, fully qualified, names its namespace as
                    // written in any: the index's hosts give the candidates.
                    (Reach::HostNamespace, Some(n)) => {
                        out.extend(self.host_namespace[n].get_or_init(|| {
                            let candidates =
                                ctx.naming().naming_any(|h| self.names_namespace(h, ""));
                            self.naming(kind, Some(&candidates), |h, ns| {
                                self.names_namespace(h, ns)
                            })
                        }))
                    }
                    (Reach::Account, _)
                        if kind == Kind::AuthorizationPolicy && !self.delta.accounts.is_empty() =>
                    {
                        out.extend(ctx.principals().policies(&self.delta.accounts))
                    }
                    (Reach::Namespace, _) if kind != Kind::Gateway => {
                        let root = (!self.in_namespaces(root)).then_some(root);
                        let namespaces = self.delta.namespaces.iter().map(String::as_str);
                        let of = namespaces.chain(root).flat_map(|ns| ctx.in_namespace(ns));
                        out.extend(of.filter(|&&i| ctx.resources[i].kind == kind));
                    }
                    _ => out.extend(ctx.indices_of(kind)),
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// A local rule after a change: its findings about unchanged subjects
/// outside `namespaces` and `reached` carried over, and it run for the
/// others. `None` when a finding cannot be carried.
fn focused_run(
    ctx: &Context,
    check: Check,
    last: &[Diagnostic],
    change: &Change,
    subjects: &[Kind],
    namespaces: &[&str],
    reached: &[usize],
) -> Option<(Vec<Diagnostic>, Run)> {
    if namespaces.is_empty() && reached.is_empty() && !change.touches(subjects) {
        return carry(ctx, last, change, |_| true).map(|v| (v, Run::Carried));
    }
    if last.iter().any(|d| d.resource.is_none()) {
        return None;
    }
    // `Kind namespace/name`: the namespace of a finding's subject.
    fn namespace_of(d: &Diagnostic) -> Option<&str> {
        d.resource
            .as_deref()
            .and_then(|r| r.split_once(' '))
            .and_then(|(_, r)| r.split_once('/'))
            .map(|(ns, _)| ns)
    }
    let reached_names: std::collections::HashSet<String> = reached
        .iter()
        .map(|&i| ctx.resources[i].display())
        .collect();
    let mut v = carry(ctx, last, change, |d| {
        !change.about_changed(d)
            && !namespace_of(d).is_some_and(|ns| namespaces.contains(&ns))
            && !d
                .resource
                .as_ref()
                .is_some_and(|r| reached_names.contains(r))
    })?;
    let mut focus = change.focus(ctx).to_vec();
    if !reached.is_empty() {
        focus.extend_from_slice(reached);
        focus.sort_unstable();
        focus.dedup();
    }
    if !namespaces.is_empty() {
        let of_namespaces = namespaces.iter().flat_map(|ns| ctx.in_namespace(ns));
        focus.extend(
            of_namespaces
                .copied()
                .filter(|&i| subjects.contains(&ctx.resources[i].kind)),
        );
        focus.sort_unstable();
        focus.dedup();
    }
    if focus
        .iter()
        .any(|&i| subjects.contains(&ctx.resources[i].kind))
    {
        check(&ctx.focused(&focus), &mut v);
    }
    Some((v, Run::Focused))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_sorted_and_well_formed() {
        let mut prev = "";
        for r in ALL {
            assert!(
                r.code.len() == 6
                    && r.code.starts_with("MC")
                    && r.code[2..].chars().all(|c| c.is_ascii_digit()),
                "{}",
                r.code
            );
            assert!(
                r.code > prev,
                "codes must be unique and sorted: {} after {prev}",
                r.code
            );
            prev = r.code;
            assert!(
                !r.summary.ends_with('.'),
                "{}: summary is one line without a full stop",
                r.code
            );
        }
    }

    #[test]
    fn every_rule_doc_has_the_four_sections() {
        for r in ALL {
            let doc = r.documentation();
            for h in [
                "## What it does",
                "## Why is this bad?",
                "## Example",
                "## Fix",
            ] {
                assert!(doc.contains(h), "{} lacks `{h}`", r.code);
            }
            assert!(doc.contains("```yaml"), "{} has no YAML example", r.code);
        }
    }
}
