//! Spanned YAML loading: text in, documents of [`Node`]s plus diagnostics out.
//!
//! Built on `saphyr-parser`'s event stream (a maintained, pure-Rust YAML 1.2 parser)
//! so that every key, value and item keeps its byte range. On top of the events this
//! module enforces what policy files need: duplicate keys are errors, aliases are
//! expanded under a node budget (no alias bombs), nesting is bounded, and a stream is
//! split at document markers first so a broken document never hides its neighbours.
//! Parsing never fails as a whole.

use std::collections::{HashMap, HashSet};
use std::fmt;

use compact_str::CompactString;
use saphyr_parser::{Event, Parser, ScalarStyle};

pub mod de;
mod fast;

use crate::diagnostic::{Diagnostic, Label};
use crate::rules::load;
use crate::source::{FileId, SourceFile, Span};

/// Bounds that keep hostile input cheap.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest nesting of sequences and mappings in a document.
    pub max_depth: usize,
    /// Most nodes that alias expansion may add to one document.
    pub max_alias_nodes: usize,
    /// Largest file accepted, in bytes.
    pub max_file_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_alias_nodes: 100_000,
            max_file_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A YAML value with the span of its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where the value is written (for an alias: where the anchored value is).
    pub span: Span,
}

/// A YAML value after core-schema resolution.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string (quoted, block, or a plain scalar that is no other type).
    /// Up to 24 bytes are kept inline: most keys and values of a policy
    /// file are that short, so a loaded tree allocates for few of them.
    String(CompactString),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order, keys unique.
    Map(Vec<Entry>),
}

/// One mapping entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key as a string.
    pub key: CompactString,
    /// Where the key is written.
    pub key_span: Span,
    /// The value.
    pub value: Node,
}

impl Node {
    /// The value of `key` if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }
    /// The entry for `key` if this is a mapping that has it.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }
    /// The string, if this is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    /// Follow a path from this node.
    pub fn at(&self, path: &[PathSeg]) -> Option<&Node> {
        let mut node = self;
        for seg in path {
            node = match (seg, &node.value) {
                (PathSeg::Key(k), Value::Map(_)) => node.get(k)?,
                (PathSeg::Index(i), Value::Seq(items)) => items.get(*i as usize)?,
                _ => return None,
            };
        }
        Some(node)
    }
    /// The span best describing `path`: the value's span, or the deepest existing
    /// ancestor's. For a mapping key that exists, `key_span` gives the key.
    pub fn locate(&self, path: &[PathSeg]) -> (Span, Option<Span>) {
        let mut node = self;
        let mut key_span = None;
        for seg in path {
            let next = match (seg, &node.value) {
                (PathSeg::Key(k), Value::Map(_)) => node.entry(k).map(|e| {
                    key_span = Some(e.key_span);
                    &e.value
                }),
                (PathSeg::Index(i), Value::Seq(items)) => {
                    key_span = None;
                    items.get(*i as usize)
                }
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return (node.span, None),
            }
        }
        (node.span, key_span)
    }
    /// Convert to JSON for schema validation and typed deserialisation. Mapping
    /// entries whose value is `null` are dropped, as the Kubernetes API server
    /// prunes them: `null` means "not set".
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::String(s) => J::String(s.as_str().to_owned()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .filter(|e| e.value.value != Value::Null)
                    .map(|e| (e.key.as_str().to_owned(), e.value.to_json()))
                    .collect(),
            ),
        }
    }
    /// Count of nodes in this tree.
    fn size(&self) -> usize {
        match &self.value {
            Value::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Value::Map(entries) => 1 + entries.iter().map(|e| e.value.size()).sum::<usize>(),
            _ => 1,
        }
    }
}

/// One step of a YAML path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathSeg {
    /// A mapping key.
    Key(Box<str>),
    /// A sequence index.
    Index(u32),
}

impl From<&str> for PathSeg {
    fn from(s: &str) -> Self {
        PathSeg::Key(s.into())
    }
}
impl From<usize> for PathSeg {
    fn from(i: usize) -> Self {
        PathSeg::Index(i as u32)
    }
}

/// A path into a document, displayed as `spec.http[1].route[0].destination.subset`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct YamlPath(pub Vec<PathSeg>);

impl YamlPath {
    /// Parse a JSON pointer (`/spec/http/1`) against a document so that indices
    /// into sequences become indices and everything else keys.
    pub fn from_pointer(root: &Node, pointer: &str) -> YamlPath {
        let mut segs = Vec::new();
        let mut node = Some(root);
        for raw in pointer.split('/').skip(1) {
            let key = raw.replace("~1", "/").replace("~0", "~");
            let seg = match node.map(|n| &n.value) {
                Some(Value::Seq(_)) => key
                    .parse::<u32>()
                    .map_or_else(|_| PathSeg::Key(key.clone().into()), PathSeg::Index),
                _ => PathSeg::Key(key.into()),
            };
            node = node.and_then(|n| n.at(std::slice::from_ref(&seg)));
            segs.push(seg);
        }
        YamlPath(segs)
    }
    /// Append a segment.
    pub fn push(&mut self, seg: impl Into<PathSeg>) {
        self.0.push(seg.into());
    }
    /// This path followed by `rest`.
    pub fn concat(&self, rest: &YamlPath) -> YamlPath {
        let mut p = self.clone();
        p.0.extend(rest.0.iter().cloned());
        p
    }
    /// A copy with one more segment.
    pub fn join(&self, seg: impl Into<PathSeg>) -> YamlPath {
        let mut p = self.clone();
        p.push(seg);
        p
    }
}

/// Build a path from segments: `path!["spec", "http", 1usize]`.
#[macro_export]
macro_rules! path {
    ($($seg:expr),* $(,)?) => { $crate::yaml::YamlPath(vec![$($crate::yaml::PathSeg::from($seg)),*]) };
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                PathSeg::Index(n) => write!(f, "[{n}]")?,
                PathSeg::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                PathSeg::Key(k) => write!(f, "[{k:?}]")?,
            }
        }
        Ok(())
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    /// 0-based position of the document in its file.
    pub index: usize,
    /// The root node; `None` for an empty document or one that failed to parse.
    pub root: Option<Node>,
    /// The document's text range.
    pub span: Span,
    /// Where to find it again: [`DocAt::load`] reads just this document.
    pub at: DocAt,
}

/// Where a document is in its file's text: the chunk of the stream that
/// holds it (the text from one `---` line to the next) and its position
/// among the chunk's documents. Enough to read that document again without
/// the rest of the file, the way [`load`] read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocAt {
    start: u32,
    end: u32,
    nth: u32,
}

impl DocAt {
    /// The byte range of the document in its file's text.
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
    /// Read the document again from `text`, the text of file `file_id` it
    /// was loaded from, with the same spans as the first time. `None` when
    /// `text` is not that text any more.
    pub fn load(self, file_id: FileId, text: &str) -> Option<Node> {
        let chunk = text.get(self.start as usize..self.end as usize)?;
        let start = self.start as usize;
        let local;
        let positions = if chunk.is_ascii() {
            Positions::Ascii(start)
        } else {
            // A file of its own, so the line index covers the chunk only.
            local = SourceFile::new(String::new(), chunk);
            Positions::Lines {
                file: &local,
                line_offset: 0,
                byte_offset: start,
            }
        };
        // The text loaded once within the caller's limits; these only
        // bound what that load already accepted.
        let limits = Limits {
            max_depth: usize::MAX,
            max_alias_nodes: usize::MAX,
            max_file_bytes: usize::MAX,
        };
        if self.nth == 0
            && chunk.is_ascii()
            && let Some(doc) = fast::read(chunk, file_id, start, limits.max_depth)
        {
            return doc;
        }
        let mut loader = Loader::new(file_id, positions, &limits);
        let mut parser = Parser::new_from_str(chunk);
        for _ in 0..self.nth {
            // The documents before it; an error or the end means the text changed.
            loader.next_document(&mut parser).ok()??;
        }
        loader.next_document(&mut parser).ok().flatten().flatten()
    }
}

/// Load every document of `file`. Returns the documents that could be read (a
/// failed one has `root: None`) and the diagnostics of the ones that could not.
pub fn load(
    file_id: FileId,
    file: &SourceFile,
    limits: &Limits,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Document> {
    load_with(file_id, file, limits, diags, true)
}

/// [`load`], with or without the fast path for plain block YAML (tests
/// compare the two).
#[doc(hidden)]
pub fn load_with(
    file_id: FileId,
    file: &SourceFile,
    limits: &Limits,
    diags: &mut Vec<Diagnostic>,
    fast_path: bool,
) -> Vec<Document> {
    let mut docs = Vec::new();
    for chunk in split_documents(&file.text) {
        let chunk_text = &file.text[chunk.start..chunk.end];
        let ascii = chunk_text.is_ascii();
        if fast_path
            && ascii
            && let Some(doc) = fast::read(chunk_text, file_id, chunk.start, limits.max_depth)
        {
            if let Some(root) = doc {
                docs.push(Document {
                    index: docs.len(),
                    root: Some(root),
                    span: Span::new(file_id, chunk.start, chunk.end),
                    at: DocAt {
                        start: chunk.start as u32,
                        end: chunk.end as u32,
                        nth: 0,
                    },
                });
            }
            continue;
        }
        let positions = if ascii {
            Positions::Ascii(chunk.start)
        } else {
            Positions::Lines {
                file,
                line_offset: chunk.first_line - 1,
                byte_offset: 0,
            }
        };
        let mut loader = Loader::new(file_id, positions, limits);
        let mut parser = Parser::new_from_str(chunk_text);
        let doc_span = Span::new(file_id, chunk.start, chunk.end);
        for nth in 0.. {
            let at = DocAt {
                start: chunk.start as u32,
                end: chunk.end as u32,
                nth,
            };
            let (root, last) = match loader.next_document(&mut parser) {
                Ok(Some(root)) => (root, false),
                Ok(None) => break,
                Err(diag) => {
                    diags.push(*diag);
                    (None, true)
                }
            };
            docs.push(Document {
                index: docs.len(),
                root,
                span: doc_span,
                at,
            });
            if last {
                break;
            }
        }
    }
    docs
}

/// How many of `text`'s document chunks the fast path reads, and how many
/// there are (for tests and measurements).
#[doc(hidden)]
pub fn fast_path_coverage(text: &str) -> (usize, usize) {
    let chunks = split_documents(text);
    let max_depth = Limits::default().max_depth;
    let read = chunks
        .iter()
        .filter(|c| fast::read(&text[c.start..c.end], FileId(0), c.start, max_depth).is_some())
        .count();
    (read, chunks.len())
}

struct Chunk {
    start: usize,
    end: usize,
    first_line: usize,
}

/// Split a stream at lines that start a document (`---`), keeping the marker line
/// with the document it starts. A chunk holding only comments yields no document.
fn split_documents(text: &str) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let (mut start, mut first_line) = (0usize, 1usize);
    let (mut offset, mut line) = (0usize, 1usize);
    for l in text.split_inclusive('\n') {
        let is_marker =
            l.starts_with("---") && l[3..].chars().next().is_none_or(|c| c.is_whitespace());
        if is_marker && offset > start {
            chunks.push(Chunk {
                start,
                end: offset,
                first_line,
            });
            start = offset;
            first_line = line;
        }
        offset += l.len();
        line += 1;
    }
    chunks.push(Chunk {
        start,
        end: text.len(),
        first_line,
    });
    chunks
}

/// An open sequence or mapping. Its children wait on the loader's shared
/// `items` and `entries` stacks from index `from`, and become one exactly
/// sized `Vec` when it ends: no per-node vector grows by doubling.
enum Frame {
    Seq {
        start: Span,
        anchor: usize,
        from: usize,
    },
    Map {
        start: Span,
        anchor: usize,
        from: usize,
        key: Option<(CompactString, Span)>,
        seen: Option<HashSet<CompactString>>,
        merges: Vec<Node>,
    },
}

/// How a loader turns the parser's positions into byte offsets of the file.
enum Positions<'a> {
    /// The text given to the parser is ASCII and starts at this offset of
    /// the file: characters are bytes, so a position is that plus the
    /// parser's character index.
    Ascii(usize),
    /// Otherwise by line and column through `file`'s line index (the whole
    /// file, or a chunk of it as a file of its own): the parser's line 1 is
    /// its line `line_offset + 1`, and its text starts `byte_offset` bytes
    /// into the file.
    Lines {
        file: &'a SourceFile,
        line_offset: usize,
        byte_offset: usize,
    },
}

struct Loader<'a> {
    file_id: FileId,
    positions: Positions<'a>,
    limits: &'a Limits,
    stack: Vec<Frame>,
    items: Vec<Node>,
    entries: Vec<Entry>,
    anchors: HashMap<usize, Node>,
    alias_nodes: usize,
}

type LoadResult<T> = Result<T, Box<Diagnostic>>;

impl<'a> Loader<'a> {
    fn new(file_id: FileId, positions: Positions<'a>, limits: &'a Limits) -> Self {
        Loader {
            file_id,
            positions,
            limits,
            stack: Vec::new(),
            items: Vec::new(),
            entries: Vec::new(),
            anchors: HashMap::new(),
            alias_nodes: 0,
        }
    }

    /// The file's byte offset of a parser position.
    fn offset(&self, m: &saphyr_parser::Marker) -> usize {
        match self.positions {
            Positions::Ascii(start) => start + m.index(),
            Positions::Lines {
                file,
                line_offset,
                byte_offset,
            } => byte_offset + file.offset_of(m.line() + line_offset, m.col()),
        }
    }

    fn span(&self, s: &saphyr_parser::Span) -> Span {
        Span::new(self.file_id, self.offset(&s.start), self.offset(&s.end))
    }

    fn error(
        &self,
        rule: &'static crate::rules::RuleMeta,
        span: Span,
        message: String,
        help: Option<&str>,
    ) -> Box<Diagnostic> {
        let mut d = Diagnostic::new(rule, message, Label::new(span));
        if let Some(h) = help {
            d = d.with_help(h);
        }
        Box::new(d)
    }

    /// Read the next document of this chunk; `Ok(None)` at the end of the stream.
    fn next_document(
        &mut self,
        parser: &mut Parser<'_, saphyr_parser::StrInput<'_>>,
    ) -> LoadResult<Option<Option<Node>>> {
        self.anchors.clear();
        self.alias_nodes = 0;
        let mut root: Option<Node> = None;
        let mut in_doc = false;
        loop {
            let (event, span) = match parser.next_event() {
                None => return Ok(None),
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    let m = e.marker();
                    let at = self.offset(m);
                    let span = Span::new(self.file_id, at, at);
                    if e.info().contains("recursion limit") {
                        return Err(self.error(&load::YAML_LIMITS, span, format!("nesting too deep: {}", e.info()), Some("no mesh resource nests this deep; check the indentation or brackets")));
                    }
                    return Err(self.error(
                        &load::YAML_SYNTAX,
                        span,
                        format!("invalid YAML: {}", e.info()),
                        None,
                    ));
                }
            };
            match event {
                Event::StreamStart | Event::Nothing => {}
                Event::StreamEnd => return Ok(None),
                Event::DocumentStart(_) => in_doc = true,
                Event::DocumentEnd => {
                    if in_doc {
                        return Ok(Some(root));
                    }
                }
                Event::SequenceStart(anchor, _) => {
                    self.check_depth(&span)?;
                    self.stack.push(Frame::Seq {
                        start: self.span(&span),
                        anchor,
                        from: self.items.len(),
                    });
                }
                Event::MappingStart(anchor, _) => {
                    self.check_depth(&span)?;
                    self.stack.push(Frame::Map {
                        start: self.span(&span),
                        anchor,
                        from: self.entries.len(),
                        key: None,
                        seen: None,
                        merges: Vec::new(),
                    });
                }
                Event::SequenceEnd => {
                    let Some(Frame::Seq {
                        start,
                        anchor,
                        from,
                    }) = self.stack.pop()
                    else {
                        return Err(self.unbalanced(&span));
                    };
                    let items: Vec<Node> = self.items.drain(from..).collect();
                    let end = items.last().map_or(start, |n| n.span);
                    let node = Node {
                        value: Value::Seq(items),
                        span: start.to(end),
                    };
                    self.finish(node, anchor, &mut root)?;
                }
                Event::MappingEnd => {
                    let Some(Frame::Map {
                        start,
                        anchor,
                        from,
                        merges,
                        ..
                    }) = self.stack.pop()
                    else {
                        return Err(self.unbalanced(&span));
                    };
                    let mut entries: Vec<Entry> = self.entries.drain(from..).collect();
                    apply_merges(&mut entries, merges);
                    let end = entries.last().map_or(start, |e| e.value.span);
                    let node = Node {
                        value: Value::Map(entries),
                        span: start.to(end),
                    };
                    self.finish(node, anchor, &mut root)?;
                }
                Event::Scalar(text, style, anchor, tag) => {
                    let sp = self.span(&span);
                    let forced_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                    let value = if style == ScalarStyle::Plain && !forced_str {
                        resolve_plain(text)
                    } else {
                        Value::String(CompactString::from(text))
                    };
                    self.finish(Node { value, span: sp }, anchor, &mut root)?;
                }
                Event::Alias(id) => {
                    let sp = self.span(&span);
                    let Some(target) = self.anchors.get(&id) else {
                        return Err(self.error(
                            &load::YAML_SYNTAX,
                            sp,
                            "alias names no anchor".into(),
                            None,
                        ));
                    };
                    self.alias_nodes += target.size();
                    if self.alias_nodes > self.limits.max_alias_nodes {
                        return Err(self.error(
                            &load::YAML_LIMITS,
                            sp,
                            format!(
                                "alias expansion exceeds {} nodes (an alias bomb?)",
                                self.limits.max_alias_nodes
                            ),
                            Some("expand the aliases by hand or reduce their nesting"),
                        ));
                    }
                    let node = target.clone();
                    self.finish(node, 0, &mut root)?;
                }
            }
        }
    }

    /// The parser guarantees balanced start and end events; should it ever not,
    /// the document is reported rather than the process aborted.
    fn unbalanced(&self, span: &saphyr_parser::Span) -> Box<Diagnostic> {
        self.error(
            &load::YAML_SYNTAX,
            self.span(span),
            "unbalanced YAML structure".into(),
            None,
        )
    }

    fn check_depth(&self, span: &saphyr_parser::Span) -> LoadResult<()> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(self.error(
                &load::YAML_LIMITS,
                self.span(span),
                format!("nesting deeper than {} levels", self.limits.max_depth),
                Some("no mesh resource nests this deep; check the indentation or brackets"),
            ));
        }
        Ok(())
    }

    /// Attach a finished node to its parent (or make it the root).
    fn finish(&mut self, node: Node, anchor: usize, root: &mut Option<Node>) -> LoadResult<()> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => *root = Some(node),
            Some(Frame::Seq { .. }) => self.items.push(node),
            Some(Frame::Map {
                key: key @ None, ..
            }) => {
                let key_text = match node.value {
                    Value::String(s) => s,
                    Value::Int(i) => CompactString::from(i.to_string()),
                    Value::Float(f) => CompactString::from(f.to_string()),
                    Value::Bool(b) => CompactString::from(b.to_string()),
                    Value::Null => CompactString::const_new("null"),
                    Value::Seq(_) | Value::Map(_) => {
                        return Err(self.error(
                            &load::YAML_SYNTAX,
                            node.span,
                            "complex mapping keys are not supported".into(),
                            None,
                        ));
                    }
                };
                *key = Some((key_text, node.span));
            }
            Some(Frame::Map {
                key: key @ Some(_),
                from,
                seen,
                merges,
                ..
            }) => {
                let entries = &mut self.entries;
                let from = *from;
                let (key_text, key_span) = key.take().expect("key is set");
                if key_text == "<<" {
                    merges.push(node);
                    return Ok(());
                }
                let duplicate = match seen {
                    Some(set) => !set.insert(key_text.clone()),
                    None => {
                        let dup = entries[from..].iter().any(|e| e.key == key_text);
                        if entries.len() - from >= 16 {
                            *seen = Some(
                                entries[from..]
                                    .iter()
                                    .map(|e| e.key.clone())
                                    .chain([key_text.clone()])
                                    .collect(),
                            );
                        }
                        dup
                    }
                };
                if duplicate {
                    let first = entries[from..]
                        .iter()
                        .find(|e| e.key == key_text)
                        .map(|e| e.key_span);
                    let mut d = Diagnostic::new(
                        &load::DUPLICATE_KEY,
                        format!("duplicate key `{key_text}`"),
                        Label::new(key_span),
                    );
                    if let Some(first) = first {
                        d = d.with_related(Label::new(first).with_message("first defined here"));
                    }
                    return Err(Box::new(
                        d.with_help("YAML parsers disagree on which value wins; keep one"),
                    ));
                }
                entries.push(Entry {
                    key: key_text,
                    key_span,
                    value: node,
                });
            }
        }
        Ok(())
    }
}

/// YAML merge keys (`<<: *base`): entries of the merged mappings that the mapping
/// does not set itself.
fn apply_merges(entries: &mut Vec<Entry>, merges: Vec<Node>) {
    for merge in merges {
        let maps: Vec<Node> = match merge.value {
            Value::Seq(items) => items,
            _ => vec![merge],
        };
        for m in maps {
            if let Value::Map(src) = m.value {
                for e in src {
                    if !entries.iter().any(|x| x.key == e.key) {
                        entries.push(e);
                    }
                }
            }
        }
    }
}

/// Resolve a plain scalar the way Kubernetes' YAML reader does (YAML 1.2 core
/// schema plus YAML 1.1 booleans).
fn resolve_plain(text: std::borrow::Cow<'_, str>) -> Value {
    let s: &str = &text;
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return Value::Bool(true);
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let b = s.as_bytes();
    let first = b[0];
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        return Value::String(CompactString::from(text));
    }
    let (neg, digits) = match first {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let radix_int = |prefix: &str, radix: u32| {
        digits
            .strip_prefix(prefix)
            .filter(|d| !d.is_empty())
            .and_then(|d| i64::from_str_radix(d, radix).ok())
            .map(|v| if neg { -v } else { v })
    };
    if let Some(v) = radix_int("0x", 16).or_else(|| radix_int("0o", 8)) {
        return Value::Int(v);
    }
    if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
        return match s.parse::<i64>() {
            Ok(v) => Value::Int(v),
            Err(_) => s
                .parse::<f64>()
                .map_or_else(|_| Value::String(CompactString::from(text)), Value::Float),
        };
    }
    let is_float = {
        let mut seen_digit = false;
        let mut it = digits.bytes().peekable();
        while it.peek().is_some_and(|c| c.is_ascii_digit()) {
            it.next();
            seen_digit = true;
        }
        if it.peek() == Some(&b'.') {
            it.next();
            while it.peek().is_some_and(|c| c.is_ascii_digit()) {
                it.next();
                seen_digit = true;
            }
        }
        if seen_digit && matches!(it.peek(), Some(b'e' | b'E')) {
            it.next();
            if matches!(it.peek(), Some(b'+' | b'-')) {
                it.next();
            }
            let mut exp = false;
            while it.peek().is_some_and(|c| c.is_ascii_digit()) {
                it.next();
                exp = true;
            }
            seen_digit = exp;
        }
        seen_digit && it.next().is_none()
    };
    if is_float && let Ok(f) = s.parse::<f64>() {
        return Value::Float(f);
    }
    Value::String(CompactString::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> (Vec<Document>, Vec<Diagnostic>, SourceFile) {
        let file = SourceFile::new("t.yaml", text);
        let mut diags = Vec::new();
        let docs = load(FileId(0), &file, &Limits::default(), &mut diags);
        (docs, diags, file)
    }

    #[test]
    fn a_document_read_again_is_the_document_read_first() {
        let text = "# lead\na: 1\n---\nb: &x [1, {c: d}]\ne: *x\n...\n\
                    f: \"é\"\n---\n\n--- \nitems:\n- g: 2\n- h: [3]\n";
        let (docs, diags, file) = load_str(text);
        assert!(diags.is_empty(), "{diags:?}");
        // The third chunk holds two documents (after `...`), one chunk none.
        assert!(docs.len() >= 5, "{docs:?}");
        assert!(docs.iter().any(|d| d.at.nth == 1));
        for d in &docs {
            assert_eq!(d.at.load(FileId(7), &file.text).is_some(), d.root.is_some());
            let Some(root) = &d.root else { continue };
            let mut again = d.at.load(FileId(0), &file.text).unwrap();
            assert_eq!(&again, root, "document {}", d.index);
            again = d.at.load(FileId(7), &file.text).unwrap();
            assert_eq!(again.span.file, FileId(7));
            assert_eq!(
                (again.span.start, again.span.end),
                (root.span.start, root.span.end)
            );
        }
        // Another text: nothing, or what that text holds, never a panic.
        for d in &docs {
            assert!(d.at.load(FileId(0), "a: 1").is_none() || d.at.start == 0);
        }
    }

    #[test]
    fn spans_are_byte_ranges_in_ascii_and_other_documents() {
        // The first and last documents are ASCII (positions from the
        // parser's index), the middle one is not (from lines and columns).
        let text = "a: x1\n---\n# ünïcödé\nb: {c: \"ß\", d: x2}\n---\ne: [x3]\n";
        let (docs, diags, file) = load_str(text);
        assert!(diags.is_empty(), "{diags:?}");
        let at = |doc: usize, path: YamlPath| {
            let (span, _) = docs[doc].root.as_ref().unwrap().locate(&path.0);
            &file.text[span.start as usize..span.end as usize]
        };
        assert_eq!(at(0, path!["a"]), "x1");
        assert_eq!(at(1, path!["b", "c"]), "\"ß\"");
        assert_eq!(at(1, path!["b", "d"]), "x2");
        assert_eq!(at(2, path!["e", 0usize]), "x3");
    }

    #[test]
    fn spans_point_at_values_and_keys() {
        let (docs, diags, file) =
            load_str("a: 1\nspec:\n  http:\n  - route:\n    - destination: {subset: v2}\n");
        assert!(diags.is_empty(), "{diags:?}");
        let root = docs[0].root.as_ref().unwrap();
        let p = path![
            "spec",
            "http",
            0usize,
            "route",
            0usize,
            "destination",
            "subset"
        ];
        assert_eq!(p.to_string(), "spec.http[0].route[0].destination.subset");
        let (span, key) = root.locate(&p.0);
        let lc = file.line_col(span.start as usize);
        assert_eq!((lc.line, lc.column), (5, 29));
        assert_eq!(&file.text[span.start as usize..span.end as usize], "v2");
        assert_eq!(
            &file.text[key.unwrap().start as usize..key.unwrap().end as usize],
            "subset"
        );
    }

    #[test]
    fn scalars_resolve_like_kubernetes() {
        assert_eq!(resolve_plain("80".into()), Value::Int(80));
        assert_eq!(resolve_plain("-3".into()), Value::Int(-3));
        assert_eq!(resolve_plain("0x1F".into()), Value::Int(31));
        assert_eq!(resolve_plain("1.5".into()), Value::Float(1.5));
        assert_eq!(resolve_plain("1e3".into()), Value::Float(1000.0));
        assert_eq!(resolve_plain("yes".into()), Value::Bool(true));
        assert_eq!(resolve_plain("~".into()), Value::Null);
        assert_eq!(resolve_plain("1.2.3".into()), Value::String("1.2.3".into()));
        assert_eq!(resolve_plain("v1".into()), Value::String("v1".into()));
        assert_eq!(resolve_plain("-".into()), Value::String("-".into()));
        assert_eq!(resolve_plain(".".into()), Value::String(".".into()));
    }

    #[test]
    fn bad_document_does_not_hide_others() {
        let (docs, diags, _) = load_str("a: 1\n---\nb: [1\n---\nc: 3\n");
        assert_eq!(docs.len(), 3);
        assert!(docs[0].root.is_some() && docs[1].root.is_none() && docs[2].root.is_some());
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].rule.code, "MC0001");
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let (_, diags, file) = load_str("a: 1\nb: 2\na: 3\n");
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].rule.code, "MC0002");
        assert_eq!(file.line_col(diags[0].primary.span.start as usize).line, 3);
    }

    #[test]
    fn anchors_aliases_and_merges() {
        let (docs, diags, _) = load_str("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n");
        assert!(diags.is_empty());
        let j = docs[0].root.as_ref().unwrap().to_json();
        assert_eq!(j["other"], serde_json::json!({"y": 3, "x": 1}));
    }

    #[test]
    fn alias_bomb_is_bounded() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            s += &format!("a{i}: &a{i} [{}]\n", [prev.as_str(); 10].join(", "));
        }
        let (_, diags, _) = load_str(&s);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].rule.code, "MC0003");
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let s = format!("a: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
        let (_, diags, _) = load_str(&s);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].rule.code, "MC0003");
    }

    #[test]
    fn comments_only_is_no_document() {
        let (docs, diags, _) = load_str("# nothing\n");
        assert!(diags.is_empty());
        assert!(docs.iter().all(|d| d.root.is_none()));
    }
}
