//! Hostile and broken input gets a clear diagnostic in bounded time and
//! memory, never a panic; and every file of the upstream conformance corpora
//! lints without one.

mod common;

use std::time::Instant;

use meshc_compiler::{Input, Options, analyze};

fn codes(input: Input) -> Vec<&'static str> {
    analyze(vec![input], &Options::default())
        .diagnostics
        .iter()
        .map(|d| d.code())
        .collect()
}

#[test]
fn truncated_document() {
    let full =
        std::fs::read_to_string(common::root().join("policies-examples/bookinfo/routing.yaml"))
            .unwrap();
    for cut in [10, full.len() / 3, full.len() / 2, full.len() - 7] {
        let mut end = cut;
        while !full.is_char_boundary(end) {
            end -= 1;
        }
        let a = analyze(
            vec![Input::new("t.yaml", &full[..end])],
            &Options::default(),
        );
        for d in &a.diagnostics {
            assert!(d.primary.span.end as usize <= end, "span outside the text");
        }
    }
}

#[test]
fn binary_input() {
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    assert_eq!(codes(Input::bytes("bin.yaml", bytes)), vec!["MC0004"]);
    let mut nul = b"apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a\0}\n".to_vec();
    nul.extend_from_slice(&[0xff, 0xfe]);
    assert_eq!(codes(Input::bytes("nul.yaml", nul)), vec!["MC0004"]);
}

#[test]
fn deeply_nested() {
    let started = Instant::now();
    let flow = format!("a: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(codes(Input::new("flow.yaml", flow)), vec!["MC0003"]);
    // Block style at 2,000 levels (10,000 would be 50 MB of indentation).
    let mut block = String::new();
    for i in 0..2_000 {
        block += &" ".repeat(i);
        block += "k:\n";
    }
    assert_eq!(codes(Input::new("block.yaml", block)), vec!["MC0003"]);
    assert!(started.elapsed().as_secs() < 30);
}

#[test]
fn alias_bomb() {
    let text = std::fs::read_to_string(
        common::root().join("policies-examples/mistakes/MC0003-yaml-limits.yaml"),
    )
    .unwrap();
    let started = Instant::now();
    assert_eq!(codes(Input::new("bomb.yaml", text)), vec!["MC0003"]);
    assert!(started.elapsed().as_secs() < 10);
}

#[test]
fn hundred_megabytes() {
    // Through the CLI: the file is never read into memory.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(100 * 1024 * 1024).unwrap();
    let out = common::meshc_in(dir.path(), &["lint", "--format", "concise", "big.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        common::stdout(&out),
        "big.yaml:1:1: error[MC0004] file is 104857600 bytes, over the 16777216 byte limit\n"
    );
    // Through the library: the size is checked before decoding.
    assert_eq!(
        codes(Input::bytes("big.yaml", vec![b'a'; 17 * 1024 * 1024])),
        vec!["MC0004"]
    );
}

#[test]
fn one_bad_document_hides_nothing() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: b}\nspec: {host: nowhere}\n";
    assert_eq!(
        codes(Input::new("two.yaml", text)),
        vec!["MC0001", "MC0102"]
    );
}

#[test]
fn conformance_corpora_lint_without_panic() {
    let shared = common::root().join("../shared/conformance");
    assert!(shared.is_dir(), "../shared/conformance is missing");
    let out = common::meshc(&["lint", "--format", "json", shared.to_str().unwrap()]);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&common::stdout(&out)).unwrap();
    assert!(
        v["summary"]["files"].as_u64().unwrap() > 200,
        "{}",
        v["summary"]
    );
}
