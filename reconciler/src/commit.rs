//! Compiling one commit: read its policy files straight from the object
//! database, compile them, and decide the verdict.

use std::sync::Arc;

use git2::{Oid, Repository};
use meshc_compiler::incremental::Session;
use meshc_compiler::{CompileError, ConfigFile, Input, InputError, Options};
use meshc_ir::Ir;

use crate::git;
use crate::store::{Verdict, Version};

/// A compiled commit: its record (id not yet assigned) and, when accepted, its IR.
pub struct Built {
    /// What the store keeps.
    pub version: Version,
    /// The IR, when the commit compiled.
    pub ir: Option<Arc<Ir>>,
    /// Its encoding ([`Ir::encode`]), made once for both the hash and the store.
    pub encoded: Option<Vec<u8>>,
}

/// Whether warnings block a commit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Reject commits with warnings too.
    pub deny_warnings: bool,
}

/// Compile `commit` of `repo`, reading the files under `subpath`, with the
/// incremental `session` of the previous commit (replaced when the commit's
/// `meshc.toml` differs from the one it compiled with).
pub fn build(
    repo: &Repository,
    commit: Oid,
    branch: &str,
    subpath: &str,
    policy: Policy,
    session: &mut Option<Session>,
) -> Built {
    let mut version = Version {
        id: 0,
        commit: commit.to_string(),
        branch: branch.to_string(),
        author: String::new(),
        email: String::new(),
        message: String::new(),
        committed_at: 0,
        recorded_at: 0,
        verdict: Verdict::Rejected,
        reason: None,
        ir_hash: None,
        errors: 0,
        warnings: 0,
        diagnostics: serde_json::Value::Null,
    };
    if let Ok(c) = repo.find_commit(commit) {
        let a = c.author();
        version.author = a.name().unwrap_or("").to_string();
        version.email = a.email().unwrap_or("").to_string();
        version.message = c.message().unwrap_or("").trim_end().to_string();
        version.committed_at = c.time().seconds();
    }
    match compile(repo, commit, subpath, policy, session, &mut version) {
        Ok(ir) => {
            let encoded = ir.as_deref().map(Ir::encode);
            version.ir_hash = encoded.as_deref().map(meshc_ir::hash_bytes);
            Built {
                version,
                ir,
                encoded,
            }
        }
        Err(reason) => {
            version.verdict = Verdict::Rejected;
            version.reason = Some(reason);
            Built {
                version,
                ir: None,
                encoded: None,
            }
        }
    }
}

/// Whether a path under the policy's sub-path is part of the policy.
fn is_policy_file(p: &str) -> bool {
    p.ends_with(".yaml") || p.ends_with(".yml") || p == "meshc.toml"
}

/// The files of the policy at `rev` under `subpath`: YAML and `meshc.toml`.
pub fn policy_files(
    repo: &Repository,
    rev: &str,
    subpath: &str,
) -> Result<Vec<git::File>, git::Error> {
    git::read_tree(repo, rev, subpath, is_policy_file)
}

/// [`policy_files`] without reading them: paths and blob ids.
pub fn policy_ids(
    repo: &Repository,
    rev: &str,
    subpath: &str,
) -> Result<Vec<(String, Oid)>, git::Error> {
    git::tree_ids(repo, rev, subpath, is_policy_file)
}

/// The policy of `repo` at `rev` (a commit, branch, tag, `HEAD~1`) under
/// `subpath`: its YAML files as inputs named `label(path)`, and the options
/// of its `meshc.toml` (the defaults when it has none). Read straight from
/// the object database. `meshc diff` and the reconciler both read commits
/// this way.
pub fn policy_at(
    repo: &Repository,
    rev: &str,
    subpath: &str,
    label: impl Fn(&str) -> String,
) -> Result<(Vec<Input>, Options), String> {
    policy_known(repo, rev, subpath, label, |_, _| false)
}

/// [`policy_at`], without reading the files that `known(input path, blob
/// id)` says the caller's session has ([`Session::has`]): those are
/// [`Input::known`]. At 10,000 files, reading every blob of a commit takes
/// ~450 ms, walking the tree for ids ~8 ms (`cargo bench -p
/// meshc-reconciler --bench read_commit`).
pub fn policy_known(
    repo: &Repository,
    rev: &str,
    subpath: &str,
    label: impl Fn(&str) -> String,
    known: impl Fn(&str, &[u8]) -> bool,
) -> Result<(Vec<Input>, Options), String> {
    let files = policy_ids(repo, rev, subpath).map_err(|e| e.to_string())?;
    let read = |path: &str, id: Oid| {
        repo.find_blob(id)
            .map(|b| b.content().to_vec())
            .map_err(|e| format!("{path}: {}", e.message()))
    };
    let mut options = Options::default();
    let mut inputs = Vec::new();
    for (path, id) in files {
        if path == "meshc.toml" {
            let shown = label(&path);
            let text =
                String::from_utf8(read(&path, id)?).map_err(|_| format!("{shown} is not UTF-8"))?;
            let file = ConfigFile::parse(&text).map_err(|e| format!("{shown}: {e}"))?;
            options = Options::from_config(&file, Some((shown, text)));
            continue;
        }
        // The blob id: a session takes a file with the id it compiled as
        // unchanged without comparing bytes, or without having them.
        let shown = label(&path);
        inputs.push(if known(&shown, id.as_bytes()) {
            Input::known(shown, id.as_bytes())
        } else {
            Input::bytes(shown, read(&path, id)?).with_id(id.as_bytes())
        });
    }
    Ok((inputs, options))
}

fn compile(
    repo: &Repository,
    commit: Oid,
    subpath: &str,
    policy: Policy,
    session: &mut Option<Session>,
    version: &mut Version,
) -> Result<Option<Arc<Ir>>, String> {
    let rev = commit.to_string();
    // Files the session has at their blob id are not read.
    let known = |path: &str, id: &[u8]| session.as_ref().is_some_and(|s| s.has(path, id));
    let (mut inputs, options) = policy_known(repo, &rev, subpath, str::to_string, known)?;
    // Options come from the `meshc.toml` text alone: the same text, the same options.
    if session
        .as_ref()
        .is_none_or(|s| s.options().config_source != options.config_source)
    {
        *session = Some(Session::new(options));
        // A new session has no files: read them all.
        if inputs
            .iter()
            .any(|i| matches!(i.content, Err(InputError::NotRead)))
        {
            inputs = policy_at(repo, &rev, subpath, str::to_string)?.0;
        }
    }
    let compiled = session.as_mut().expect("set above").compile(inputs);
    let a = &compiled.analysis;
    version.errors = a.count(meshc_compiler::Severity::Error);
    version.warnings = a.count(meshc_compiler::Severity::Warning);
    version.diagnostics = serde_json::to_value(meshc_validator::json_report(a)).unwrap_or_default();
    match &compiled.ir {
        Ok(_) if policy.deny_warnings && version.warnings > 0 => Err(format!(
            "{} warning(s), and warnings block commits",
            version.warnings
        )),
        Ok(ir) => {
            version.verdict = Verdict::Accepted;
            Ok(Some(ir.clone()))
        }
        Err(CompileError::Diagnostics(n)) => Err(format!("{n} error(s)")),
        Err(CompileError::Lowering(errors)) => Err(format!(
            "cannot be lowered to IR: {}",
            errors
                .iter()
                .map(|e| format!("{}: {}: {}", e.resource, e.path, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        )),
    }
}
