//! Incremental compilation: a [`Session`] keeps what the last compile
//! produced and, given the repository again, redoes only what changed.
//!
//! - **Loading** (decode, YAML, schema, types: most of a full compile) is
//!   redone only for files whose bytes changed; the others keep their
//!   resources, skipped documents and loading diagnostics. When a few
//!   files changed, came or went, the new resources are spliced into the
//!   last compile's lists in place (renumbering the spans of the files
//!   after one that came or went); otherwise the last compile is taken
//!   apart by file and reassembled.
//! - **Lowering** is redone only for the hosts, workloads and gateways the
//!   change reaches ([`crate::lower::touched`] reads the changed resources,
//!   as they were and as they are, against the reference structure: which
//!   VirtualServices name a host, which rules route to a DestinationRule's
//!   host, which namespace a PeerAuthentication covers...) and patched into
//!   the previous IR; a change that reaches everything (a mesh-wide policy, a
//!   wildcard DestinationRule) lowers everything.
//! - **The registry** is kept when the change leaves what it copies as it
//!   was, patched in place when only what it copies of some resources
//!   changed (`Registry::patch`), and built again
//!   otherwise ([`Stats::registry`]): when resources came, went or moved
//!   and the registry built again holds what the last one did apart from
//!   positions, the rules still carry their findings over.
//! - **Rules** run again only where their `crate::rules::Deps` say the change
//!   can reach (the changed subjects, those a registry patch reaches, or all
//!   of them); the other findings are carried over.
//!
//! The result is the one [`crate::compile`] gives for the same files sorted
//! by path; `tests/incremental.rs` checks this on random edits.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rayon::prelude::*;

use crate::diagnostic::Diagnostic;
use crate::rules::{RuleRuns, load};

mod change;
use crate::{
    Analysis, CompileError, Compiled, FileId, FileResult, Input, Lowering, Options, Resource,
    Skipped, SourceFile, Span, finish, load_file,
};
use change::Edited;
pub(crate) use change::{Change, GONE};

/// A compiler that remembers its last compile.
pub struct Session {
    options: Options,
    last: Option<Last>,
    /// Set while the last compile made no IR: the IR before it, and what
    /// changed since.
    since: Option<Since>,
    stats: Stats,
}

/// The last IR made and everything that changed since: every resource of a
/// file that changed (as that IR saw it: an edit after a compile with errors
/// adds nothing for a file already changed), the paths of those files, and whether a
/// Gateway API Gateway was among them (VirtualServices bind to those by
/// name, which the scope does not track).
struct Since {
    /// Taken by the scoped lowering that patches it.
    ir: Option<Arc<meshc_ir::Ir>>,
    gone: Vec<Resource>,
    paths: HashSet<String>,
    gateway_api: bool,
}

/// What the last compile did, for benchmarks and logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Input files.
    pub files: usize,
    /// Files loaded again (changed or new).
    pub loaded: usize,
    /// Files gone since the last compile.
    pub removed: usize,
    /// How the IR was made.
    pub lowered: Lowered,
    /// How the rules ran.
    pub rules: RuleRuns,
    /// What became of the last compile's registry.
    pub registry: RegistryUse,
}

/// What a compile did with the last compile's registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RegistryUse {
    /// Built it again (or had none).
    #[default]
    Built,
    /// Kept it: the change left what it copies as it was.
    Kept,
    /// Patched it in place: the change altered what it copies of some
    /// resources but kept them where they were.
    Patched,
    /// Moved it, and the indices kept with it, to the resources' new
    /// positions: resources that give it nothing but their position came
    /// or went.
    Shifted,
}

/// How a compile made its IR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Lowered {
    /// It did not: the repository has errors.
    #[default]
    Not,
    /// The whole repository.
    Full,
    /// Only what the change reached.
    Scoped {
        /// Hosts lowered again.
        hosts: usize,
        /// Workloads lowered again.
        workloads: usize,
        /// Gateways lowered again.
        gateways: usize,
    },
}

struct Last {
    compiled: Compiled,
    /// Per input file, in the order of `compiled.analysis.sources`.
    files: Vec<Meta>,
    /// The registry and rule findings, for the next compile.
    kept: Option<crate::Kept>,
}

/// What a loaded file contributed, besides its source.
#[derive(Clone)]
struct Meta {
    resources: usize,
    skipped: usize,
    diagnostics: Vec<Diagnostic>,
    /// Whether its bytes started with a byte-order mark (stripped from the text).
    bom: bool,
    /// Whether it can be reused: it decoded (an unreadable file is loaded again).
    reusable: bool,
    /// The id its input had ([`Input::id`]).
    id: Option<Vec<u8>>,
}

/// One file of the previous compile, taken apart.
struct Old {
    id: FileId,
    source: SourceFile,
    resources: Vec<Resource>,
    skipped: Vec<Skipped>,
    meta: Meta,
}

impl Session {
    /// A session compiling with `options`; a change of options needs a new
    /// session.
    pub fn new(options: Options) -> Self {
        Session {
            options,
            last: None,
            since: None,
            stats: Stats::default(),
        }
    }

    /// The options it compiles with.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// What the last compile reused and redid.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether the last compile read `path` with the id `id` and can take
    /// it as unchanged: then the caller may pass [`Input::known`] instead
    /// of reading the bytes.
    pub fn has(&self, path: &str, id: &[u8]) -> bool {
        let Some(last) = &self.last else {
            return false;
        };
        // A path given twice is never reused.
        let at = with_path(&last.compiled.analysis.sources, last.files.len(), path);
        at.len() == 1
            && last.files[at.start].reusable
            && last.files[at.start].id.as_deref() == Some(id)
    }

    /// The last compile's result.
    pub fn last(&self) -> Option<&Compiled> {
        self.last.as_ref().map(|l| &l.compiled)
    }

    /// Compile the repository `inputs` (every file, not only the changed
    /// ones), reusing what the last compile did for unchanged files. Files
    /// are taken in path order.
    pub fn compile(&mut self, mut inputs: Vec<Input>) -> &Compiled {
        inputs.sort_by(|a, b| a.path.cmp(&b.path));
        let mut last = self.last.take();
        let kept = last.as_mut().and_then(|l| l.kept.take());
        let (gathered, previous_ir) = match last {
            Some(last) => match in_place_changes(&last, &inputs) {
                Some(changed) => in_place(last, inputs, changed, &self.options),
                None => {
                    let before = last.files.len();
                    let (old, ir) = take_apart(last);
                    (rebuild(old, before, inputs, &self.options), ir)
                }
            },
            None => (rebuild(HashMap::new(), 0, inputs, &self.options), None),
        };
        let Gathered {
            mut analysis,
            diagnostics,
            files,
            loaded,
            removed,
            gone,
            fresh,
            edited,
        } = gathered;
        // The rules and the registry may keep what they can.
        let previous = match (edited, kept) {
            (
                Some(Edits {
                    files,
                    renumber,
                    positions,
                }),
                Some(kept),
            ) => {
                let edited = files
                    .into_iter()
                    .map(|(id, new)| Edited {
                        id,
                        old: id
                            .and_then(|id| gone.iter().find(|o| o.id == id))
                            .map(|o| o.resources.clone())
                            .unwrap_or_default(),
                        old_at: match (id, &positions) {
                            (Some(id), Some(p)) => p.starts[id.0 as usize],
                            _ => 0,
                        },
                        new,
                    })
                    .collect();
                let positions = positions.map(|p| p.map);
                Some(crate::Previous {
                    registry: kept.registry,
                    findings: kept.findings,
                    change: Change::new(edited, &analysis.resources, renumber, positions),
                })
            }
            _ => None,
        };

        // What changed since the last compile that made an IR: a compile
        // with errors keeps adding to it, so the next clean one is scoped.
        if let Some(ir) = previous_ir {
            self.since = Some(Since {
                ir: Some(ir),
                gone: Vec::new(),
                paths: HashSet::new(),
                gateway_api: false,
            });
        }
        let mut since = self.since.take();
        // Files whose resources may differ from the last IR's.
        let mut changed: HashSet<FileId> = HashSet::new();
        if let Some(s) = since.as_mut() {
            for o in gone {
                s.gateway_api |= has_gateway_api(&o.resources);
                // A file changed again since the last IR keeps the version
                // that IR was made from (or none, when it came since): the
                // versions in between are not what the IR holds, and would
                // make every unchanged resource of theirs look changed.
                if s.paths.insert(o.source.path) {
                    s.gone.extend(o.resources);
                }
            }
            for (path, gateway_api) in fresh {
                s.gateway_api |= gateway_api;
                s.paths.insert(path);
            }
            for path in &s.paths {
                let at = with_path(&analysis.sources, analysis.inputs, path);
                changed.extend(at.map(|i| FileId(i as u32)));
            }
        }
        self.stats = Stats {
            files: files.len(),
            loaded,
            removed,
            lowered: Lowered::Not,
            rules: RuleRuns::default(),
            registry: RegistryUse::Built,
        };

        let options = &self.options;
        let mut scoped = None;
        let (ir, kept) = match since.as_mut() {
            Some(s) if !s.gateway_api => {
                let mut scope = |ctx: &crate::Context| {
                    // Resources are in file order: each changed file's are
                    // one range.
                    let of = |id: &FileId| {
                        let start = ctx.resources.partition_point(|r| r.file < *id);
                        let end = ctx.resources.partition_point(|r| r.file <= *id);
                        &ctx.resources[start..end]
                    };
                    let mut ids: Vec<&FileId> = changed.iter().collect();
                    ids.sort_unstable();
                    let fresh: Vec<&Resource> = ids.into_iter().flat_map(of).collect();
                    let touched = differences(&s.gone, &fresh);
                    let ir = Arc::unwrap_or_clone(s.ir.take()?);
                    let scope = crate::lower::touched(ctx, ir, &touched);
                    scoped = scope
                        .as_ref()
                        .map(|s| (s.hosts.len(), s.workloads.len(), s.gateways.len()));
                    scope
                };
                finish(
                    &mut analysis,
                    diagnostics,
                    options,
                    Lowering::Scoped(&mut scope),
                    previous,
                )
            }
            _ => finish(
                &mut analysis,
                diagnostics,
                options,
                Lowering::Full,
                previous,
            ),
        };
        let ir = ir.expect("lowering was asked for").map(Arc::new);
        // A new registry gets its naming index now, which most edits' scope
        // and rules read, and its principal index, which a service-account
        // edit reads, rather than with the first edit (~25 ms and ~16 ms at
        // 10,000 services).
        if kept.registry_use == RegistryUse::Built {
            let ctx = crate::Context::new(&analysis.resources, &options.settings, &kept.registry);
            rayon::join(|| ctx.naming(), || ctx.principals());
        }
        self.stats.rules = kept.runs;
        self.stats.registry = kept.registry_use;
        self.stats.lowered = match (&ir, scoped) {
            (Err(CompileError::Diagnostics(_)), _) => {
                // Not lowered: the last IR and what changed since stay.
                self.since = since;
                Lowered::Not
            }
            (Err(CompileError::Lowering(_)), _) => Lowered::Not,
            (Ok(_), Some((hosts, workloads, gateways))) => Lowered::Scoped {
                hosts,
                workloads,
                gateways,
            },
            (Ok(_), None) => Lowered::Full,
        };
        let last = self.last.insert(Last {
            compiled: Compiled { analysis, ir },
            files,
            kept: Some(kept),
        });
        &last.compiled
    }
}

/// The ids of the first `n` files of `sources` (in path order, file `i` the
/// source `FileId(i)`) whose path is `path`: one, or more for a path given
/// twice.
fn with_path(sources: &crate::SourceMap, n: usize, path: &str) -> std::ops::Range<usize> {
    let path_of = |i: usize| sources.get(FileId(i as u32)).path.as_str();
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if path_of(mid) < path {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let mut end = lo;
    while end < n && path_of(end) == path {
        end += 1;
    }
    lo..end
}

/// The files of a compile before the rules run, and what changed.
struct Gathered {
    analysis: Analysis,
    /// The loading diagnostics of every file.
    diagnostics: Vec<Diagnostic>,
    files: Vec<Meta>,
    /// Files loaded.
    loaded: usize,
    /// Files no longer there.
    removed: usize,
    /// The previous versions of changed and removed files.
    gone: Vec<Old>,
    /// The paths of loaded files, and whether they hold a Gateway API Gateway.
    fresh: Vec<(String, bool)>,
    /// What changed, file by file.
    edited: Option<Edits>,
}

/// The files that changed: each one's id in the last compile (`None` for a
/// new file) and the range of its resources in the new list (empty for a
/// file gone); and, when files came or went, the id each file of the last
/// compile has now (`None`: gone).
struct Edits {
    files: Vec<(Option<FileId>, std::ops::Range<usize>)>,
    renumber: Option<Vec<Option<FileId>>>,
    /// When the last compile's resources were spliced in place: where each
    /// of the unchanged files' resources is now.
    positions: Option<Positions>,
}

/// Where the last compile's resources are after an in-place splice.
struct Positions {
    /// Old resource index → new one, for the resources of unchanged files;
    /// [`change::GONE`] for the others (the changed documents' are found
    /// by [`Change::new`]).
    map: Vec<u32>,
    /// Where each file of the last compile (by its id then) started in its
    /// resource list.
    starts: Vec<usize>,
}

/// Most files changed in place; more, and moving every resource once
/// (`rebuild`) is cheaper than shifting the tail of the list once per file.
const IN_PLACE_MAX: usize = 16;

/// Most files changed, added or removed for the rules to carry findings
/// over; more, and most rules would run again anyway.
const CARRY_MAX: usize = 256;

/// One file of the repository against the last compile: its index there
/// (`None`: new) and among the inputs (`None`: gone), and whether it must
/// be loaded or taken out (changed, new or gone).
#[derive(Clone, Copy)]
struct Step {
    old: Option<usize>,
    new: Option<usize>,
    changed: bool,
}

/// The inputs (sorted by path) against the last compile's files, when at
/// most [`IN_PLACE_MAX`] changed, came or went and no path is given twice.
fn in_place_changes(last: &Last, inputs: &[Input]) -> Option<Vec<Step>> {
    let sources = &last.compiled.analysis.sources;
    if inputs.windows(2).any(|w| w[0].path == w[1].path) {
        return None;
    }
    let path_of = |i: usize| sources.get(FileId(i as u32)).path.as_str();
    let (before, now) = (last.files.len(), inputs.len());
    let mut steps = Vec::with_capacity(now.max(before));
    let (mut i, mut j) = (0, 0);
    let mut moved = 0;
    while i < before || j < now {
        let order = match (i < before, j < now) {
            (true, true) => path_of(i).cmp(inputs[j].path.as_str()),
            (true, false) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let (old, new) = match order {
            std::cmp::Ordering::Equal => (Some(i), Some(j)),
            std::cmp::Ordering::Less => (Some(i), None),
            std::cmp::Ordering::Greater => (None, Some(j)),
        };
        // A file on both sides is compared with its last version below.
        let step = Step {
            old,
            new,
            changed: old.is_none() || new.is_none(),
        };
        i += usize::from(step.old.is_some());
        j += usize::from(step.new.is_some());
        moved += usize::from(step.changed);
        if moved > IN_PLACE_MAX {
            return None;
        }
        steps.push(step);
    }
    steps.par_iter_mut().for_each(|s| {
        if let (Some(i), Some(j)) = (s.old, s.new) {
            let meta = &last.files[i];
            let source = sources.get(FileId(i as u32));
            s.changed = !(meta.reusable && same_content(&inputs[j], source, meta));
        }
    });
    (steps.iter().filter(|s| s.changed).count() <= IN_PLACE_MAX).then_some(steps)
}

/// Load the changed and new files and splice them into the last compile,
/// and take the gone ones out, from the back so the offsets of the files
/// before stay right; then give the files that moved their new ids.
fn in_place(
    last: Last,
    inputs: Vec<Input>,
    steps: Vec<Step>,
    options: &Options,
) -> (Gathered, Option<Arc<meshc_ir::Ir>>) {
    let Last {
        compiled: Compiled { mut analysis, ir },
        mut files,
        ..
    } = last;
    let before = files.len();
    analysis.sources.truncate(before);
    let old_starts = starts(&files);
    // Unchanged files keep the id they are given now; the others are loaded
    // with the id they have now.
    let new_steps = steps.iter().enumerate().filter(|(_, s)| s.new.is_some());
    let mut to_load = Vec::new();
    // What an unchanged file's input and its old id hold is freed on a
    // thread of its own: ~10,000 paths and ids at 10,000 services.
    let mut spare = Vec::with_capacity(inputs.len());
    for ((k, s), (j, input)) in new_steps.zip(inputs.into_iter().enumerate()) {
        match s.old {
            Some(i) if !s.changed => {
                let id = std::mem::replace(&mut files[i].id, input.id);
                spare.push((id, input.path, input.content));
            }
            _ => to_load.push((k, j, input)),
        }
    }
    crate::drop_aside(spare);
    let mut fresh_files: Vec<(usize, Old)> = to_load
        .into_par_iter()
        .map(|(k, j, input)| (k, load(FileId(j as u32), input, options)))
        .collect();
    fresh_files.sort_by_key(|(k, _)| std::cmp::Reverse(*k));
    let mut fresh_files = fresh_files.into_iter().peekable();
    let mut gone = Vec::new();
    let mut fresh = Vec::new();
    let mut removed = 0;
    // The file of the last compile that a new file goes before.
    let mut next_old = before;
    for (k, s) in steps.iter().enumerate().rev() {
        let new = fresh_files.next_if(|(at, _)| *at == k).map(|(_, o)| o);
        if let Some(new) = &new {
            fresh.push((new.source.path.clone(), has_gateway_api(&new.resources)));
        }
        match (s.old, s.new, new) {
            (Some(i), Some(_), Some(new)) => {
                let ((r0, k0), (r1, k1)) = (old_starts[i], old_starts[i + 1]);
                let resources = analysis.resources.splice(r0..r1, new.resources).collect();
                let skipped = analysis.skipped.splice(k0..k1, new.skipped).collect();
                let source = analysis.sources.replace(FileId(i as u32), new.source);
                let meta = std::mem::replace(&mut files[i], new.meta);
                gone.push(Old {
                    id: FileId(i as u32),
                    source,
                    resources,
                    skipped,
                    meta,
                });
            }
            (Some(i), None, _) => {
                let ((r0, k0), (r1, k1)) = (old_starts[i], old_starts[i + 1]);
                gone.push(Old {
                    id: FileId(i as u32),
                    resources: analysis.resources.drain(r0..r1).collect(),
                    skipped: analysis.skipped.drain(k0..k1).collect(),
                    source: analysis.sources.remove(FileId(i as u32)),
                    meta: files.remove(i),
                });
                removed += 1;
            }
            (None, Some(_), Some(new)) => {
                let (r, k) = old_starts[next_old];
                analysis.resources.splice(r..r, new.resources);
                analysis.skipped.splice(k..k, new.skipped);
                analysis.sources.insert(FileId(next_old as u32), new.source);
                files.insert(next_old, new.meta);
            }
            _ => {}
        }
        if let Some(i) = s.old {
            next_old = i;
        }
    }
    analysis.inputs = files.len();
    // Files after one that came or went have another id now.
    let now = starts(&files);
    let mut renumber = None;
    if files.len() != before || removed > 0 {
        let mut ids = vec![None; before];
        for s in &steps {
            if let (Some(i), Some(j)) = (s.old, s.new) {
                ids[i] = Some(FileId(j as u32));
                if i != j && !s.changed {
                    let ((r0, k0), (r1, k1)) = (now[j], now[j + 1]);
                    renumber_spans(
                        &mut analysis.resources[r0..r1],
                        &mut analysis.skipped[k0..k1],
                        &mut files[j].diagnostics,
                        FileId(j as u32),
                    );
                }
            }
        }
        renumber = Some(ids);
    }
    let edited = steps
        .iter()
        .filter(|s| s.changed)
        .map(|s| {
            let range = s.new.map_or(0..0, |j| now[j].0..now[j + 1].0);
            (s.old.map(|i| FileId(i as u32)), range)
        })
        .collect();
    let mut map = vec![change::GONE; old_starts[before].0];
    for s in steps.iter().filter(|s| !s.changed) {
        if let (Some(i), Some(j)) = (s.old, s.new) {
            let (from, to) = (old_starts[i].0..old_starts[i + 1].0, now[j].0);
            for (k, slot) in map[from].iter_mut().enumerate() {
                *slot = (to + k) as u32;
            }
        }
    }
    let positions = Positions {
        map,
        starts: old_starts.iter().map(|s| s.0).collect(),
    };
    let diagnostics = files
        .iter()
        .flat_map(|m| m.diagnostics.iter().cloned())
        .collect();
    let gathered = Gathered {
        analysis,
        diagnostics,
        loaded: fresh.len(),
        files,
        removed,
        gone,
        fresh,
        edited: Some(Edits {
            files: edited,
            renumber,
            positions: Some(positions),
        }),
    };
    (gathered, ir.ok())
}

/// Where each file's resources and skipped documents start, and the ends.
fn starts(files: &[Meta]) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(files.len() + 1);
    let (mut r, mut k) = (0, 0);
    for m in files {
        out.push((r, k));
        r += m.resources;
        k += m.skipped;
    }
    out.push((r, k));
    out
}

/// Assemble a compile from the previous one's files taken apart (`old`,
/// by path; `before` of them): unchanged files reused (renumbered), the
/// others loaded.
fn rebuild(
    mut old: HashMap<String, Old>,
    before: usize,
    inputs: Vec<Input>,
    options: &Options,
) -> Gathered {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for i in &inputs {
        *counts.entry(i.path.as_str()).or_default() += 1;
    }
    let unique: HashSet<String> = counts
        .into_iter()
        .filter(|(_, n)| *n == 1)
        .map(|(p, _)| p.to_string())
        .collect();
    enum Slot {
        Reused(Old),
        /// With the id its last version had.
        Load(Input, Option<FileId>),
    }
    let mut slots = Vec::with_capacity(inputs.len());
    let mut gone = Vec::new();
    // Each file of the last compile's id now.
    let mut renumber = vec![None; before];
    for (i, input) in inputs.into_iter().enumerate() {
        let previous = unique
            .contains(&input.path)
            .then(|| old.remove(&input.path))
            .flatten();
        if let Some(o) = &previous {
            renumber[o.id.0 as usize] = Some(FileId(i as u32));
        }
        match previous {
            Some(mut o) if o.meta.reusable && same_content(&input, &o.source, &o.meta) => {
                o.meta.id = input.id;
                slots.push(Slot::Reused(o));
            }
            Some(o) => {
                slots.push(Slot::Load(input, Some(o.id)));
                gone.push(o);
            }
            None => slots.push(Slot::Load(input, None)),
        }
    }
    let removed = old.len();
    // A file gone has no resources now (where does not matter).
    let mut edited: Vec<(Option<FileId>, std::ops::Range<usize>)> =
        old.values().map(|o| (Some(o.id), 0..0)).collect();
    gone.extend(old.into_values());
    let loaded: Vec<(Old, Option<Option<FileId>>)> = slots
        .into_par_iter()
        .enumerate()
        .map(|(i, slot)| {
            let id = FileId(i as u32);
            match slot {
                Slot::Reused(mut o) => {
                    if o.id != id {
                        renumber_file(&mut o, id);
                    }
                    (o, None)
                }
                Slot::Load(input, was) => (load(id, input, options), Some(was)),
            }
        })
        .collect();
    let mut analysis = Analysis {
        inputs: loaded.len(),
        ..Analysis::default()
    };
    let mut diagnostics = Vec::new();
    let mut files = Vec::with_capacity(loaded.len());
    let mut fresh = Vec::new();
    for (o, loaded) in loaded {
        let at = analysis.resources.len();
        if let Some(was) = loaded {
            fresh.push((o.source.path.clone(), has_gateway_api(&o.resources)));
            edited.push((was, at..at + o.resources.len()));
        }
        analysis.sources.add(o.source);
        analysis.resources.extend(o.resources);
        analysis.skipped.extend(o.skipped);
        diagnostics.extend(o.meta.diagnostics.iter().cloned());
        files.push(o.meta);
    }
    Gathered {
        analysis,
        diagnostics,
        files,
        loaded: fresh.len(),
        removed,
        gone,
        fresh,
        // Many files changed: the rules run again in full.
        edited: (edited.len() <= CARRY_MAX).then_some(Edits {
            files: edited,
            renumber: Some(renumber),
            positions: None,
        }),
    }
}

/// Whether a file holds a Gateway API Gateway: VirtualServices bind to
/// those by name, which the scope does not track.
fn has_gateway_api(resources: &[Resource]) -> bool {
    resources
        .iter()
        .any(|r| r.kind == crate::model::Kind::K8sGateway)
}

/// The resources of changed files that differ between `before` and `after`:
/// those only on one side, and both versions of those whose metadata or spec
/// changed (a file is often edited in one document of many).
fn differences<'r>(before: &'r [Resource], after: &[&'r Resource]) -> Vec<&'r Resource> {
    type Key<'k> = (crate::model::Kind, &'k str, &'k str);
    let mut old: HashMap<Key, Vec<&Resource>> = HashMap::new();
    for r in before {
        old.entry(r.identity()).or_default().push(r);
    }
    let mut out = Vec::new();
    for &r in after {
        let same = old.get_mut(&r.identity()).and_then(|v| {
            let i = v
                .iter()
                .position(|o| o.meta == r.meta && o.spec == r.spec)?;
            Some(v.swap_remove(i))
        });
        if same.is_none() {
            out.push(r);
        }
    }
    out.extend(old.into_values().flatten());
    out
}

/// The previous compile taken apart by file, and its IR when it had one.
fn take_apart(last: Last) -> (HashMap<String, Old>, Option<Arc<meshc_ir::Ir>>) {
    let Compiled { analysis, ir } = last.compiled;
    let mut resources = analysis.resources.into_iter();
    let mut skipped = analysis.skipped.into_iter();
    let mut out = HashMap::new();
    for (i, (source, meta)) in analysis
        .sources
        .into_files()
        .into_iter()
        .zip(last.files)
        .enumerate()
    {
        let old = Old {
            id: FileId(i as u32),
            resources: resources.by_ref().take(meta.resources).collect(),
            skipped: skipped.by_ref().take(meta.skipped).collect(),
            source,
            meta,
        };
        out.insert(old.source.path.clone(), old);
    }
    (out, ir.ok())
}

/// Whether `input` holds the bytes `source` was read from (with `meta`):
/// by id when both have one, else by comparing the bytes.
fn same_content(input: &Input, source: &SourceFile, meta: &Meta) -> bool {
    if let (Some(a), Some(b)) = (&input.id, &meta.id) {
        return a == b;
    }
    let Ok(bytes) = &input.content else {
        return false;
    };
    let bytes = if meta.bom {
        match bytes.strip_prefix("\u{feff}".as_bytes()) {
            Some(rest) => rest,
            None => return false,
        }
    } else {
        if bytes.starts_with("\u{feff}".as_bytes()) {
            return false;
        }
        bytes.as_slice()
    };
    bytes == source.text.as_bytes()
}

fn load(id: FileId, input: Input, options: &crate::Options) -> Old {
    let bom = input
        .content
        .as_ref()
        .is_ok_and(|b| b.starts_with("\u{feff}".as_bytes()));
    let content_id = input.id.clone();
    let FileResult {
        source,
        resources,
        diagnostics,
        skipped,
    } = load_file(id, input, options);
    let reusable = !diagnostics
        .iter()
        .any(|d| std::ptr::eq(d.rule, &load::UNREADABLE_FILE));
    Old {
        id,
        meta: Meta {
            resources: resources.len(),
            skipped: skipped.len(),
            diagnostics,
            bom,
            reusable,
            id: content_id,
        },
        source,
        resources,
        skipped,
    }
}

/// Give a reused file's spans its new id.
fn renumber_file(o: &mut Old, id: FileId) {
    o.id = id;
    renumber_spans(
        &mut o.resources,
        &mut o.skipped,
        &mut o.meta.diagnostics,
        id,
    );
}

/// Give one file's resources, skipped documents and loading diagnostics
/// the file id `id`.
fn renumber_spans(
    resources: &mut [Resource],
    skipped: &mut [Skipped],
    diagnostics: &mut [Diagnostic],
    id: FileId,
) {
    let span = |s: &mut Span| s.file = id;
    for r in resources {
        r.file = id;
        r.span.file = id;
        // Read again with the new number when a diagnostic needs it.
        r.yaml.tree.take();
    }
    for s in skipped {
        span(&mut s.span);
    }
    for d in diagnostics {
        span(&mut d.primary.span);
        d.related.iter_mut().for_each(|l| span(&mut l.span));
    }
}
