//! What an edit changed, as the rules see it: which documents of the changed
//! files kept their text (and moved by how much), which resources are new
//! or gone or differ, and whether the registry can be kept, patched or must
//! be built again. The rules'
//! findings of the last compile are carried over with it
//! ([`Change::carry`]) when [`crate::rules::Deps`] says they cannot differ.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use crate::analysis::{Context, RegistryDelta, Resource, same_contribution};
use crate::diagnostic::{Diagnostic, Label};
use crate::model::Kind;
use crate::source::FileId;

/// One changed file: the byte ranges of its old documents, each with how far
/// it moved when a new document has exactly its text, or `None` when its
/// text is gone.
struct File {
    docs: Vec<(Range<usize>, Option<i64>)>,
}

/// The differences between the last compile's resources and this one's.
pub(crate) struct Change {
    /// The changed files of the last compile, by their id then.
    files: HashMap<FileId, File>,
    /// When files came or went, the id each file of the last compile has
    /// now (`None`: gone); else every file kept its id.
    renumber: Option<Vec<Option<FileId>>>,
    /// When the last compile's resources were spliced in place: each old
    /// resource index's new one, or [`GONE`] (the resources of documents
    /// whose text changed or went away, and of files gone).
    positions: Option<Vec<u32>>,
    /// Old resources of the documents whose text changed or went away.
    old: Vec<Resource>,
    /// Indices of the new resources in documents with new text.
    new: Vec<usize>,
    /// Where each of `old` sat among the documents of its file that kept
    /// their text, and each of `new` sits (by index): a resource pairs with
    /// its other version only at the same place, so that one that moved
    /// past others (a file renamed, a document moved) counts as gone and
    /// new, and the rules whose findings follow resource order (which of
    /// two is first) run again.
    old_slots: Vec<Option<Slot>>,
    new_slots: HashMap<usize, Slot>,
    /// The kinds of `old` and `new`, as bits by `Kind as usize`.
    kinds: u32,
    /// Their `Kind namespace/name`, as [`Diagnostic::resource`] holds it.
    displays: HashSet<String>,
    /// Indices of every new resource with one of those identities (a
    /// duplicate shares its findings' `resource`), sorted: found among the
    /// resources of the changed kinds the first time a rule asks.
    focus: std::sync::OnceLock<Vec<usize>>,
    /// What becomes of the registry.
    registry: RegistryEdit,
    /// What patching the registry changed, once it is patched
    /// ([`Change::patched`]).
    delta: Option<RegistryDelta>,
}

/// What an edit does to the registry.
enum RegistryEdit {
    /// Every changed file has as many resources as before and each gives
    /// the registry what its predecessor gave: it is kept as it is.
    Same,
    /// The same, except that these resources (as they were, with their new
    /// index) give it something else: it may be patched
    /// ([`crate::analysis::Registry::patch`]), or else is built again.
    Patch(Vec<(Resource, usize)>),
    /// Resources came, went or changed places, and every old one's new
    /// position is known: the registry and its indices are moved to the new
    /// positions and take the new resources in
    /// ([`crate::analysis::Registry::shift`]) instead of being built again.
    Shift,
    /// It is built again: resources came, went or took another identity,
    /// and where the old ones are now is not known (the last compile was
    /// taken apart and reassembled, for more than 16 changed files). The
    /// rules may still carry their findings over when the registry built
    /// again holds what this one did apart from positions
    /// ([`Change::rebuilt_alike`]).
    Moved,
    /// It was built again and holds what the last one did apart from
    /// positions; `delta` says which DestinationRule hosts changed.
    Rebuilt,
    /// It is built again, and the rules run again in full.
    Rebuild,
}

/// A changed resource's place: its file (by the id it has now), how many
/// documents that kept their text come before it there, its document's
/// place among the changed ones after those, and its own among the
/// resources of its document.
type Slot = (FileId, usize, usize, usize);

/// A changed file: its id in the last compile (`None` for a new file), its
/// resources before, and the range of its resources now in the new
/// resource list (empty for a file gone).
pub(crate) struct Edited {
    pub id: Option<FileId>,
    pub old: Vec<Resource>,
    /// Where its resources started in the last compile's list.
    pub old_at: usize,
    pub new: Range<usize>,
}

/// The position of an old resource that has none now.
pub(crate) const GONE: u32 = u32::MAX;

/// Which of `claims` (each old document's new place, if any) form the
/// longest run rising in both: the documents that kept their text and
/// their order.
fn rising(claims: &[Option<usize>]) -> Vec<bool> {
    // `tails[l]`: the index of the claim ending the best run of length
    // `l + 1` found so far (the one with the smallest place); `before`: the
    // claim each follows in its run.
    let mut tails: Vec<usize> = Vec::new();
    let mut before: Vec<Option<usize>> = vec![None; claims.len()];
    for (j, n) in claims.iter().enumerate() {
        let Some(n) = *n else { continue };
        let l = tails.partition_point(|&t| claims[t] < Some(n));
        before[j] = l.checked_sub(1).map(|p| tails[p]);
        match tails.get_mut(l) {
            Some(t) => *t = j,
            None => tails.push(j),
        }
    }
    let mut out = vec![false; claims.len()];
    let mut at = tails.last().copied();
    while let Some(j) = at {
        out[j] = true;
        at = before[j];
    }
    out
}

fn bit(k: Kind) -> u32 {
    1 << (k as u32)
}

impl Change {
    /// Compare the `edited` files' resources before and after; `resources`
    /// is the new list.
    pub(crate) fn new(
        edited: Vec<Edited>,
        resources: &[Resource],
        renumber: Option<Vec<Option<FileId>>>,
        mut positions: Option<Vec<u32>>,
    ) -> Change {
        let mut change = Change {
            files: HashMap::new(),
            renumber,
            positions: None,
            old: Vec::new(),
            new: Vec::new(),
            old_slots: Vec::new(),
            new_slots: HashMap::new(),
            kinds: 0,
            displays: HashSet::new(),
            focus: std::sync::OnceLock::new(),
            registry: RegistryEdit::Same,
            delta: None,
        };
        let mut patches = Vec::new();
        let mut rebuild = false;
        for e in edited {
            // The id the file has now (`None`: gone).
            let now_id = e.id.and_then(|id| match &change.renumber {
                Some(ids) => ids.get(id.0 as usize).copied().flatten(),
                None => Some(id),
            });
            let new = &resources[e.new.clone()];
            if e.old.len() != new.len() {
                rebuild = true;
            }
            // Whether these can be patched is the patch's to say.
            for (k, (a, b)) in e.old.iter().zip(new).enumerate() {
                // A resource renamed, or documents reordered: the registry
                // holds positions by identity, and is moved, not patched.
                if a.identity() != b.identity() {
                    rebuild = true;
                }
                if !rebuild && !same_contribution(a, b) {
                    patches.push((a.clone(), e.new.start + k));
                }
            }
            // The new documents: byte range and range of their resources.
            let mut new_docs: Vec<(Range<usize>, Range<usize>)> = Vec::new();
            for (k, r) in new.iter().enumerate() {
                let at = e.new.start + k;
                match new_docs.last_mut() {
                    Some((d, rs)) if *d == r.document_range() => rs.end = at + 1,
                    _ => new_docs.push((r.document_range(), at..at + 1)),
                }
            }
            // By text, each usable once (in order: `pop` takes the first).
            let mut unclaimed: HashMap<&str, Vec<usize>> = HashMap::new();
            for (n, (_, rs)) in new_docs.iter().enumerate().rev() {
                unclaimed
                    .entry(resources[rs.start].document_text())
                    .or_default()
                    .push(n);
            }
            // The old documents: where each starts in `e.old`, its resources.
            let mut old_docs: Vec<(usize, Vec<Resource>)> = Vec::new();
            let mut old = e.old.into_iter().enumerate().peekable();
            while let Some((at, first)) = old.next() {
                let range = first.document_range();
                let mut same_doc = vec![first];
                while let Some((_, r)) = old.next_if(|(_, r)| r.document_range() == range) {
                    same_doc.push(r);
                }
                old_docs.push((at, same_doc));
            }
            // Each claims the first unclaimed new document with its text.
            let claims: Vec<Option<usize>> = old_docs
                .iter()
                .map(|(_, d)| unclaimed.get_mut(d[0].document_text()).and_then(Vec::pop))
                .collect();
            // Which of two resources comes first is part of what rules say
            // (a declaration's second, a host's first DestinationRule): the
            // documents that keep their text and their order among the
            // others are the longest run of claims in rising order; the
            // rest changed places, and count as gone and new.
            let kept_order = rising(&claims);
            let mut kept_new = vec![false; new_docs.len()];
            let mut docs = Vec::new();
            let mut gone = Vec::new();
            // How many documents were kept so far, and how many gone since.
            let (mut kept, mut since) = (0, 0);
            for (j, (at, same_doc)) in old_docs.into_iter().enumerate() {
                let range = same_doc[0].document_range();
                match claims[j].filter(|_| kept_order[j]) {
                    Some(n) => {
                        (kept, since) = (kept + 1, 0);
                        kept_new[n] = true;
                        let shift = new_docs[n].0.start as i64 - range.start as i64;
                        docs.push((range, Some(shift)));
                        // The same text gives as many resources, in order.
                        let now = new_docs[n].1.clone();
                        match positions.as_mut() {
                            Some(map) if now.len() == same_doc.len() => {
                                for (k, to) in now.enumerate() {
                                    map[e.old_at + at + k] = to as u32;
                                }
                            }
                            _ => positions = None,
                        }
                    }
                    None => {
                        docs.push((range, None));
                        for (k, _) in same_doc.iter().enumerate() {
                            change.old_slots.push(now_id.map(|id| (id, kept, since, k)));
                        }
                        since += 1;
                        gone.extend(same_doc);
                    }
                }
            }
            let (mut kept, mut since) = (0, 0);
            for ((_, rs), was_kept) in new_docs.into_iter().zip(kept_new) {
                if was_kept {
                    (kept, since) = (kept + 1, 0);
                    continue;
                }
                for (k, i) in rs.clone().enumerate() {
                    let slot = (resources[i].file, kept, since, k);
                    change.new_slots.insert(i, slot);
                }
                since += 1;
                change.new.extend(rs);
            }
            change.old.extend(gone);
            if let Some(id) = e.id {
                change.files.insert(id, File { docs });
            }
        }
        for r in change
            .old
            .iter()
            .chain(change.new.iter().map(|&i| &resources[i]))
        {
            change.kinds |= bit(r.kind);
            change.displays.insert(r.display());
        }
        // The positions keep their order: files stay in path order, and
        // kept documents within one (those that changed places are not
        // kept).
        let in_order = |map: &Vec<u32>| {
            let mut last = None;
            map.iter().filter(|&&to| to != GONE).all(|&to| {
                let rising = last < Some(to);
                last = Some(to);
                rising
            })
        };
        change.registry = match (rebuild, patches.is_empty()) {
            (true, _) if positions.is_some() => {
                debug_assert!(positions.as_ref().is_some_and(in_order));
                change.positions = positions;
                RegistryEdit::Shift
            }
            (true, _) => RegistryEdit::Moved,
            (false, true) => RegistryEdit::Same,
            (false, false) => RegistryEdit::Patch(patches),
        };
        change
    }

    /// Whether the registry is to be moved to the resources' new positions
    /// ([`crate::analysis::Registry::shift`]).
    pub(crate) fn shifts(&self) -> bool {
        matches!(self.registry, RegistryEdit::Shift)
    }

    /// The indices of the new resources in documents with new text.
    pub(crate) fn added(&self) -> &[usize] {
        &self.new
    }

    /// The old resources of the documents whose text changed or went away.
    pub(crate) fn removed(&self) -> &[Resource] {
        &self.old
    }

    /// Each old resource index's new one, or [`GONE`], when the registry is
    /// to be moved to them.
    pub(crate) fn positions(&self) -> Option<&[u32]> {
        self.positions.as_deref()
    }

    /// Whether the registry built before the change is still right (or was
    /// patched to be: [`Change::patched`]).
    pub(crate) fn registry_kept(&self) -> bool {
        match self.registry {
            RegistryEdit::Same => true,
            RegistryEdit::Patch(_) => self.delta.is_some(),
            RegistryEdit::Shift
            | RegistryEdit::Moved
            | RegistryEdit::Rebuilt
            | RegistryEdit::Rebuild => false,
        }
    }

    /// Whether resources came, went or moved, so that the registry is built
    /// again, and may then hold what the last one did apart from positions.
    pub(crate) fn moved(&self) -> bool {
        matches!(self.registry, RegistryEdit::Moved)
    }

    /// The registry built again holds what the last one held apart from
    /// positions ([`crate::analysis::Registry::same_but_positions`]): the
    /// rules may carry findings over, and the registry changed only in the
    /// DestinationRules of the changed ones' hosts (`DR_HOST`, their hosts
    /// before and after). What the rules read of the changed resources'
    /// kinds they name in their `Deps`.
    pub(crate) fn rebuilt_alike(&mut self, cluster_domain: &str, resources: &[Resource]) {
        let mut delta = RegistryDelta::default();
        for r in self
            .old
            .iter()
            .chain(self.new.iter().map(|&i| &resources[i]))
        {
            if let Some(crate::model::Spec::DestinationRule(dr)) = r.spec.as_deref() {
                delta.parts |= crate::analysis::parts::DR_HOST;
                delta.hosts.push(crate::analysis::fqdn(
                    &dr.host,
                    &r.namespace,
                    cluster_domain,
                ));
                delta.namespaces.push(r.namespace.clone());
            }
        }
        delta.settle();
        self.registry = RegistryEdit::Rebuilt;
        self.delta = Some(delta);
    }

    /// The registry was moved to the resources' new positions, and changed
    /// as `delta` says ([`crate::analysis::Registry::shift`]): the rules run
    /// by their `Deps`, as after a patch.
    pub(crate) fn shifted(&mut self, delta: RegistryDelta) {
        self.registry = RegistryEdit::Rebuilt;
        self.delta = Some(delta);
    }

    /// Whether the rules may carry the last compile's findings over: the
    /// registry was kept, patched, or built again alike.
    pub(crate) fn findings_may_carry(&self) -> bool {
        self.registry_kept() || matches!(self.registry, RegistryEdit::Rebuilt)
    }

    /// The resources whose contribution to the registry changed, as they
    /// were, with their new index: `None` when the registry is kept as it
    /// is or must be built again.
    pub(crate) fn registry_patch(&self) -> Option<&[(Resource, usize)]> {
        match &self.registry {
            RegistryEdit::Patch(p) => Some(p),
            _ => None,
        }
    }

    /// Record what patching the registry changed; `None`: it could not be
    /// patched, and is built again.
    pub(crate) fn patched(&mut self, delta: Option<RegistryDelta>) {
        match delta {
            Some(d) => self.delta = Some(d),
            None => self.registry = RegistryEdit::Rebuild,
        }
    }

    /// Add `parts` to what patching the registry changed, when it was
    /// patched ([`crate::analysis::parts::CALLS`], which the indices kept
    /// with it say).
    pub(crate) fn add_parts(&mut self, parts: u16) {
        if let Some(d) = self.delta.as_mut() {
            d.parts |= parts;
        }
    }

    /// What patching the registry changed, when it was patched.
    pub(crate) fn delta(&self) -> Option<&RegistryDelta> {
        self.delta.as_ref()
    }

    /// Whether a resource of one of `kinds` changed (its document's text did).
    pub(crate) fn touches(&self, kinds: &[Kind]) -> bool {
        kinds.iter().any(|&k| self.kinds & bit(k) != 0)
    }

    /// The resources rules report on again: those with the identity of a
    /// changed one. `ctx` holds the new resources.
    pub(crate) fn focus(&self, ctx: &Context) -> &[usize] {
        self.focus.get_or_init(|| {
            let identities: Vec<(Kind, &str, &str)> = self
                .old
                .iter()
                .chain(self.new.iter().map(|&i| &ctx.resources[i]))
                .map(Resource::identity)
                .collect();
            let mut focus: Vec<usize> = identities
                .into_iter()
                .flat_map(|id| ctx.with_identity(id))
                .collect();
            focus.sort_unstable();
            focus.dedup();
            focus
        })
    }

    /// Whether `project` gives the same for every changed resource of
    /// `kinds` before and after, each paired by identity with its other
    /// version; a resource without a partner fails.
    pub(crate) fn same_projection(
        &self,
        kinds: &[Kind],
        project: fn(&Resource) -> String,
        resources: &[Resource],
    ) -> bool {
        kinds.iter().all(|&k| {
            self.pairs(k, resources).is_some_and(|pairs| {
                pairs
                    .iter()
                    .all(|&(old, i)| project(old) == project(&resources[i]))
            })
        })
    }

    /// The changed resources of `kind`, each paired by identity with its
    /// other version: (old version, index of the new one in `resources`).
    /// `None` when one has no partner or several, or its partner is at
    /// another place among the resources that kept their text.
    pub(crate) fn pairs<'c>(
        &'c self,
        kind: Kind,
        resources: &[Resource],
    ) -> Option<Vec<(&'c Resource, usize)>> {
        let mut new: HashMap<(Kind, &str, &str), Vec<usize>> = HashMap::new();
        for &i in self.new.iter().filter(|&&i| resources[i].kind == kind) {
            new.entry(resources[i].identity()).or_default().push(i);
        }
        let mut out = Vec::new();
        let old = self.old.iter().zip(&self.old_slots);
        for (r, slot) in old.filter(|(r, _)| r.kind == kind) {
            match new.remove(&r.identity()).as_deref() {
                // At the same place, or it moved past others.
                Some(&[i]) if slot.is_some() && slot.as_ref() == self.new_slots.get(&i) => {
                    out.push((r, i))
                }
                _ => return None,
            }
        }
        new.is_empty().then_some(out)
    }

    /// The changed resources of every kind of `kinds`, each paired with its
    /// other version ([`Change::pairs`]), kind by kind: what an index kept
    /// with the registry moves. `None` when one has no single partner (the
    /// index is built again).
    pub(crate) fn pairs_of<'c>(
        &'c self,
        kinds: &[Kind],
        resources: &[Resource],
    ) -> Option<Vec<(&'c Resource, usize)>> {
        let mut out = Vec::new();
        for &kind in kinds.iter().filter(|&&k| self.touches(&[k])) {
            out.extend(self.pairs(kind, resources)?);
        }
        Some(out)
    }

    /// The namespaces of the changed resources of `kinds`, before and after.
    pub(crate) fn namespaces<'r>(
        &'r self,
        kinds: &[Kind],
        resources: &'r [Resource],
    ) -> Vec<&'r str> {
        let mut out: Vec<&str> = self
            .old
            .iter()
            .chain(self.new.iter().map(|&i| &resources[i]))
            .filter(|r| kinds.contains(&r.kind))
            .map(|r| r.namespace.as_str())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether a finding was about a changed resource.
    pub(crate) fn about_changed(&self, d: &Diagnostic) -> bool {
        d.resource
            .as_ref()
            .is_some_and(|r| self.displays.contains(r))
    }

    /// A finding of the last compile with its labels moved to where their
    /// nodes are now: by the distance its document moved, or, in a document
    /// whose text changed, found again by YAML path in the new version of
    /// its resource. `None` when a label cannot be placed for certain.
    pub(crate) fn carry(&self, d: &Diagnostic, resources: &[Resource]) -> Option<Diagnostic> {
        let mut d = d.clone();
        d.primary = self.move_label(d.primary, resources)?;
        let related = std::mem::take(&mut d.related);
        d.related = related
            .into_iter()
            .map(|l| self.move_label(l, resources))
            .collect::<Option<_>>()?;
        Some(d)
    }

    fn move_label(&self, mut l: Label, resources: &[Resource]) -> Option<Label> {
        let Some(file) = self.files.get(&l.span.file) else {
            return self.renumbered(l);
        };
        let at = l.span.start as usize;
        let (range, shift) = file
            .docs
            .iter()
            .find(|(r, _)| r.contains(&at) || (r.start == at && r.is_empty()))?;
        if let Some(shift) = shift {
            l.span.start = (l.span.start as i64 + shift) as u32;
            l.span.end = (l.span.end as i64 + shift) as u32;
            return self.renumbered(l);
        }
        // The document's text changed: find the node again by its path in
        // the new version of the resource whose node it was.
        let path = l.path.as_ref()?;
        let owner = self.old.iter().find(|r| {
            r.file == l.span.file && r.document_range() == *range && r.locate(path) == Some(l.span)
        })?;
        let mut now = self
            .new
            .iter()
            .map(|&i| &resources[i])
            .filter(|r| r.identity() == owner.identity());
        let (Some(new), None) = (now.next(), now.next()) else {
            return None;
        };
        l.span = new.locate(path)?;
        Some(l)
    }

    /// A label of a file of the last compile with that file's id now;
    /// `None` when the file is gone.
    fn renumbered(&self, mut l: Label) -> Option<Label> {
        if let Some(ids) = &self.renumber {
            l.span.file = (*ids.get(l.span.file.0 as usize)?)?;
        }
        Some(l)
    }
}

#[cfg(test)]
mod tests {
    use super::rising;

    #[test]
    fn the_documents_kept_are_the_longest_run_in_order() {
        // The first document moved to the end: the others keep their places.
        let moved = [Some(3), Some(0), Some(1), Some(2)];
        assert_eq!(rising(&moved), [false, true, true, true]);
        // Two swapped, one gone, one new (place 2 unclaimed).
        let swapped = [Some(0), Some(3), None, Some(1), Some(4)];
        assert_eq!(rising(&swapped), [true, false, false, true, true]);
        assert_eq!(rising(&[None, None]), [false, false]);
        assert!(rising(&[]).is_empty());
    }
}
