//! The naming index: which VirtualServices (by their hosts and destination
//! hosts) and DestinationRules (by their host) name each host, so that after
//! a patch of the registry the subjects a changed host reaches
//! (`crate::rules::Reach::Named`) are looked up instead of found by walking
//! every route of the repository.
//!
//! It is built on first use and kept with the registry across compiles: an
//! incremental compile that keeps the registry moves the changed
//! VirtualServices and DestinationRules in it ([`NamingIndex::patch`]), or
//! drops it to be built again.

use foldhash::HashMap;

use crate::analysis::{Resource, fqdn, insert_sorted, remove_sorted, shift_sorted};
use crate::incremental::Change;
use crate::model::{Kind, Spec};
use crate::rules::walk;

/// The kinds the index holds.
pub(crate) const NAMING: [Kind; 2] = [Kind::VirtualService, Kind::DestinationRule];

/// Host → the resources naming it.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct NamingIndex {
    /// Fully qualified host → indices of the resources that name it exactly
    /// (sorted, each once).
    exact: HashMap<String, Vec<usize>>,
    /// Indices of the resources that name a wildcard host (sorted): they
    /// may name any host, and are tested one by one.
    wildcard: Vec<usize>,
}

/// The hosts resource `r` names, as written: a VirtualService's hosts and
/// destinations, a DestinationRule's host.
pub(crate) fn names(r: &Resource) -> impl Iterator<Item = &str> {
    let (vs, dr) = match r.spec.as_deref() {
        Some(Spec::VirtualService(vs)) => (Some(vs), None),
        Some(Spec::DestinationRule(dr)) => (None, Some(dr)),
        _ => (None, None),
    };
    let routes = vs.into_iter().flat_map(|vs| {
        let hosts = vs.hosts.iter().flatten().map(String::as_str);
        hosts.chain(walk::destination_hosts(vs))
    });
    routes.chain(dr.map(|dr| dr.host.as_str()))
}

impl NamingIndex {
    /// The index of the resources at `indices` (every VirtualService and
    /// DestinationRule of `resources`).
    pub(crate) fn new(resources: &[Resource], indices: &[usize], domain: &str) -> Self {
        let mut ix = NamingIndex::default();
        for &i in indices {
            ix.add(i, &resources[i], domain);
        }
        ix
    }

    /// Put resource `i` (`r`) in, each list kept sorted and without repeats.
    fn add(&mut self, i: usize, r: &Resource, domain: &str) {
        for host in names(r) {
            if host.contains('*') {
                insert_sorted(&mut self.wildcard, i);
            } else {
                let name = fqdn(host, &r.namespace, domain);
                insert_sorted(self.exact.entry(name).or_default(), i);
            }
        }
    }

    /// Resources that may name one of `hosts`: those naming one exactly,
    /// and every one naming a wildcard (the caller tests those), sorted.
    /// `None` when a host is itself a wildcard: only a walk finds them.
    pub(crate) fn candidates<'h>(
        &self,
        hosts: impl IntoIterator<Item = &'h String> + Clone,
    ) -> Option<Vec<usize>> {
        if hosts.clone().into_iter().any(|h| h.contains('*')) {
            return None;
        }
        let mut out = self.wildcard.clone();
        for h in hosts {
            out.extend(self.exact.get(h).into_iter().flatten());
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    /// Resources that may name a host for which `test` (given the host
    /// fully qualified) holds: those naming one exactly, and every one
    /// naming a wildcard (the caller tests those), sorted.
    pub(crate) fn naming_any(&self, test: impl Fn(&str) -> bool) -> Vec<usize> {
        let mut out = self.wildcard.clone();
        for (host, list) in &self.exact {
            if test(host) {
                out.extend(list);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Resources of `of` (sorted indices) that share an exact host with
    /// another of them, sorted; `None` when one of them names a wildcard
    /// host (any might share it).
    pub(crate) fn sharing(&self, of: &[usize]) -> Option<Vec<usize>> {
        let has = |i: &usize| of.binary_search(i).is_ok();
        if self.wildcard.iter().any(has) {
            return None;
        }
        let mut out: Vec<usize> = Vec::new();
        for list in self.exact.values().filter(|l| l.len() > 1) {
            if list.iter().filter(|i| has(i)).nth(1).is_some() {
                out.extend(list.iter().filter(|i| has(i)));
            }
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    /// Move the changed VirtualServices and DestinationRules of `change`
    /// (which kept the registry, so each sits where its old version sat).
    /// `false` when a changed one has no single partner: build it again.
    pub(crate) fn patch(&mut self, change: &Change, resources: &[Resource], domain: &str) -> bool {
        let Some(pairs) = change.pairs_of(&NAMING, resources) else {
            return false;
        };
        for (old, i) in pairs {
            self.remove(i, old, domain);
            self.add(i, &resources[i], domain);
        }
        true
    }

    /// Move every index to its new position (`map`: old index → new, or
    /// [`crate::incremental::GONE`]), dropping the gone ones, and put the
    /// new resources at `added` in (those of its kinds).
    pub(crate) fn shift(
        &mut self,
        map: &[u32],
        added: &[usize],
        resources: &[Resource],
        domain: &str,
    ) {
        for v in self.exact.values_mut() {
            shift_sorted(v, map);
        }
        self.exact.retain(|_, v| !v.is_empty());
        shift_sorted(&mut self.wildcard, map);
        for &i in added
            .iter()
            .filter(|&&i| NAMING.contains(&resources[i].kind))
        {
            self.add(i, &resources[i], domain);
        }
    }

    /// Take resource `i` (as `old` was) out.
    fn remove(&mut self, i: usize, old: &Resource, domain: &str) {
        for host in names(old) {
            if host.contains('*') {
                remove_sorted(&mut self.wildcard, i);
                continue;
            }
            let name = fqdn(host, &old.namespace, domain);
            if self
                .exact
                .get_mut(&name)
                .is_some_and(|at| remove_sorted(at, i))
            {
                self.exact.remove(&name);
            }
        }
    }
}
