//! meshc's compiler: service-mesh policy text in, typed resources and
//! diagnostics out.
//!
//! The compiler does no I/O: callers hand it [`Input`]s (a path and bytes) and
//! get an [`Analysis`] back. Stages: decode and load YAML with spans
//! ([`yaml`]), identify each document, check it against its schema ([`schema`]),
//! deserialise it into the typed [`model`], index the repository
//! ([`analysis::Context`]) and run the semantic [`rules`]. Loading never fails
//! as a whole; everything wrong becomes a [`Diagnostic`].
//!
//! # Example
//! ```
//! use meshc_compiler::{analyze, Input, Options};
//! let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  http:\n  - timout: 5s\n";
//! let a = analyze(vec![Input::new("vs.yaml", yaml)], &Options::default());
//! assert_eq!(a.diagnostics[0].code(), "MC0010");
//! assert_eq!(a.diagnostics[0].message, "unknown field `timout`");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod analysis;
pub mod config;
pub mod diagnostic;
pub mod graph;
pub mod incremental;
pub mod lower;
pub mod model;
pub mod mtls;
mod naming;
pub mod policytest;
mod principals;
pub mod rules;
pub mod schema;
pub mod source;
pub mod synth;
pub mod yaml;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use rayon::prelude::*;

pub use analysis::{Context, Resource};
pub use config::{ConfigFile, Settings};
pub use diagnostic::{Diagnostic, Label, Severity};
pub use source::{FileId, LineCol, SourceFile, SourceMap, Span};
pub use yaml::{Limits, YamlPath};

use model::{Kind, Spec};
use rules::load;
use yaml::{Node, Value};

/// Annotation listing rule codes to suppress on a resource.
pub const IGNORE_ANNOTATION: &str = "meshc.dev/ignore";

/// One input file.
#[derive(Debug, Clone)]
pub struct Input {
    /// Path as shown in diagnostics.
    pub path: String,
    /// The bytes, or why they could not be had.
    pub content: Result<Vec<u8>, InputError>,
    /// What the caller knows identifies the bytes (a Git blob id): an
    /// incremental [`incremental::Session`] takes a file whose id is the one
    /// it compiled as unchanged without comparing its bytes. Two inputs of
    /// one path with the same id must have the same bytes.
    pub id: Option<Vec<u8>>,
}

/// Why an input has no bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// Larger than the limit; the size in bytes.
    TooLarge(u64),
    /// Could not be read.
    Io(String),
    /// Not read: the caller gave only the id of bytes an incremental
    /// [`incremental::Session`] has compiled ([`Input::known`]).
    NotRead,
}

impl Input {
    /// An input from text.
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> Self {
        Input {
            path: path.into(),
            content: Ok(text.into().into_bytes()),
            id: None,
        }
    }
    /// An input from bytes.
    pub fn bytes(path: impl Into<String>, bytes: Vec<u8>) -> Self {
        Input {
            path: path.into(),
            content: Ok(bytes),
            id: None,
        }
    }
    /// An input whose bytes the caller did not read, because the session
    /// it is given to compiled the file with this `id`
    /// ([`incremental::Session::has`]): the session takes the file as
    /// unchanged. Anywhere else (a plain compile, a session that does not
    /// have the id) the file is reported unreadable, never taken as empty.
    pub fn known(path: impl Into<String>, id: impl Into<Vec<u8>>) -> Self {
        Input {
            path: path.into(),
            content: Err(InputError::NotRead),
            id: Some(id.into()),
        }
    }
    /// The same input, its bytes identified by `id` ([`Input::id`]).
    pub fn with_id(self, id: impl Into<Vec<u8>>) -> Self {
        Input {
            id: Some(id.into()),
            ..self
        }
    }
}

/// What a run is configured with.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Resolved settings.
    pub settings: Settings,
    /// Loader limits.
    pub limits: Limits,
    /// Source of the settings (`meshc.toml`), to locate configuration problems.
    pub config_source: Option<(String, String)>,
}

impl Options {
    /// The options of a `meshc.toml` (or the default file) found at `source`
    /// (shown path, text), with the default limits.
    pub fn from_config(file: &ConfigFile, source: Option<(String, String)>) -> Options {
        Options {
            settings: Settings::resolve(file),
            limits: Limits::default(),
            config_source: source,
        }
    }
}

/// A document meshc does not model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Where it is.
    pub span: Span,
    /// Its `apiVersion`.
    pub api_version: String,
    /// Its `kind`.
    pub kind: String,
}

/// The result of analysing a set of inputs.
#[derive(Debug, Default)]
pub struct Analysis {
    /// The inputs' text, addressed by the spans.
    pub sources: SourceMap,
    /// Resources meshc models, in input order.
    pub resources: Vec<Resource>,
    /// Findings, sorted by file, position and code.
    pub diagnostics: Vec<Diagnostic>,
    /// Documents of kinds meshc does not model.
    pub skipped: Vec<Skipped>,
    /// Number of inputs (the first `inputs` files of `sources`; a `meshc.toml`
    /// with problems may follow them).
    pub inputs: usize,
}

impl Analysis {
    /// Count of diagnostics at `severity`.
    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }
}

struct FileResult {
    source: SourceFile,
    resources: Vec<Resource>,
    diagnostics: Vec<Diagnostic>,
    skipped: Vec<Skipped>,
}

/// Analyse `inputs`: load, check schemas, run every rule.
pub fn analyze(inputs: Vec<Input>, options: &Options) -> Analysis {
    run(inputs, options, false).0
}

/// Why a repository was not lowered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileError {
    /// It has this many error diagnostics; they say why.
    Diagnostics(usize),
    /// Lowering met what the IR cannot express.
    Lowering(Vec<lower::LowerError>),
}

/// The result of [`compile`].
#[derive(Debug)]
pub struct Compiled {
    /// The analysis, as [`analyze`] gives it.
    pub analysis: Analysis,
    /// The IR, unless the repository has errors. Shared: a server keeps
    /// serving it while an incremental [`Session`](incremental::Session)
    /// keeps it to patch on the next compile (copying it only then, and only
    /// when someone still holds it).
    pub ir: Result<std::sync::Arc<meshc_ir::Ir>, CompileError>,
}

/// Analyse `inputs` and, when no diagnostic is an error, lower them to IR.
pub fn compile(inputs: Vec<Input>, options: &Options) -> Compiled {
    let (analysis, ir) = run(inputs, options, true);
    Compiled {
        analysis,
        ir: ir.expect("lowering was asked for").map(std::sync::Arc::new),
    }
}

fn run(
    inputs: Vec<Input>,
    options: &Options,
    lower: bool,
) -> (Analysis, Option<Result<meshc_ir::Ir, CompileError>>) {
    let results: Vec<FileResult> = inputs
        .into_par_iter()
        .enumerate()
        .map(|(i, input)| load_file(FileId(i as u32), input, options))
        .collect();
    let mut analysis = Analysis {
        inputs: results.len(),
        // Sized once: growing the analysis's largest list by doubling copied
        // it over and over.
        resources: Vec::with_capacity(results.iter().map(|r| r.resources.len()).sum()),
        ..Analysis::default()
    };
    let mut diagnostics = Vec::new();
    for r in results {
        analysis.sources.add(r.source);
        analysis.resources.extend(r.resources);
        diagnostics.extend(r.diagnostics);
        analysis.skipped.extend(r.skipped);
    }
    let lowering = if lower {
        Lowering::Full
    } else {
        Lowering::None
    };
    let (ir, _) = finish(&mut analysis, diagnostics, options, lowering, None);
    (analysis, ir)
}

/// How [`finish`] lowers.
pub(crate) enum Lowering<'p> {
    /// Not at all.
    None,
    /// The whole repository.
    Full,
    /// Only what a change touched, on top of the previous IR (the closure
    /// says what, or `None` for everything).
    Scoped(&'p mut dyn FnMut(&Context) -> Option<lower::Scope>),
}

/// What a compile keeps for the next one in a session: its registry and
/// its rules' findings, one list per rule.
pub(crate) struct Kept {
    pub registry: analysis::Registry,
    pub findings: Vec<Vec<Diagnostic>>,
    pub runs: rules::RuleRuns,
    pub registry_use: incremental::RegistryUse,
}

/// The last compile's registry and findings, and what changed since.
pub(crate) struct Previous {
    pub registry: analysis::Registry,
    pub findings: Vec<Vec<Diagnostic>>,
    pub change: incremental::Change,
}

/// Everything after loading: the registry, every rule, config problems,
/// suppression, the sort, and lowering when there is no error.
/// `diagnostics` are the loading stages' findings; `previous`, in a
/// session, lets the registry and the findings the change cannot affect be
/// kept.
pub(crate) fn finish(
    analysis: &mut Analysis,
    mut diagnostics: Vec<Diagnostic>,
    options: &Options,
    lowering: Lowering,
    previous: Option<Previous>,
) -> (Option<Result<meshc_ir::Ir, CompileError>>, Kept) {
    let previous = previous.map(|mut p| {
        if let Some(pairs) = p.change.registry_patch() {
            let delta = p
                .registry
                .patch(pairs, &analysis.resources, &options.settings);
            p.change.patched(delta);
            // Tests compile small repositories: check every patch there.
            debug_assert!(
                !p.change.registry_kept()
                    || analysis.resources.len() > 5_000
                    || p.registry
                        == analysis::Registry::new(&analysis.resources, &options.settings),
                "a patched registry differs from one built afresh"
            );
        }
        p
    });
    let (registry, last, registry_use) = match previous {
        Some(mut p) if p.change.registry_kept() => {
            if p.registry
                .forget_stale(&p.change, &analysis.resources, &options.settings)
            {
                p.change.add_parts(analysis::parts::CALLS);
            }
            let used = match p.change.delta() {
                Some(_) => incremental::RegistryUse::Patched,
                None => incremental::RegistryUse::Kept,
            };
            (p.registry, Some((p.findings, p.change)), used)
        }
        // Resources came or went: it moves to their new positions, and
        // takes the new ones in.
        Some(mut p) if p.change.shifts() => {
            let delta = p
                .registry
                .shift(&p.change, &analysis.resources, &options.settings);
            // Tests compile small repositories: check every move there.
            debug_assert!(
                analysis.resources.len() > 5_000
                    || p.registry
                        == analysis::Registry::new(&analysis.resources, &options.settings),
                "a moved registry differs from one built afresh"
            );
            p.change.shifted(delta);
            let last = Some((p.findings, p.change));
            (p.registry, last, incremental::RegistryUse::Shifted)
        }
        // Resources came or went: built again, the rules may still carry
        // their findings over when it holds what the last one did.
        Some(mut p) if p.change.moved() => {
            let registry = analysis::Registry::new(&analysis.resources, &options.settings);
            let alike = p.registry.same_but_positions(&registry);
            drop_aside(p.registry);
            let last = alike.then(|| {
                p.change
                    .rebuilt_alike(&options.settings.cluster_domain, &analysis.resources);
                (p.findings, p.change)
            });
            (registry, last, incremental::RegistryUse::Built)
        }
        other => {
            if let Some(p) = other {
                drop_aside(p.registry);
            }
            (
                analysis::Registry::new(&analysis.resources, &options.settings),
                None,
                incremental::RegistryUse::Built,
            )
        }
    };
    let ctx = Context::new(&analysis.resources, &options.settings, &registry);
    let (findings, runs) = rules::check_all(&ctx, last.as_ref().map(|(f, c)| (f.as_slice(), c)));
    drop(last);
    diagnostics.extend(findings.iter().flatten().cloned());
    config_problems(options, &mut analysis.sources, &mut diagnostics);
    let diagnostics = suppress(&analysis.resources, &options.settings, diagnostics);
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let ir = match lowering {
        Lowering::None => None,
        _ if errors > 0 => Some(Err(CompileError::Diagnostics(errors))),
        Lowering::Full => Some(lower::lower(&ctx).map_err(CompileError::Lowering)),
        Lowering::Scoped(scope) => Some(
            match scope(&ctx) {
                Some(scope) => lower::lower_scoped(&ctx, scope),
                None => lower::lower(&ctx),
            }
            .map_err(CompileError::Lowering),
        ),
    };
    analysis.diagnostics = sort(&analysis.sources, diagnostics);
    let kept = Kept {
        registry,
        findings,
        runs,
        registry_use,
    };
    (ir, kept)
}

fn load_file(id: FileId, input: Input, options: &Options) -> FileResult {
    let limits = &options.limits;
    let mut out = FileResult {
        source: SourceFile::new(input.path.clone(), ""),
        resources: Vec::new(),
        diagnostics: Vec::new(),
        skipped: Vec::new(),
    };
    let empty = Span::new(id, 0, 0);
    let bytes = match input.content {
        Ok(b) if b.len() > limits.max_file_bytes => Err(InputError::TooLarge(b.len() as u64)),
        other => other,
    };
    let text = match bytes {
        Err(InputError::TooLarge(n)) => {
            let d = Diagnostic::new(
                &load::UNREADABLE_FILE,
                format!(
                    "file is {n} bytes, over the {} byte limit",
                    limits.max_file_bytes
                ),
                Label::new(empty),
            )
            .with_help(
                "policy files are small; split it, or exclude generated files from the lint paths",
            );
            out.diagnostics.push(d);
            return out;
        }
        Err(InputError::Io(e)) => {
            out.diagnostics.push(Diagnostic::new(
                &load::UNREADABLE_FILE,
                format!("cannot read file: {e}"),
                Label::new(empty),
            ));
            return out;
        }
        Err(InputError::NotRead) => {
            out.diagnostics.push(Diagnostic::new(
                &load::UNREADABLE_FILE,
                "file not read: only its id was given, and this compile has not seen that id",
                Label::new(empty),
            ));
            return out;
        }
        Ok(b) => match String::from_utf8(b) {
            Ok(t) => t,
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let valid = String::from_utf8_lossy(&e.as_bytes()[..at]).into_owned();
                out.source = SourceFile::new(input.path, valid);
                let d = Diagnostic::new(
                    &load::UNREADABLE_FILE,
                    format!("file is not UTF-8 (invalid byte at offset {at})"),
                    Label::new(Span::new(id, at, at)),
                )
                .with_help("save the file as UTF-8");
                out.diagnostics.push(d);
                return out;
            }
        },
    };
    let text = text
        .strip_prefix('\u{feff}')
        .map(str::to_owned)
        .unwrap_or(text);
    out.source = SourceFile::new(input.path, text);
    let docs = yaml::load(id, &out.source, limits, &mut out.diagnostics);
    let text = out.source.text.clone();
    let ns = &options.settings.default_namespace;
    for doc in docs {
        let Some(root) = doc.root else { continue };
        let origin = |base| Origin {
            file: id,
            text: &text,
            doc: doc.index,
            doc_span: doc.span,
            at: doc.at,
            base,
        };
        match list_items(root) {
            Ok(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    identify(item, origin(path!["items", i]), ns, &mut out);
                }
            }
            Err(root) => identify(root, origin(YamlPath::default()), ns, &mut out),
        }
    }
    out
}

/// The items of a `v1` `List` document (what `kubectl get -o yaml` prints), or
/// the document itself when it is not one.
fn list_items(root: Node) -> Result<Vec<Node>, Node> {
    let is_list = root.get("apiVersion").and_then(Node::as_str) == Some("v1")
        && root.get("kind").and_then(Node::as_str) == Some("List")
        && matches!(root.get("items").map(|n| &n.value), Some(Value::Seq(_)));
    match root.value {
        Value::Map(entries) if is_list => Ok(entries
            .into_iter()
            .find(|e| e.key == "items")
            .map(|e| match e.value.value {
                Value::Seq(items) => items,
                _ => Vec::new(),
            })
            .unwrap_or_default()),
        value => Err(Node { value, ..root }),
    }
}

/// Where an object was read.
struct Origin<'a> {
    file: FileId,
    /// The file's text.
    text: &'a Arc<str>,
    /// Its document's position in the file, text and place in the stream.
    doc: usize,
    doc_span: Span,
    at: yaml::DocAt,
    /// Where the object is in the document.
    base: YamlPath,
}

/// Read a document's identity, check its schema and type it.
fn identify(root: Node, origin: Origin<'_>, default_namespace: &str, out: &mut FileResult) {
    let Origin {
        file,
        text,
        doc,
        doc_span,
        at,
        ref base,
    } = origin;
    if matches!(root.value, Value::Null) {
        return;
    }
    let identity_error = |out: &mut FileResult, span: Span, path: YamlPath, msg: String| {
        out.diagnostics.push(Diagnostic::new(
            &load::RESOURCE_IDENTITY,
            msg,
            Label::new(span).with_path(base.concat(&path)),
        ));
    };
    if !matches!(root.value, Value::Map(_)) {
        identity_error(
            out,
            root.span,
            YamlPath::default(),
            "document is not a mapping".into(),
        );
        return;
    }
    let str_field = |key: &str| root.get(key).and_then(Node::as_str).map(str::to_owned);
    let (Some(api_version), Some(kind_name)) = (str_field("apiVersion"), str_field("kind")) else {
        let missing = if str_field("apiVersion").is_none() {
            "apiVersion"
        } else {
            "kind"
        };
        let span = root.get(missing).map_or(
            Span::new(file, doc_span.start as usize, doc_span.start as usize),
            |n| n.span,
        );
        identity_error(
            out,
            span,
            path![missing],
            format!("document has no string `{missing}`"),
        );
        return;
    };
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
    let Some(kind) = Kind::lookup(group, &kind_name) else {
        out.skipped.push(Skipped {
            span: root.span,
            api_version,
            kind: kind_name,
        });
        return;
    };
    let kind_span = root.get("kind").map_or(root.span, |n| n.span);
    if !kind.versions().contains(&version) {
        let span = root.get("apiVersion").map_or(root.span, |n| n.span);
        let d = Diagnostic::new(
            &load::SCHEMA,
            format!("{kind_name} is not served at `{api_version}`"),
            Label::new(span).with_path(base.concat(&path!["apiVersion"])),
        )
        .with_help(format!(
            "use one of: {}",
            kind.versions()
                .iter()
                .map(|v| format!("{group}/{v}").trim_start_matches('/').to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.diagnostics.push(d);
        return;
    }
    let meta = root.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .map(str::to_owned);
    let Some(name) = name else {
        let span = meta.map_or(kind_span, |m| m.span);
        identity_error(
            out,
            span,
            path!["metadata", "name"],
            format!("{kind_name} has no `metadata.name`"),
        );
        return;
    };
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Node::as_str)
        .unwrap_or(default_namespace)
        .to_owned();
    let resource_name = format!("{} {namespace}/{name}", kind.qualified());
    let violations = schema::validate_tree(kind, &root);
    for v in &violations {
        let (span, key) = root.locate(&v.path.0);
        let span = if v.at_key { key.unwrap_or(span) } else { span };
        let mut d = Diagnostic::new(
            &load::SCHEMA,
            v.message.clone(),
            Label::new(span).with_path(base.concat(&v.path)),
        )
        .with_resource(resource_name.clone());
        if v.at_key {
            d = d.with_help("remove the field, or fix its spelling; unknown fields are rejected by the API server");
        }
        out.diagnostics.push(d);
    }
    let typed = Spec::from_node(kind, &root);
    let (meta, spec) = match typed {
        Ok((meta, spec)) => (meta, Some(spec)),
        Err(e) => {
            if violations.is_empty() {
                let d = Diagnostic::new(
                    &load::SCHEMA,
                    format!("cannot read {kind_name}: {e}"),
                    Label::new(root.span),
                )
                .with_resource(resource_name);
                out.diagnostics.push(d);
            }
            (
                model::ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    ..Default::default()
                },
                None,
            )
        }
    };
    out.resources.push(Resource {
        file,
        doc,
        span: root.span,
        yaml: analysis::Yaml {
            text: text.clone(),
            at,
            tree: Default::default(),
        },
        base: base.clone(),
        kind,
        api_version,
        name,
        namespace,
        meta,
        spec: spec.map(Box::new),
    });
}

/// `MC0007`: resources declared twice. A rule like the others (`rules::CHECKS`).
pub(crate) fn check_duplicates(ctx: &Context, out: &mut Vec<Diagnostic>) {
    let resources = ctx.resources;
    // Each resource declared again, with the first of its identity, in
    // order: only hashes that several resources share are looked at.
    let mut again: Vec<(usize, usize)> = Vec::new();
    for v in ctx.identities().more.values() {
        for (k, &i) in v.iter().enumerate() {
            let id = resources[i].identity();
            if let Some(&first) = v[..k].iter().find(|&&j| resources[j].identity() == id) {
                again.push((i, first));
            }
        }
    }
    again.sort_unstable();
    for (i, first) in again {
        let (r, first) = (&resources[i], &resources[first]);
        let d = r
            .diag(
                &load::DUPLICATE_RESOURCE,
                path!["metadata", "name"],
                format!("{} is declared twice", r.display()),
            )
            .with_related(
                first
                    .label(path!["metadata", "name"])
                    .with_message("first declared here"),
            )
            .with_help("only one of them exists in the cluster; merge them or rename one");
        out.push(d);
    }
}

/// Free `value` on a thread of its own: a registry of 10,000 services
/// takes ~30-40 ms to free, which a compile that built a new one need not
/// wait for. (When no thread can be started, it is freed here.)
fn drop_aside<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("meshc-free".into())
        .spawn(move || drop(value));
}

/// Report unknown codes in `meshc.toml` as `MC0020`, located in the file.
fn config_problems(options: &Options, sources: &mut SourceMap, out: &mut Vec<Diagnostic>) {
    if options.settings.problems.is_empty() {
        return;
    }
    let (path, text) = options
        .config_source
        .clone()
        .unwrap_or_else(|| ("meshc.toml".into(), String::new()));
    let id = sources.add(SourceFile::new(path, text.clone()));
    for (range, message) in &options.settings.problems {
        // The range includes the quotes of a TOML string; point at its content.
        let quoted = text
            .get(range.clone())
            .is_some_and(|t| t.len() >= 2 && t.starts_with('"'));
        let span = if quoted {
            Span::new(id, range.start + 1, range.end - 1)
        } else {
            Span::new(id, range.start, range.end)
        };
        out.push(
            Diagnostic::new(&load::UNKNOWN_CODE, message.clone(), Label::new(span))
                .with_help("`meshc rules` lists every code"),
        );
    }
}

/// Apply `meshc.dev/ignore` annotations, select/ignore and severity overrides.
fn suppress(
    resources: &[Resource],
    settings: &Settings,
    diagnostics: Vec<Diagnostic>,
) -> Vec<Diagnostic> {
    let mut ignored: HashMap<String, Vec<String>> = HashMap::new();
    let mut out = Vec::new();
    for r in resources {
        let Some(value) = r
            .meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(IGNORE_ANNOTATION))
        else {
            continue;
        };
        let codes: Vec<String> = value
            .split([',', ' '])
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_ascii_uppercase)
            .collect();
        for code in &codes {
            if !config::is_known_selector(code) {
                let p = path!["metadata", "annotations", IGNORE_ANNOTATION];
                out.push(
                    r.diag(
                        &load::UNKNOWN_CODE,
                        p,
                        format!("`{code}` in `{IGNORE_ANNOTATION}` names no rule"),
                    )
                    .with_help("`meshc rules` lists every code"),
                );
            }
        }
        ignored.entry(r.display()).or_default().extend(codes);
    }
    out.extend(diagnostics.into_iter().filter(|d| {
        let by_annotation = d
            .resource
            .as_ref()
            .and_then(|r| ignored.get(r))
            .is_some_and(|codes| codes.iter().any(|c| d.code().starts_with(c.as_str())));
        !by_annotation
    }));
    out.retain(|d| settings.enabled(d.code()));
    for d in &mut out {
        if let Some(s) = settings.severity.get(d.code()) {
            d.severity = *s;
        }
    }
    out
}

fn sort(sources: &SourceMap, mut diagnostics: Vec<Diagnostic>) -> Vec<Diagnostic> {
    diagnostics.sort_by(|a, b| {
        let pa = &sources.get(a.primary.span.file).path;
        let pb = &sources.get(b.primary.span.file).path;
        (pa, a.primary.span.start, a.code(), &a.message).cmp(&(
            pb,
            b.primary.span.start,
            b.code(),
            &b.message,
        ))
    });
    let mut seen = BTreeSet::new();
    diagnostics.retain(|d| seen.insert((d.primary.span, d.code(), d.message.clone())));
    diagnostics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_items_are_resources_and_paths_name_the_item() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1\n  kind: Gateway\n  metadata: {name: a}\n  spec:\n    selector: {istio: ingressgateway}\n    servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [x.example.com]}]\n- apiVersion: networking.istio.io/v1\n  kind: Gateway\n  metadata: {name: b}\n  spec:\n    selector: {istio: ingressgateway}\n    servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [x.example.com]}]\n- apiVersion: networking.istio.io/v1\n  kind: Gateway\n  metadata: {name: c}\n  spec: {bogus: 1}\n";
        let a = analyze(vec![Input::new("l.yaml", text)], &Options::default());
        assert_eq!(a.resources.len(), 3);
        let paths: Vec<(String, String)> = a
            .diagnostics
            .iter()
            .map(|d| {
                (
                    d.code().to_string(),
                    d.primary
                        .path
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                )
            })
            .collect();
        assert!(
            paths.contains(&("MC0010".into(), "items[2].spec.bogus".into())),
            "{paths:?}"
        );
        assert!(
            paths.contains(&(
                "MC0206".into(),
                "items[0].spec.servers[0].port.number".into()
            )),
            "{paths:?}"
        );
    }

    #[test]
    fn a_list_that_is_not_v1_is_not_unpacked() {
        let text = "apiVersion: example.com/v1\nkind: List\nitems: [{apiVersion: v1, kind: Namespace, metadata: {name: x}}]\n";
        let a = analyze(vec![Input::new("l.yaml", text)], &Options::default());
        assert!(a.resources.is_empty());
        assert_eq!(a.skipped.len(), 1);
    }
}
