//! `MC0108` ambiguous-selector.

use std::collections::{BTreeMap, BTreeSet};

use crate::analysis::{Context, Selection};
use crate::declare_rule;
use crate::diagnostic::Diagnostic;
use crate::model::{Kind, Map};
use crate::path;
use crate::yaml::YamlPath;

declare_rule! {
    /// ## What it does
    /// Reports Sidecars, PeerAuthentications or RequestAuthentications of which
    /// more than one applies to the same workloads: several without a selector
    /// in one namespace, or several whose selectors match the same workload.
    ///
    /// ## Why is this bad?
    /// Istio applies only one Sidecar (and one namespace-wide or workload
    /// PeerAuthentication) to a workload. When several qualify it picks the
    /// oldest, so the configuration that wins depends on creation time and
    /// changes when resources are recreated.
    ///
    /// ## Example
    /// ```yaml
    /// kind: Sidecar
    /// metadata: {name: default, namespace: shop}
    /// spec: {egress: [{hosts: ["./*"]}]}
    /// ---
    /// kind: Sidecar
    /// metadata: {name: restrict, namespace: shop}
    /// spec: {egress: [{hosts: ["istio-system/*"]}]}
    /// ```
    ///
    /// ## Fix
    /// Keep one selector-less resource per namespace and give the others a
    /// `workloadSelector` (or `selector`) that picks distinct workloads.
    pub static AMBIGUOUS_SELECTOR = {
        code: "MC0108",
        name: "ambiguous-selector",
        group: References,
        severity: Error,
        summary: "Several Sidecars or PeerAuthentications apply to the same workloads",
        equivalents: [
            ("IST0111", "sidecar.SelectorAnalyzer"),
            ("IST0110", "sidecar.SelectorAnalyzer"),
            ("KIA0002", "sidecars.GlobalChecker"),
            ("KIA0002", "peerauthentications.MultiMatchChecker"),
            ("KIA0003", "sidecars.MultiMatchChecker"),
            ("KIA0003", "peerauthentications.MultiMatchChecker"),
        ],
    };
}

pub(crate) fn check(ctx: &Context, out: &mut Vec<Diagnostic>) {
    // RequestAuthentications are not exclusive: several combine.
    for kind in [Kind::Sidecar, Kind::PeerAuthentication] {
        // What a resource's findings say depends on the others of its kind
        // in its namespace and on the namespace's workloads: the subjects'
        // namespaces are read, and only the subjects reported on.
        let subjects: Vec<usize> = ctx.subjects(kind).map(|(i, _, _)| i).collect();
        let namespaces: BTreeSet<&str> = subjects
            .iter()
            .map(|&i| ctx.resources[i].namespace.as_str())
            .collect();
        let reported = |i: &usize| subjects.binary_search(i).is_ok();
        // namespace → (selector-less resources, labelled resources)
        type Labelled<'a> = Vec<(usize, &'a Map<String, String>, YamlPath)>;
        let mut by_ns: BTreeMap<&str, (Vec<usize>, Labelled)> = BTreeMap::new();
        let peers = ctx
            .of_kind(kind)
            .filter(|(_, r, _)| namespaces.contains(r.namespace.as_str()));
        for (i, r, _) in peers {
            match r.selection() {
                Some(Selection::Namespace) => by_ns.entry(&r.namespace).or_default().0.push(i),
                Some(Selection::Labels(l, p)) => {
                    by_ns
                        .entry(&r.namespace)
                        .or_default()
                        .1
                        .push((i, l, p.path()))
                }
                None => {}
            }
        }
        // (codes, checks) for "several without a selector" and for "selectors
        // that overlap".
        // (upstream codes, upstream checks)
        type Upstream = (&'static [&'static str], &'static [&'static str]);
        let (none, same): (Upstream, Upstream) = match kind {
            Kind::Sidecar => (
                (
                    &["IST0111", "KIA0002"],
                    &["sidecar.SelectorAnalyzer", "sidecars.GlobalChecker"],
                ),
                (
                    &["IST0110", "KIA0003"],
                    &["sidecar.SelectorAnalyzer", "sidecars.MultiMatchChecker"],
                ),
            ),
            _ => (
                (&["KIA0002"], &["peerauthentications.MultiMatchChecker"]),
                (&["KIA0003"], &["peerauthentications.MultiMatchChecker"]),
            ),
        };
        for (ns, (plain, labelled)) in by_ns {
            if plain.len() > 1 {
                for &i in plain.iter().filter(|i| reported(i)) {
                    let r = &ctx.resources[i];
                    // A second declaration of the same name is MC0012's.
                    let others: Vec<&str> = plain
                        .iter()
                        .map(|&j| ctx.resources[j].name.as_str())
                        .filter(|n| *n != r.name)
                        .collect();
                    if others.is_empty() {
                        continue;
                    }
                    let d = r.diag(
                        &AMBIGUOUS_SELECTOR,
                        path!["metadata", "name"],
                        format!(
                            "{} `{}` has no selector, and neither has {} in namespace `{ns}`; only one applies",
                            kind.as_str(),
                            r.name,
                            others.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                        ),
                    )
                    .with_help("keep one selector-less resource per namespace; give the others a selector")
                    .with_upstream(none.0)
                    .with_upstream_checks(none.1);
                    out.push(d);
                }
            }
            // Labelled ones that select a common workload: for each workload
            // the resources selecting it, found through the label index
            // (linear in the selections, not workloads × resources), in
            // workload order.
            let mut rivals_of: Vec<Vec<usize>> = vec![Vec::new(); labelled.len()];
            if labelled.len() > 1 {
                let mut selecting: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
                for (a, (_, labels, _)) in labelled.iter().enumerate() {
                    for w in ctx.workloads_matching(ns, labels) {
                        selecting.entry(w.index).or_default().push(a);
                    }
                }
                for hits in selecting.into_values() {
                    if hits.len() > 1 {
                        for &a in &hits {
                            for &b in &hits {
                                if a != b && !rivals_of[a].contains(&labelled[b].0) {
                                    rivals_of[a].push(labelled[b].0);
                                }
                            }
                        }
                    }
                }
            }
            for (a, (i, _, pa)) in labelled.iter().enumerate() {
                let i = *i;
                if !reported(&i) {
                    continue;
                }
                let mut clash = std::mem::take(&mut rivals_of[a]);
                clash.sort_unstable();
                if clash.is_empty() {
                    continue;
                }
                let r = &ctx.resources[i];
                let names: Vec<String> = clash
                    .iter()
                    .map(|&j| format!("`{}`", ctx.resources[j].name))
                    .collect();
                let path = pa.clone();
                let d = r
                    .diag(
                        &AMBIGUOUS_SELECTOR,
                        path,
                        format!(
                            "{} `{}` selects workloads that {} also select{}; only one applies",
                            kind.as_str(),
                            r.name,
                            names.join(", "),
                            if names.len() == 1 { "s" } else { "" }
                        ),
                    )
                    .with_help("make the selectors pick distinct workloads, or merge the resources")
                    .with_upstream(same.0)
                    .with_upstream_checks(same.1);
                out.push(d);
            }
        }
    }
}
