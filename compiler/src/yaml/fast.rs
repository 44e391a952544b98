//! A fast path for the plain block YAML that policy repositories are made of.
//!
//! `saphyr-parser` stays the YAML parser of record: it reads every chunk this
//! module declines, and it reports every syntax error. This module reads only
//! a narrow, common subset, and gives exactly the events (values, styles and
//! spans) `saphyr-parser` gives for it, in a fraction of the time: a scanner
//! that handles all of YAML pays for that generality on every character,
//! while the files `kubectl` and people write are block mappings and
//! sequences of one-line scalars.
//!
//! The subset: ASCII text without tabs or carriage returns; an optional
//! `---` line; block mappings whose keys are one-line plain or quoted
//! scalars; block sequences, including the indentless ones `kubectl` writes
//! under a key and compact mappings after `- `; one-line plain, single- and
//! double-quoted (without escapes) scalars; one-line flow sequences of such
//! scalars; `{}` and `[]`; comments. Anything else (anchors, aliases, tags,
//! block or multi-line scalars, escapes, nested or multi-line flow
//! collections, directives, empty documents, any error, nesting deeper than
//! the loader allows) makes [`scan`] return `false`, and the caller parses
//! the chunk with `saphyr-parser` instead. Declining is always safe; reading
//! something differently from `saphyr-parser` is the one bug this module can
//! have, and the differential tests in `yaml.rs` look for it.

use std::borrow::Cow;

use saphyr_parser::{Event, Marker, ScalarStyle, Span};

/// One parser event with its span, as `saphyr-parser` yields it.
pub(super) type Spanned<'a> = (Event<'a>, Span);

/// Read `chunk` (one document's text) into `out`. `false`, with `out` in an
/// unspecified state, when the chunk is outside the subset.
pub(super) fn scan<'a>(chunk: &'a str, max_depth: usize, out: &mut Vec<Spanned<'a>>) -> bool {
    out.clear();
    let b = chunk.as_bytes();
    // Document markers past the first line, tabs and carriage returns are
    // the parser's.
    if !chunk.is_ascii()
        || b.iter().any(|&c| c == b'\t' || c == b'\r')
        || chunk.contains("\n---")
        || chunk.contains("\n...")
    {
        return false;
    }
    let mut s = Scanner {
        s: b,
        text: chunk,
        pos: 0,
        line: 1,
        line_start: 0,
        // Recursion is bounded whatever the caller's limit.
        max_depth: max_depth.min(256),
        out,
    };
    s.document().is_some()
}

/// Declines the chunk.
type Fit<T = ()> = Option<T>;

struct Scanner<'a, 'o> {
    s: &'a [u8],
    text: &'a str,
    /// At the start of a line, or within the line being read.
    pos: usize,
    /// The 1-based line of `pos` and the offset that line starts at.
    line: usize,
    line_start: usize,
    max_depth: usize,
    out: &'o mut Vec<Spanned<'a>>,
}

impl<'a> Scanner<'a, '_> {
    fn at(&self, i: usize) -> u8 {
        self.s.get(i).copied().unwrap_or(b'\n')
    }

    fn marker(&self, i: usize) -> Marker {
        Marker::new(i, self.line, i - self.line_start)
    }

    fn span(&self, start: usize, end: usize) -> Span {
        Span::new(self.marker(start), self.marker(end))
    }

    fn emit(&mut self, event: Event<'a>, start: usize, end: usize) {
        let span = self.span(start, end);
        self.out.push((event, span));
    }

    fn scalar(&mut self, value: Cow<'a, str>, style: ScalarStyle, start: usize, end: usize) {
        self.emit(Event::Scalar(value, style, 0, None), start, end);
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
            // A comment needs space before it; `i` is past at least one
            // space unless it is where the content ended.
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
            self.line += 1;
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

    fn document(&mut self) -> Fit {
        self.emit(Event::StreamStart, 0, 0);
        let Some(mut indent) = self.content_line() else {
            // Only comments: no document at all.
            self.emit(Event::StreamEnd, self.s.len(), self.s.len());
            return Some(());
        };
        let explicit = self.s[self.pos..].starts_with(b"---");
        if explicit {
            if indent != 0 {
                return None;
            }
            let p = self.pos;
            self.emit(Event::DocumentStart(true), p, p + 3);
            if !matches!(self.at(p + 3), b' ' | b'\n') {
                return None;
            }
            self.end_line(p + 3)?;
            // An empty document: left to the parser.
            indent = self.content_line()?;
        } else {
            let p = self.pos + indent;
            self.emit(Event::DocumentStart(false), p, p);
        }
        self.block_node(indent, 0)?;
        if self.content_line().is_some() {
            // Content after the root (less indented): an error.
            return None;
        }
        let n = self.s.len();
        self.emit(Event::DocumentEnd, n, n);
        self.emit(Event::StreamEnd, n, n);
        Some(())
    }

    /// A block node whose first line (`pos`) is indented by `indent`.
    fn block_node(&mut self, indent: usize, depth: usize) -> Fit {
        if depth >= self.max_depth {
            return None;
        }
        let c = self.pos + indent;
        if self.is_dash(c) {
            self.sequence(indent, false, depth)
        } else if self.key(c).is_some() {
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
    fn sequence(&mut self, indent: usize, indentless: bool, depth: usize) -> Fit {
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
        self.emit(Event::SequenceStart(0, None), start, start);
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
                    Some(i) if i > indent => self.block_node(i, depth + 1)?,
                    // An empty item.
                    _ => return None,
                }
            } else {
                if self.at(c) == b'-' && matches!(self.at(c + 1), b' ' | b'\n') {
                    // `- - x`: left to the parser.
                    return None;
                }
                // The item starts here, at column `c - line_start`.
                let col = c - self.line_start;
                if self.key(c).is_some() {
                    self.mapping(col, depth + 1)?;
                } else {
                    self.inline_value(c, depth + 1)?;
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
        let p = self.pos;
        self.emit(Event::SequenceEnd, p, p);
        Some(())
    }

    /// A block mapping whose keys are at `indent`; `pos` is at the start of
    /// the first key's line (or, for a compact mapping after `- `, of the
    /// line with the dash, `indent` being the key's column).
    fn mapping(&mut self, indent: usize, depth: usize) -> Fit {
        if depth >= self.max_depth {
            return None;
        }
        let first = self.line_start + indent;
        self.emit(Event::MappingStart(0, None), first, first);
        loop {
            let c = self.line_start + indent;
            let (key, style, key_end, colon) = self.key(c)?;
            self.scalar(key, style, c, key_end);
            let mut v = colon + 1;
            while self.at(v) == b' ' {
                v += 1;
            }
            if matches!(self.at(v), b'\n' | b'#') {
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
                    _ => {
                        // An empty value; the parser places it at the colon.
                        let empty = Event::Scalar(Cow::Borrowed(""), ScalarStyle::Plain, 0, None);
                        self.out.push((empty, at_colon));
                    }
                }
            } else {
                self.inline_value(v, depth + 1)?;
                if self.content_line().is_some_and(|i| i > indent) {
                    return None;
                }
            }
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
        let p = self.pos;
        self.emit(Event::MappingEnd, p, p);
        Some(())
    }

    /// A mapping key at `c`: its value, style, where its span ends and where
    /// its colon is. `None` when the line does not start with a key this
    /// module reads.
    fn key(&self, c: usize) -> Option<(Cow<'a, str>, ScalarStyle, usize, usize)> {
        match self.at(c) {
            q @ (b'"' | b'\'') => {
                let (value, end) = self.quoted(c, q)?;
                // The colon must follow the closing quote directly.
                (self.at(end) == b':' && matches!(self.at(end + 1), b' ' | b'\n')).then_some(())?;
                let style = if q == b'"' {
                    ScalarStyle::DoubleQuoted
                } else {
                    ScalarStyle::SingleQuoted
                };
                Some((value, style, end, end))
            }
            first if plain_start(first, self.at(c + 1)) => {
                let mut i = c;
                loop {
                    match self.at(i) {
                        b':' if matches!(self.at(i + 1), b' ' | b'\n') => break,
                        b'\n' | b'[' | b']' | b'{' | b'}' | b',' => return None,
                        b'#' if self.s[i - 1] == b' ' => return None,
                        _ => i += 1,
                    }
                }
                if self.s[i - 1] == b' ' || i - c > 1024 {
                    return None;
                }
                Some((Cow::Borrowed(&self.text[c..i]), ScalarStyle::Plain, i, i))
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
                b'\n' | b'\\' if q == b'"' => return None,
                b'\n' => return None,
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

    /// A value that starts at `c` and ends on its line (a scalar or a flow
    /// collection); moves to the next line.
    fn inline_value(&mut self, c: usize, depth: usize) -> Fit {
        match self.at(c) {
            q @ (b'"' | b'\'') => {
                let (value, end) = self.quoted(c, q)?;
                let style = if q == b'"' {
                    ScalarStyle::DoubleQuoted
                } else {
                    ScalarStyle::SingleQuoted
                };
                let span_end = self.quoted_span_end(end);
                self.scalar(value, style, c, span_end);
                self.end_line(end)
            }
            b'[' => self.flow_sequence(c, depth),
            b'{' => {
                let mut i = c + 1;
                while self.at(i) == b' ' {
                    i += 1;
                }
                if self.at(i) != b'}' {
                    return None;
                }
                self.emit(Event::MappingStart(0, None), c, i);
                self.emit(Event::MappingEnd, i, i + 1);
                self.end_line(i + 1)
            }
            first if plain_start(first, self.at(c + 1)) => {
                let mut i = c;
                let mut end = c;
                loop {
                    match self.at(i) {
                        b'\n' => break,
                        b':' if matches!(self.at(i + 1), b' ' | b'\n') => return None,
                        b'#' if self.s[i - 1] == b' ' => break,
                        b' ' => i += 1,
                        _ => {
                            i += 1;
                            end = i;
                        }
                    }
                }
                self.scalar(
                    Cow::Borrowed(&self.text[c..end]),
                    ScalarStyle::Plain,
                    c,
                    end,
                );
                self.end_line(end)
            }
            _ => None,
        }
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

    /// `[a, "b", 'c']` on one line, of scalars only.
    fn flow_sequence(&mut self, c: usize, depth: usize) -> Fit {
        if depth >= self.max_depth {
            return None;
        }
        let mut i = c + 1;
        while self.at(i) == b' ' {
            i += 1;
        }
        self.emit(Event::SequenceStart(0, None), c, i);
        if self.at(i) == b']' {
            self.emit(Event::SequenceEnd, i, i + 1);
            return self.end_line(i + 1);
        }
        loop {
            match self.at(i) {
                q @ (b'"' | b'\'') => {
                    let (value, end) = self.quoted(i, q)?;
                    let style = if q == b'"' {
                        ScalarStyle::DoubleQuoted
                    } else {
                        ScalarStyle::SingleQuoted
                    };
                    let span_end = self.quoted_span_end(end);
                    self.scalar(value, style, i, span_end);
                    i = end;
                }
                first if plain_start(first, self.at(i + 1)) => {
                    let start = i;
                    let mut end = i;
                    loop {
                        match self.at(i) {
                            b'\n' | b'[' | b'{' | b'}' => return None,
                            b':' => return None,
                            b',' | b']' => break,
                            b'#' if self.s[i - 1] == b' ' => return None,
                            b' ' => i += 1,
                            _ => {
                                i += 1;
                                end = i;
                            }
                        }
                    }
                    self.scalar(
                        Cow::Borrowed(&self.text[start..end]),
                        ScalarStyle::Plain,
                        start,
                        end,
                    );
                }
                _ => return None,
            }
            while self.at(i) == b' ' {
                i += 1;
            }
            match self.at(i) {
                b',' => {
                    i += 1;
                    while self.at(i) == b' ' {
                        i += 1;
                    }
                    if self.at(i) == b']' {
                        // A trailing comma: left to the parser.
                        return None;
                    }
                }
                b']' => {
                    self.emit(Event::SequenceEnd, i, i + 1);
                    return self.end_line(i + 1);
                }
                _ => return None,
            }
        }
    }
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
