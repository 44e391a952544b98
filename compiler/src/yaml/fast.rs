//! A fast path for the plain block YAML that policy repositories are made of.
//!
//! `saphyr-parser` and the loader on its events stay the YAML reader of
//! record: they read every chunk this module declines, and they report every
//! error. This module reads only a narrow, common subset, straight into the
//! loader's [`Node`] trees, with exactly the values and spans the loader
//! gives them (the parser's span quirks included), in a fraction of the
//! time: a scanner for all of YAML pays for that generality on every
//! character, and an event stream costs a copy of every event, while the
//! files `kubectl` and people write are block mappings and sequences of
//! one-line scalars and flow collections.
//!
//! The subset: ASCII text without tabs or carriage returns; an optional
//! `---` line; block mappings whose keys are one-line plain or quoted
//! scalars; block sequences, including the indentless ones `kubectl` writes
//! under a key and compact mappings after `- `; one-line plain, single- and
//! double-quoted (without escapes) scalars; flow sequences and mappings of
//! those, nested, on one line (`{name: a, ports: [{port: 80}]}`); comments.
//! Anything else (anchors, aliases, tags, merge keys, block or multi-line
//! scalars, escapes, multi-line flow collections, `:` inside flow scalars,
//! directives, empty documents, duplicate keys, nesting as deep as the
//! loader's limit, any syntax error) makes [`read`] return
//! `None`, and the caller reads the chunk the general way. Declining is
//! always safe; reading something differently from the general way is the
//! one bug this module can have, and `compiler/tests/yaml_fast.rs` looks for
//! it.

use std::borrow::Cow;
use std::collections::HashSet;

use compact_str::{CompactString, ToCompactString};

use super::{Entry, Node, Value, resolve_plain};
use crate::source::{FileId, Span};

/// Read `chunk`, which starts `base` bytes into file `file`: `Some(None)`
/// when it holds no document (only comments), `Some(Some(root))` for its one
/// document, `None` when it is outside the subset or has an error. A
/// collection nested `max_depth` deep is declined (the loader reports it).
pub(super) fn read(
    chunk: &str,
    file: FileId,
    base: usize,
    max_depth: usize,
) -> Option<Option<Node>> {
    let b = chunk.as_bytes();
    // Document markers past the first line, tabs and carriage returns are
    // the parser's.
    if !chunk.is_ascii()
        || b.iter().any(|&c| c == b'\t' || c == b'\r')
        || chunk.contains("\n---")
        || chunk.contains("\n...")
    {
        return None;
    }
    let mut s = Scanner {
        s: b,
        text: chunk,
        pos: 0,
        line_start: 0,
        file,
        base,
        // Recursion is bounded whatever the caller's limit.
        max_depth: max_depth.min(256),
    };
    s.document()
}

/// Declines the chunk.
type Fit<T = ()> = Option<T>;

struct Scanner<'a> {
    s: &'a [u8],
    text: &'a str,
    /// At the start of a line, or within the line being read.
    pos: usize,
    /// Where the line of `pos` starts.
    line_start: usize,
    file: FileId,
    base: usize,
    max_depth: usize,
}

impl<'a> Scanner<'a> {
    fn at(&self, i: usize) -> u8 {
        self.s.get(i).copied().unwrap_or(b'\n')
    }

    fn span(&self, start: usize, end: usize) -> Span {
        Span::new(self.file, self.base + start, self.base + end)
    }

    /// The end of the current line (its `\n`, or the end of the text).
    fn eol(&self, from: usize) -> usize {
        self.s[from..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(self.s.len(), |n| from + n)
    }

    /// From `i` within the current line: skip spaces, then accept the end of
    /// the line or a comment, and move to the next line.
    fn end_line(&mut self, i: usize) -> Fit {
        let mut i = i;
        while self.at(i) == b' ' {
            i += 1;
        }
        match self.at(i) {
            b'\n' => {}
            // A comment needs space before it.
            b'#' if i > 0 && self.s[i - 1] == b' ' => {}
            _ => return None,
        }
        self.next_line(i);
        Some(())
    }

    fn next_line(&mut self, i: usize) {
        let e = self.eol(i);
        self.pos = (e + 1).min(self.s.len());
        if e < self.s.len() {
            self.line_start = self.pos;
        }
    }

    /// Skip blank and comment lines from the start of a line. The indent of
    /// the next content line, with `pos` at its start; `None` at the end.
    fn content_line(&mut self) -> Option<usize> {
        loop {
            if self.pos >= self.s.len() {
                return None;
            }
            let mut i = self.pos;
            while self.at(i) == b' ' {
                i += 1;
            }
            match self.at(i) {
                b'\n' | b'#' => self.next_line(i),
                _ => return Some(i - self.pos),
            }
        }
    }

    fn document(&mut self) -> Fit<Option<Node>> {
        let Some(mut indent) = self.content_line() else {
            // Only comments: no document at all.
            return Some(None);
        };
        if self.s[self.pos..].starts_with(b"---") {
            let p = self.pos;
            if indent != 0 || !matches!(self.at(p + 3), b' ' | b'\n') {
                return None;
            }
            self.end_line(p + 3)?;
            // An empty document: left to the parser.
            indent = self.content_line()?;
        }
        let root = self.block_node(indent, 0)?;
        if self.content_line().is_some() {
            // Content after the root (less indented): an error.
            return None;
        }
        Some(Some(root))
    }

    /// A block node whose first line (`pos`) is indented by `indent`, with
    /// `depth` collections open around it.
    fn block_node(&mut self, indent: usize, depth: usize) -> Fit<Node> {
        let c = self.pos + indent;
        if self.is_dash(c) {
            self.sequence(indent, false, depth)
        } else if self.key(c, false).is_some() {
            self.mapping(indent, depth)
        } else {
            // A scalar on a line of its own, which may go on over more lines.
            None
        }
    }

    /// `-` followed by a space or the end of the line.
    fn is_dash(&self, c: usize) -> bool {
        self.at(c) == b'-' && matches!(self.at(c + 1), b' ' | b'\n')
    }

    /// A block sequence whose dashes are at `indent`. `indentless` when it
    /// is a mapping value written at its key's indent.
    fn sequence(&mut self, indent: usize, indentless: bool, depth: usize) -> Fit<Node> {
        if depth >= self.max_depth {
            return None;
        }
        let dash = self.pos + indent;
        let start = if indentless {
            // The parser places an indentless sequence at its first item.
            let mut i = dash + 1;
            while self.at(i) == b' ' {
                i += 1;
            }
            if matches!(self.at(i), b'\n' | b'#') {
                return None;
            }
            i
        } else {
            dash
        };
        let start = self.span(start, start);
        let mut items = Vec::new();
        loop {
            let dash = self.pos + indent;
            let mut c = dash + 1;
            while self.at(c) == b' ' {
                c += 1;
            }
            if matches!(self.at(c), b'\n' | b'#') {
                // The item starts on a later line.
                self.next_line(c);
                match self.content_line() {
                    Some(i) if i > indent => items.push(self.block_node(i, depth + 1)?),
                    // An empty item.
                    _ => return None,
                }
            } else {
                if self.is_dash(c) {
                    // `- - x`: left to the parser.
                    return None;
                }
                if self.key(c, false).is_some() {
                    let col = c - self.line_start;
                    items.push(self.mapping(col, depth + 1)?);
                } else {
                    items.push(self.inline_value(c, depth + 1)?);
                    if self.content_line().is_some_and(|i| i > indent) {
                        return None;
                    }
                }
            }
            match self.content_line() {
                Some(i) if i == indent && self.is_dash(self.pos + i) => {}
                Some(i) if i > indent => return None,
                Some(i) if i == indent && !indentless => return None,
                _ => break,
            }
        }
        let end = items.last().map_or(start, |n| n.span);
        Some(Node {
            value: Value::Seq(items),
            span: start.to(end),
        })
    }

    /// A block mapping whose keys are at `indent`; `pos` is at the start of
    /// the first key's line (or, for a compact mapping after `- `, of the
    /// line with the dash, `indent` being the key's column).
    fn mapping(&mut self, indent: usize, depth: usize) -> Fit<Node> {
        if depth >= self.max_depth {
            return None;
        }
        let first = self.line_start + indent;
        let start = self.span(first, first);
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen: Option<HashSet<CompactString>> = None;
        loop {
            let c = self.line_start + indent;
            let (key, plain, key_end, colon) = self.key(c, false)?;
            let key = new_key(key, plain, &entries, &mut seen)?;
            let key_span = self.span(c, key_end);
            let mut v = colon + 1;
            while self.at(v) == b' ' {
                v += 1;
            }
            let value = if matches!(self.at(v), b'\n' | b'#') {
                if self.at(v) == b'#' && self.s[v - 1] != b' ' {
                    return None;
                }
                let at_colon = self.span(colon, colon);
                self.next_line(v);
                match self.content_line() {
                    Some(i) if i > indent => self.block_node(i, depth + 1)?,
                    Some(i) if i == indent && self.is_dash(self.pos + i) => {
                        self.sequence(i, true, depth + 1)?
                    }
                    // An empty value; the parser places it at the colon.
                    _ => Node {
                        value: Value::Null,
                        span: at_colon,
                    },
                }
            } else {
                let node = self.inline_value(v, depth + 1)?;
                if self.content_line().is_some_and(|i| i > indent) {
                    return None;
                }
                node
            };
            entries.push(Entry {
                key,
                key_span,
                value,
            });
            match self.content_line() {
                Some(i) if i == indent => {
                    if self.is_dash(self.pos + i) {
                        return None;
                    }
                }
                Some(i) if i > indent => return None,
                _ => break,
            }
        }
        let end = entries.last().map_or(start, |e| e.value.span);
        Some(Node {
            value: Value::Map(entries),
            span: start.to(end),
        })
    }

    /// A mapping key at `c`, followed by `: ` (or, in a block mapping, a
    /// colon at the end of the line): its text, whether it is plain, where
    /// its span ends and where its colon is. `None` when there is no key
    /// this module reads; in a flow mapping a plain key holds no colon.
    fn key(&self, c: usize, flow: bool) -> Option<(Cow<'a, str>, bool, usize, usize)> {
        let colon = |i: usize| {
            self.at(i) == b':' && (self.at(i + 1) == b' ' || !flow && self.at(i + 1) == b'\n')
        };
        match self.at(c) {
            q @ (b'"' | b'\'') => {
                let (value, end) = self.quoted(c, q)?;
                // The colon must follow the closing quote directly.
                colon(end).then_some(())?;
                Some((value, false, end, end))
            }
            first if plain_start(first, self.at(c + 1)) => {
                let mut i = c;
                while !colon(i) {
                    match self.at(i) {
                        b'\n' | b'[' | b']' | b'{' | b'}' | b',' => return None,
                        b':' if flow => return None,
                        b'#' if self.s[i - 1] == b' ' => return None,
                        _ => i += 1,
                    }
                }
                if self.s[i - 1] == b' ' || i - c > 1024 {
                    return None;
                }
                Some((Cow::Borrowed(&self.text[c..i]), true, i, i))
            }
            _ => None,
        }
    }

    /// A quoted scalar at `c` on one line, without escapes: its value and
    /// the end of its closing quote.
    fn quoted(&self, c: usize, q: u8) -> Option<(Cow<'a, str>, usize)> {
        let mut i = c + 1;
        let mut doubled = false;
        loop {
            match self.at(i) {
                b'\n' => return None,
                b'\\' if q == b'"' => return None,
                x if x == q => {
                    if q == b'\'' && self.at(i + 1) == b'\'' {
                        doubled = true;
                        i += 2;
                        continue;
                    }
                    break;
                }
                _ => i += 1,
            }
        }
        let inner = &self.text[c + 1..i];
        let value = if doubled {
            Cow::Owned(inner.replace("''", "'"))
        } else {
            Cow::Borrowed(inner)
        };
        Some((value, i + 1))
    }

    /// A quoted scalar's node: a string spanning the quotes and what the
    /// parser adds to them.
    fn quoted_node(&self, c: usize, value: Cow<'a, str>, end: usize) -> Node {
        Node {
            value: Value::String(CompactString::from(value)),
            span: self.span(c, self.quoted_span_end(end)),
        }
    }

    /// A value that starts at `c` and ends on its line (a scalar or a flow
    /// collection); moves to the next line.
    fn inline_value(&mut self, c: usize, depth: usize) -> Fit<Node> {
        match self.at(c) {
            q @ (b'"' | b'\'') => {
                let (value, end) = self.quoted(c, q)?;
                let node = self.quoted_node(c, value, end);
                self.end_line(end)?;
                Some(node)
            }
            b'[' | b'{' => {
                let (node, next) = self.flow_node(c, depth)?;
                self.end_line(next)?;
                Some(node)
            }
            first if plain_start(first, self.at(c + 1)) => {
                let (node, end) = self.plain(c, false)?;
                self.end_line(end)?;
                Some(node)
            }
            _ => None,
        }
    }

    /// A one-line plain scalar at `c` (in a flow collection when `flow`):
    /// its node and where its text ends, before trailing spaces, a comment,
    /// the end of the line or, in a flow, the next `,`, `]` or `}`. `None`
    /// for `: ` in a block scalar (a mapping on the same line) and for any
    /// `:`, `[` or `{` in a flow one.
    fn plain(&self, c: usize, flow: bool) -> Option<(Node, usize)> {
        let mut i = c;
        let mut end = c;
        loop {
            match self.at(i) {
                b'\n' => break,
                b'#' if self.s[i - 1] == b' ' => break,
                b',' | b']' | b'}' if flow => break,
                b':' | b'[' | b'{' if flow => return None,
                b':' if matches!(self.at(i + 1), b' ' | b'\n') => return None,
                b' ' => i += 1,
                _ => {
                    i += 1;
                    end = i;
                }
            }
        }
        let node = Node {
            value: resolve_plain(Cow::Borrowed(&self.text[c..end])),
            span: self.span(c, end),
        };
        Some((node, end))
    }

    /// Where the parser ends the span of a quoted scalar whose closing quote
    /// ends at `end`: past the spaces after it, and past a comment after those.
    fn quoted_span_end(&self, end: usize) -> usize {
        let mut i = end;
        while self.at(i) == b' ' {
            i += 1;
        }
        if i > end && self.at(i) == b'#' {
            i = self.eol(i);
        }
        i
    }

    /// A flow node at `i` on the current line, `depth` collections open
    /// around it: the node and where it ends.
    fn flow_node(&self, i: usize, depth: usize) -> Option<(Node, usize)> {
        match self.at(i) {
            q @ (b'"' | b'\'') => {
                let (value, end) = self.quoted(i, q)?;
                Some((self.quoted_node(i, value, end), end))
            }
            b'[' => self.flow_collection(i, depth, b']'),
            b'{' => self.flow_collection(i, depth, b'}'),
            first if plain_start(first, self.at(i + 1)) => self.plain(i, true),
            _ => None,
        }
    }

    /// A one-line flow sequence (`close` is `]`) or mapping (`}`) at `c`:
    /// the node and where it ends.
    fn flow_collection(&self, c: usize, depth: usize, close: u8) -> Option<(Node, usize)> {
        if depth >= self.max_depth {
            return None;
        }
        let skip = |mut i: usize| {
            while self.at(i) == b' ' {
                i += 1;
            }
            i
        };
        let mut i = skip(c + 1);
        // The parser's span of the opening bracket takes the spaces after it.
        let start = self.span(c, i);
        let mut items = Vec::new();
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen = None;
        if self.at(i) != close {
            loop {
                if close == b'}' {
                    let (key, plain, key_end, colon) = self.key(i, true)?;
                    let key = new_key(key, plain, &entries, &mut seen)?;
                    let key_span = self.span(i, key_end);
                    let (value, next) = self.flow_node(skip(colon + 1), depth + 1)?;
                    entries.push(Entry {
                        key,
                        key_span,
                        value,
                    });
                    i = next;
                } else {
                    let (item, next) = self.flow_node(i, depth + 1)?;
                    items.push(item);
                    i = next;
                }
                i = skip(i);
                match self.at(i) {
                    b',' => {
                        i = skip(i + 1);
                        if self.at(i) == close {
                            // A trailing comma: left to the parser.
                            return None;
                        }
                    }
                    x if x == close => break,
                    _ => return None,
                }
            }
        }
        let node = if close == b'}' {
            let end = entries.last().map_or(start, |e| e.value.span);
            Node {
                value: Value::Map(entries),
                span: start.to(end),
            }
        } else {
            let end = items.last().map_or(start, |n| n.span);
            Node {
                value: Value::Seq(items),
                span: start.to(end),
            }
        };
        Some((node, i + 1))
    }
}

/// A mapping key as the loader keeps it: a plain key resolved like a value
/// and written back as text (`1` → `"1"`, `yes` → `"true"`), a quoted one as
/// it is. `None` (declined) for a merge key or a key already in `entries`,
/// which the loader handles or reports; `seen` indexes a long mapping's keys.
fn new_key(
    key: Cow<'_, str>,
    plain: bool,
    entries: &[Entry],
    seen: &mut Option<HashSet<CompactString>>,
) -> Option<CompactString> {
    let key = if plain {
        match resolve_plain(key) {
            Value::String(s) => s,
            Value::Int(i) => i.to_compact_string(),
            Value::Float(f) => f.to_compact_string(),
            Value::Bool(b) => b.to_compact_string(),
            Value::Null => CompactString::const_new("null"),
            Value::Seq(_) | Value::Map(_) => return None,
        }
    } else {
        CompactString::from(key)
    };
    let duplicate = match seen {
        Some(set) => !set.insert(key.clone()),
        None => {
            let dup = entries.iter().any(|e| e.key == key);
            if entries.len() >= 16 {
                *seen = Some(
                    entries
                        .iter()
                        .map(|e| e.key.clone())
                        .chain([key.clone()])
                        .collect(),
                );
            }
            dup
        }
    };
    (!duplicate && key != "<<").then_some(key)
}

/// Whether a plain scalar may start with `c` followed by `next` (in both
/// block and flow context: the indicators that start something else are out,
/// and so are `-`, `?` and `:` before a space).
fn plain_start(c: u8, next: u8) -> bool {
    match c {
        b'-' => !matches!(next, b' ' | b'\n' | b',' | b'[' | b']' | b'{' | b'}'),
        b'?' | b':' | b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|'
        | b'>' | b'\'' | b'"' | b'%' | b'@' | b'`' | b' ' | b'\n' => false,
        _ => true,
    }
}
