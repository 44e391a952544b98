//! The YAML loader's fast path (plain block YAML) must read every document
//! exactly as `saphyr-parser` does: the same trees, spans and diagnostics.
//! Checked on every YAML file of the repository and of the conformance
//! corpora, and on generated variations of them.

use std::path::{Path, PathBuf};

mod common;
use common::yaml_files;

use meshc_compiler::yaml::{Document, load_with};
use meshc_compiler::{Diagnostic, FileId, Limits, SourceFile};

fn read(text: &str, fast: bool) -> (Vec<Document>, Vec<Diagnostic>) {
    let file = SourceFile::new("t.yaml", text.to_owned());
    let mut diags = Vec::new();
    let docs = load_with(FileId(0), &file, &Limits::default(), &mut diags, fast);
    (docs, diags)
}

/// `None` when both paths agree, else what differs.
fn disagreement(text: &str) -> Option<String> {
    let (a, da) = read(text, true);
    let (b, db) = read(text, false);
    let show = |d: &[Document]| {
        d.iter()
            .map(|d| format!("{} {:?} {:?} {:?}", d.index, d.span, d.at, d.root))
            .collect::<Vec<_>>()
    };
    let (sa, sb) = (show(&a), show(&b));
    if sa != sb {
        let i = sa
            .iter()
            .zip(&sb)
            .position(|(x, y)| x != y)
            .unwrap_or(sa.len().min(sb.len()));
        let (x, y) = (
            sa.get(i).cloned().unwrap_or_default(),
            sb.get(i).cloned().unwrap_or_default(),
        );
        let at = x
            .bytes()
            .zip(y.bytes())
            .position(|(p, q)| p != q)
            .unwrap_or(0);
        let from = at.saturating_sub(150);
        return Some(format!(
            "document {i} differs:\nfast:   {}\nparser: {}",
            x.get(from..(at + 150).min(x.len())).unwrap_or(""),
            y.get(from..(at + 150).min(y.len())).unwrap_or("")
        ));
    }
    if format!("{da:?}") != format!("{db:?}") {
        return Some(format!(
            "diagnostics differ:\nfast:   {da:?}\nparser: {db:?}"
        ));
    }
    None
}

fn corpus() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in [
        "policies-examples",
        "compiler",
        "tests",
        "snapshots",
        "validator",
        "reconciler",
        "../shared/conformance",
    ] {
        yaml_files(&root.join(dir), &mut files);
    }
    files.sort();
    files
}

#[test]
fn the_fast_path_reads_every_corpus_file_as_the_parser_does() {
    let files = corpus();
    assert!(files.len() > 100, "only {} YAML files found", files.len());
    let (mut fast, mut chunks, mut failures) = (0, 0, Vec::new());
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let (r, n) = meshc_compiler::yaml::fast_path_coverage(text);
        fast += r;
        chunks += n;
        if let Some(d) = disagreement(text) {
            failures.push(format!("{}: {d}", f.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} files differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    // The fast path must be taken, or this test compares the parser with itself.
    assert!(
        fast * 2 > chunks,
        "the fast path read only {fast} of {chunks} chunks"
    );
    eprintln!("fast path: {fast} of {chunks} chunks");
}

/// Small edits of the corpus, of the kinds that make YAML subtle (spaces,
/// line breaks, comments, indicators, quotes, markers), read both ways. A
/// fixed-seed generator: a failure names the file and the edit, and reruns.
#[test]
fn the_fast_path_reads_edited_files_as_the_parser_does() {
    const EDITS: &[&str] = &[
        " ",
        "  ",
        "\n",
        "\n  ",
        "\n- ",
        "- ",
        "#",
        " #c",
        " # c ",
        ":",
        ": ",
        "x:",
        "\"",
        "'",
        "''",
        "\\",
        "[",
        "]",
        ",",
        "{",
        "}",
        "{}",
        "[]",
        "[a, b]",
        "---\n",
        "...\n",
        "---",
        "&a ",
        "*a",
        "!t ",
        "|\n",
        ">",
        "?",
        "%",
        "@",
        "-",
        "-1",
        "\t",
        "\r",
        "é",
        "\"a b\"",
        "'a''b'",
        " - x",
        "{a: b}",
        "{a: [b, c]}",
        "[{a: b}, x]",
        "{\"a\": 'b'}",
        " {",
        ", x: y",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let files: Vec<String> = corpus()
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter(|t| t.is_ascii() && t.len() < 20_000)
        .collect();
    let (mut tried, mut fast, mut failures) = (0, 0, Vec::new());
    for (n, text) in files.iter().enumerate() {
        for _ in 0..20 {
            let mut t = text.clone();
            let mut edits = Vec::new();
            for _ in 0..1 + next(3) {
                let boundary = |t: &str, mut i: usize| {
                    while !t.is_char_boundary(i) {
                        i -= 1;
                    }
                    i
                };
                let at = boundary(&t, next(t.len() + 1));
                let line = t[..at].rfind('\n').map_or(0, |i| i + 1);
                let line_end = t[at..].find('\n').map_or(t.len(), |i| at + i + 1);
                let op = next(8);
                if op == 0 {
                    // Indent or dedent the line by one or two spaces.
                    let n = 1 + next(2);
                    if next(2) == 0 {
                        edits.push(format!("indent line at {line} by {n}"));
                        t.insert_str(line, &" ".repeat(n));
                    } else {
                        let spaces = t[line..].bytes().take_while(|&b| b == b' ').count();
                        edits.push(format!("dedent line at {line} by {}", n.min(spaces)));
                        t.replace_range(line..line + n.min(spaces), "");
                    }
                } else if op == 1 {
                    let copy = t[line..line_end].to_string();
                    if next(2) == 0 {
                        edits.push(format!("duplicate line at {line}"));
                        t.insert_str(line_end, &copy);
                    } else {
                        edits.push(format!("delete line at {line}"));
                        t.replace_range(line..line_end, "");
                    }
                } else if op == 2 {
                    let end = boundary(&t, (at + 1 + next(3)).min(t.len()));
                    edits.push(format!("delete {at}..{end}"));
                    t.replace_range(at..end, "");
                } else {
                    let e = EDITS[next(EDITS.len())];
                    edits.push(format!("insert {e:?} at {at}"));
                    t.insert_str(at, e);
                }
            }
            tried += 1;
            let (read, _) = meshc_compiler::yaml::fast_path_coverage(&t);
            fast += usize::from(read > 0);
            if let Some(d) = disagreement(&t) {
                failures.push(format!(
                    "file #{n}, {}: {d}\n--- text:\n{t}",
                    edits.join(", ")
                ));
            }
        }
    }
    eprintln!("the fast path read part of {fast} of {tried} edited files");
    // Most edits keep a file (or part of it) in the fast path's subset;
    // otherwise this test would compare the parser with itself.
    assert!(
        fast * 2 > tried,
        "the fast path read only {fast} of {tried} edited files"
    );
    assert!(
        failures.is_empty(),
        "{} of {tried} edited files differ; the first:\n{}",
        failures.len(),
        failures.first().map_or("", String::as_str)
    );
}

/// Nesting around the loader's depth limit: the fast path must decline
/// exactly where the loader reports the limit, in mappings, sequences,
/// indentless sequences and flow collections.
#[test]
fn nesting_at_the_depth_limit_reads_alike() {
    let limit = Limits::default().max_depth;
    for depth in limit - 2..=limit + 1 {
        let mut maps = String::new();
        let mut seqs = String::new();
        let mut mixed = String::new();
        for level in 0..depth {
            maps += &format!("{}k{level}:\n", "  ".repeat(level));
            seqs += &format!("{}-\n", "  ".repeat(level));
            mixed += &format!("{}k:\n{}- ", "  ".repeat(2 * level), "  ".repeat(2 * level));
            mixed += "\n";
        }
        let mut flows = maps.clone();
        let mut nested = maps.clone();
        maps += &format!("{}leaf: x\n", "  ".repeat(depth));
        flows += &format!("{}leaf: [x]\n", "  ".repeat(depth));
        nested += &format!("{}leaf: {{a: [{{b: x}}, []]}}\n", "  ".repeat(depth - 3));
        let mut empty_maps = seqs.clone();
        seqs += &format!("{}- x\n", "  ".repeat(depth));
        empty_maps += &format!("{}- {{}}\n", "  ".repeat(depth));
        for text in [&maps, &flows, &nested, &seqs, &empty_maps, &mixed] {
            assert_eq!(disagreement(text), None, "depth {depth}:\n{text}");
        }
    }
}
