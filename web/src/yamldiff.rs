//! The raw YAML diff between two commits' policy files, side by side, with
//! simple syntax classes (keys, values, comments) for colouring.

use std::collections::BTreeMap;

use similar::{DiffTag, TextDiff};

/// A piece of a line with its colour class (`k` key, `v` value, `c`
/// comment, `` plain).
pub struct Part {
    pub class: &'static str,
    pub text: String,
}

/// One side of a row.
#[derive(Default)]
pub struct Side {
    pub number: Option<usize>,
    pub parts: Vec<Part>,
}

/// A row: `same`, `del` (old only), `ins` (new only), `chg` (both, changed)
/// or `gap` (lines left out between hunks).
pub struct Row {
    pub kind: &'static str,
    pub old: Side,
    pub new: Side,
}

/// The rows of one file that changed.
pub struct FileDiff {
    pub path: String,
    pub status: &'static str,
    pub rows: Vec<Row>,
}

/// Split a YAML line into coloured parts.
pub fn highlight(line: &str) -> Vec<Part> {
    let part = |class, text: &str| Part {
        class,
        text: text.to_string(),
    };
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    if trimmed.starts_with('#') || trimmed == "---" || trimmed == "..." {
        let mut parts = vec![part("", indent), part("c", trimmed)];
        parts.retain(|p| !p.text.is_empty());
        return parts;
    }
    let (dash, rest) = match trimmed.strip_prefix("- ") {
        Some(r) => ("- ", r),
        None => ("", trimmed),
    };
    // A comment starts at ` #` outside quotes.
    let mut quote = None;
    let mut comment_at = None;
    let bytes = rest.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), b2) if q == b2 => quote = None,
            (None, b'#') if i == 0 || bytes[i - 1] == b' ' => {
                comment_at = Some(i);
                break;
            }
            _ => {}
        }
    }
    let (body, comment) = rest.split_at(comment_at.unwrap_or(rest.len()));
    let mut parts = vec![part("", indent), part("", dash)];
    // A key ends at `: ` or a final `:`, outside quotes and flow collections.
    let key_end = body
        .find(": ")
        .filter(|i| !body[..*i].contains(['{', '[', '"', '\'']))
        .or_else(|| body.strip_suffix(':').map(str::len));
    match key_end {
        Some(i) => {
            parts.push(part("k", &body[..i]));
            parts.push(part("", ":"));
            parts.push(part("v", &body[(i + 1).min(body.len())..]));
        }
        None => parts.push(part("v", body)),
    }
    if !comment.is_empty() {
        parts.push(part("c", comment));
    }
    parts.retain(|p| !p.text.is_empty());
    parts
}

fn side(number: usize, line: &str) -> Side {
    Side {
        number: Some(number + 1),
        parts: highlight(line.trim_end_matches(['\n', '\r'])),
    }
}

/// The changed files between `old` and `new` (path to text), each with its
/// hunks (two lines of context) side by side.
pub fn diff(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<FileDiff> {
    let empty = String::new();
    let mut paths: Vec<&String> = old.keys().chain(new.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut files = Vec::new();
    for path in paths {
        let (a, b) = (
            old.get(path).unwrap_or(&empty),
            new.get(path).unwrap_or(&empty),
        );
        if a == b {
            continue;
        }
        let status = match (old.contains_key(path), new.contains_key(path)) {
            (false, _) => "added",
            (_, false) => "deleted",
            _ => "changed",
        };
        let d = TextDiff::from_lines(a.as_str(), b.as_str());
        let (olds, news): (Vec<&str>, Vec<&str>) =
            (d.old_slices().to_vec(), d.new_slices().to_vec());
        let mut rows = Vec::new();
        for (g, group) in d.grouped_ops(2).iter().enumerate() {
            if g > 0 {
                rows.push(Row {
                    kind: "gap",
                    old: Side::default(),
                    new: Side::default(),
                });
            }
            for op in group {
                let (tag, o, n) = op.as_tag_tuple();
                match tag {
                    DiffTag::Equal => {
                        for (i, j) in o.zip(n) {
                            rows.push(Row {
                                kind: "same",
                                old: side(i, olds[i]),
                                new: side(j, news[j]),
                            });
                        }
                    }
                    DiffTag::Delete | DiffTag::Insert | DiffTag::Replace => {
                        let (o, n): (Vec<usize>, Vec<usize>) = (o.collect(), n.collect());
                        for k in 0..o.len().max(n.len()) {
                            let (l, r) = (o.get(k), n.get(k));
                            rows.push(Row {
                                kind: match (l, r) {
                                    (Some(_), Some(_)) => "chg",
                                    (Some(_), None) => "del",
                                    _ => "ins",
                                },
                                old: l.map(|&i| side(i, olds[i])).unwrap_or_default(),
                                new: r.map(|&j| side(j, news[j])).unwrap_or_default(),
                            });
                        }
                    }
                }
            }
        }
        files.push(FileDiff {
            path: path.clone(),
            status,
            rows,
        });
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(line: &str) -> Vec<(&'static str, String)> {
        highlight(line)
            .into_iter()
            .map(|p| (p.class, p.text))
            .collect()
    }

    #[test]
    fn keys_values_and_comments() {
        assert_eq!(
            classes("  - weight: 90 # canary"),
            [
                ("", "  ".into()),
                ("", "- ".into()),
                ("k", "weight".into()),
                ("", ":".into()),
                ("v", " 90 ".into()),
                ("c", "# canary".into())
            ]
        );
        assert_eq!(classes("spec:"), [("k", "spec".into()), ("", ":".into())]);
        assert_eq!(classes("# note"), [("c", "# note".into())]);
        assert_eq!(
            classes("url: \"http://x#y\""),
            [
                ("k", "url".into()),
                ("", ":".into()),
                ("v", " \"http://x#y\"".into())
            ]
        );
    }

    #[test]
    fn side_by_side_rows() {
        let text: String = (1..=14).map(|i| format!("l{i}: {i}\n")).collect();
        let old = BTreeMap::from([("a.yaml".to_string(), text.clone())]);
        let mut new = old.clone();
        new.insert(
            "a.yaml".into(),
            text.replace("l4: 4", "l4: 40").replace("l12: 12\n", ""),
        );
        new.insert("new.yaml".into(), "k: v\n".into());
        let files = diff(&old, &new);
        assert_eq!(files.len(), 2);
        let kinds: Vec<&str> = files[0].rows.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                "same", "same", "chg", "same", "same", "gap", "same", "same", "del", "same", "same"
            ]
        );
        let chg = &files[0].rows[2];
        assert_eq!((chg.old.number, chg.new.number), (Some(4), Some(4)));
        let del = &files[0].rows[8];
        assert_eq!((del.old.number, del.new.number), (Some(12), None));
        assert_eq!(files[1].status, "added");
        assert_eq!(files[1].rows[0].kind, "ins");
    }
}
