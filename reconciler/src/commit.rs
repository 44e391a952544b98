//! Compiling one commit: read its policy files straight from the object
//! database, compile them, and decide the verdict.

use std::sync::Arc;

use git2::{Oid, Repository};
use meshc_compiler::incremental::Session;
use meshc_compiler::{CompileError, ConfigFile, Input, Options};
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
    let files = policy_files(repo, rev, subpath).map_err(|e| e.to_string())?;
    let mut options = Options::default();
    let mut inputs = Vec::new();
    for f in files {
        if f.path == "meshc.toml" {
            let shown = label(&f.path);
            let text = String::from_utf8(f.bytes).map_err(|_| format!("{shown} is not UTF-8"))?;
            let file = ConfigFile::parse(&text).map_err(|e| format!("{shown}: {e}"))?;
            options = Options::from_config(&file, Some((shown, text)));
        } else {
            // The blob id: a session takes a file with the id it compiled
            // as unchanged without comparing bytes.
            inputs.push(Input::bytes(label(&f.path), f.bytes).with_id(f.id.as_bytes()));
        }
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
    let (inputs, options) = policy_at(repo, &commit.to_string(), subpath, str::to_string)?;
    // Options come from the `meshc.toml` text alone: the same text, the same options.
    if session
        .as_ref()
        .is_none_or(|s| s.options().config_source != options.config_source)
    {
        *session = Some(Session::new(options));
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
