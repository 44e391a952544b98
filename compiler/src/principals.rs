//! The principal index: which AuthorizationPolicies name each service
//! account as an exact principal (in `principals` or `notPrincipals`), so
//! that after a patch of the registry that changed a workload's service
//! account, the policies a changed account reaches
//! (`crate::rules::Reach::Account`) are looked up instead of found by
//! walking every policy's rules.
//!
//! It is built on first use and kept with the registry across compiles, as
//! the naming index is: an incremental compile that keeps the registry
//! moves the changed AuthorizationPolicies in it ([`PrincipalIndex::patch`]),
//! or drops it to be built again.

use foldhash::HashMap;

use crate::analysis::{Resource, insert_sorted, remove_sorted, shift_sorted};
use crate::incremental::Change;
use crate::model::{Kind, Spec};
use crate::rules::authorization::{parse_principal, sources};

/// Service account → the policies naming it.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct PrincipalIndex {
    /// `namespace/service-account` → indices of the AuthorizationPolicies
    /// naming it as an exact principal (sorted, each once).
    accounts: HashMap<String, Vec<usize>>,
}

/// The service accounts policy `r` names as exact principals, as
/// `namespace/service-account`.
fn named(r: &Resource) -> Vec<String> {
    let Some(Spec::AuthorizationPolicy(ap)) = r.spec.as_deref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (_, _, src) in sources(ap) {
        let lists = [&src.principals, &src.not_principals];
        for p in lists.into_iter().flatten().flatten() {
            if let Some((_, ns, sa)) = parse_principal(p).filter(|_| !p.contains('*')) {
                out.push(format!("{ns}/{sa}"));
            }
        }
    }
    out
}

impl PrincipalIndex {
    /// The index of the policies at `indices` (every AuthorizationPolicy of
    /// `resources`).
    pub(crate) fn new(resources: &[Resource], indices: &[usize]) -> Self {
        let mut ix = PrincipalIndex::default();
        for &i in indices {
            ix.add(i, &resources[i]);
        }
        ix
    }

    fn add(&mut self, i: usize, r: &Resource) {
        for account in named(r) {
            insert_sorted(self.accounts.entry(account).or_default(), i);
        }
    }

    fn remove(&mut self, i: usize, old: &Resource) {
        for account in named(old) {
            if self
                .accounts
                .get_mut(&account)
                .is_some_and(|at| remove_sorted(at, i))
            {
                self.accounts.remove(&account);
            }
        }
    }

    /// The policies naming one of `accounts` (`namespace/name`), sorted.
    pub(crate) fn policies(&self, accounts: &[String]) -> Vec<usize> {
        let mut out: Vec<usize> = accounts
            .iter()
            .flat_map(|a| self.accounts.get(a).into_iter().flatten())
            .copied()
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Move every index to its new position (`map`: old index → new, or
    /// [`crate::incremental::GONE`]), dropping the gone ones, and put the
    /// new policies at `added` in.
    pub(crate) fn shift(&mut self, map: &[u32], added: &[usize], resources: &[Resource]) {
        for v in self.accounts.values_mut() {
            shift_sorted(v, map);
        }
        self.accounts.retain(|_, v| !v.is_empty());
        let policies = added
            .iter()
            .filter(|&&i| resources[i].kind == Kind::AuthorizationPolicy);
        for &i in policies {
            self.add(i, &resources[i]);
        }
    }

    /// Move the changed AuthorizationPolicies of `change` (which kept the
    /// registry, so each sits where its old version sat). `false` when a
    /// changed one has no single partner: build it again.
    pub(crate) fn patch(&mut self, change: &Change, resources: &[Resource]) -> bool {
        let Some(pairs) = change.pairs_of(&[Kind::AuthorizationPolicy], resources) else {
            return false;
        };
        for (old, i) in pairs {
            self.remove(i, old);
            self.add(i, &resources[i]);
        }
        true
    }
}
