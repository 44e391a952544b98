//! Source files as the compiler sees them: a path and its text, with a line index.
//!
//! The compiler never reads files itself; callers hand it `path → text`. Spans are
//! byte ranges into these texts, turned into lines and columns only when rendered.

use std::sync::Arc;

/// Index of a file in a [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// The file the range is in.
    pub file: FileId,
    /// Start byte offset (inclusive).
    pub start: u32,
    /// End byte offset (exclusive).
    pub end: u32,
}

impl Span {
    /// A span from `start` to `end` in `file`.
    pub fn new(file: FileId, start: usize, end: usize) -> Self {
        Span {
            file,
            start: start as u32,
            end: end.max(start) as u32,
        }
    }
    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// One source file: its path as given by the caller and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path as the caller named it (relative paths stay relative).
    pub path: String,
    /// The UTF-8 text.
    pub text: Arc<str>,
    line_starts: Vec<u32>,
}

/// A 1-based line and column; the column counts characters (Unicode scalar values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineCol {
    /// 1-based line.
    pub line: u32,
    /// 1-based column in characters.
    pub column: u32,
}

impl SourceFile {
    /// Index `text` under `path`.
    pub fn new(path: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        let text: Arc<str> = text.into();
        let mut line_starts = vec![0u32];
        line_starts.extend(memchr_newlines(text.as_bytes()).map(|i| (i + 1) as u32));
        SourceFile {
            path: path.into(),
            text,
            line_starts,
        }
    }

    /// Byte offset of the start of 1-based `line` (clamped to the text).
    pub fn line_start(&self, line: usize) -> usize {
        let i = line.saturating_sub(1).min(self.line_starts.len() - 1);
        self.line_starts[i] as usize
    }

    /// Byte offset of 1-based `line` and 0-based character column `col`.
    pub fn offset_of(&self, line: usize, col: usize) -> usize {
        let start = self.line_start(line);
        let rest = &self.text[start..];
        match rest.as_bytes().get(..col) {
            // Columns count characters; over ASCII they are bytes.
            Some(prefix) if prefix.is_ascii() => start + col,
            _ => start + rest.char_indices().nth(col).map_or(rest.len(), |(i, _)| i),
        }
    }

    /// Line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> LineCol {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s as usize <= offset) - 1;
        let start = self.line_starts[line] as usize;
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        LineCol {
            line: line as u32 + 1,
            column: column as u32 + 1,
        }
    }
}

fn memchr_newlines(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
}

/// All files of one compilation, addressed by [`FileId`].
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }
    /// Add a file and return its id.
    pub fn add(&mut self, file: SourceFile) -> FileId {
        self.files.push(file);
        FileId(self.files.len() as u32 - 1)
    }
    /// The file with this id.
    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }
    /// Keep the first `n` files.
    pub fn truncate(&mut self, n: usize) {
        self.files.truncate(n);
    }
    /// Put `file` in the place of file `id`, returning the one it replaces.
    pub fn replace(&mut self, id: FileId, file: SourceFile) -> SourceFile {
        std::mem::replace(&mut self.files[id.0 as usize], file)
    }
    /// Put `file` at `id`, moving the files from there one id up.
    pub fn insert(&mut self, id: FileId, file: SourceFile) {
        self.files.insert(id.0 as usize, file);
    }
    /// Take file `id` out, moving the files after it one id down.
    pub fn remove(&mut self, id: FileId) -> SourceFile {
        self.files.remove(id.0 as usize)
    }
    /// Take the files out, in insertion order.
    pub fn into_files(self) -> Vec<SourceFile> {
        self.files
    }
    /// All files in insertion order.
    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let f = SourceFile::new("a.yaml", "a: 1\nnäme: x\n");
        assert_eq!(f.line_col(0), LineCol { line: 1, column: 1 });
        let x = f.text.find('x').unwrap();
        assert_eq!(f.line_col(x), LineCol { line: 2, column: 7 });
        assert_eq!(f.offset_of(2, 6), x);
    }
}
