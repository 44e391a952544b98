//! Keeping a local mirror of the policy repository's branch.
//!
//! The mirror is a bare repository under the data directory. `file://`,
//! local paths and `git://` are fetched with libgit2 directly. `https://`
//! and `ssh://` are fetched by the `git` program: libgit2 built without
//! OpenSSL and libssh2 (see ARCHITECTURE.md) has no TLS or SSH transport. The
//! token reaches `git` through `GIT_CONFIG_*` environment variables and the
//! SSH key through `GIT_SSH_COMMAND`, never through its arguments, and URLs
//! are shown with their credentials removed.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use git2::{Direction, Oid, Repository};

/// How to authenticate to the remote.
#[derive(Clone, Default)]
pub enum Auth {
    /// Nothing (file://, git://, public https).
    #[default]
    None,
    /// An HTTPS token (GitHub, GitLab and Gitea accept it as a password).
    Token(String),
    /// A private key file for ssh://.
    SshKey(PathBuf),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
            Auth::SshKey(p) => write!(f, "SshKey({})", p.display()),
        }
    }
}

/// What to follow.
#[derive(Debug, Clone)]
pub struct Source {
    /// Repository URL or local path.
    pub url: String,
    /// Branch.
    pub branch: String,
    /// Directory inside the repository holding the policy ("" for all).
    pub subpath: String,
    /// Credentials.
    pub auth: Auth,
    /// CA certificates (PEM) trusted for an `https://` remote instead of the
    /// system's, for a Git server with a private CA.
    pub ca_file: Option<PathBuf>,
    /// `known_hosts` file for an `ssh://` remote; with it, host keys are
    /// checked strictly against that file alone.
    pub known_hosts: Option<PathBuf>,
}

impl Source {
    /// The URL without user information, for logs and messages.
    pub fn shown_url(&self) -> String {
        redact(&self.url)
    }
}

/// `scheme://user:secret@host/...` → `scheme://host/...`.
pub fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://{host}/{path}");
        }
    }
    url.to_string()
}

pub use crate::Error;

/// The branch's state on the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The branch points at this commit, now in the mirror.
    Head(Oid),
    /// The remote has no such branch (deleted, or never created).
    Missing,
}

/// The local mirror.
pub struct Mirror {
    repo: Repository,
    source: Source,
    dir: PathBuf,
}

impl Mirror {
    /// Open the mirror at `dir`, creating a bare repository there if needed.
    pub fn open(dir: &Path, source: Source) -> Result<Mirror, Error> {
        let repo = if dir.join("HEAD").is_file() {
            Repository::open_bare(dir)
        } else {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error(format!("cannot create {}: {e}", dir.display())))?;
            Repository::init_bare(dir)
        }
        .map_err(|e| Error(format!("mirror {}: {}", dir.display(), e.message())))?;
        Ok(Mirror {
            repo,
            source,
            dir: dir.to_path_buf(),
        })
    }

    /// The mirror's repository (to read commits from).
    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// What it follows.
    pub fn source(&self) -> &Source {
        &self.source
    }

    fn tracking_ref(&self) -> String {
        format!("refs/remotes/origin/{}", self.source.branch)
    }

    /// Fetch the branch; tell where it points now.
    pub fn fetch(&self) -> Result<Fetched, Error> {
        let url = &self.source.url;
        let external = url.starts_with("https://")
            || url.starts_with("http://")
            || url.starts_with("ssh://")
            || (url.contains('@') && url.contains(':') && !url.contains("://"));
        if external {
            self.fetch_with_git()
        } else {
            self.fetch_with_libgit2()
        }
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error(format!("{what} {}: {e}", self.source.shown_url()))
    }

    fn fetch_with_libgit2(&self) -> Result<Fetched, Error> {
        let branch_ref = format!("refs/heads/{}", self.source.branch);
        let mut remote = self
            .repo
            .remote_anonymous(&self.source.url)
            .map_err(|e| self.fail("remote", e.message()))?;
        remote
            .connect(Direction::Fetch)
            .map_err(|e| self.fail("cannot reach", e.message()))?;
        let exists = remote
            .list()
            .map_err(|e| self.fail("cannot list", e.message()))?
            .iter()
            .any(|h| h.name() == branch_ref);
        remote.disconnect().ok();
        if !exists {
            return Ok(Fetched::Missing);
        }
        let spec = format!("+{branch_ref}:{}", self.tracking_ref());
        remote
            .fetch(&[spec.as_str()], None, None)
            .map_err(|e| self.fail("cannot fetch", e.message()))?;
        self.tracked()
    }

    fn fetch_with_git(&self) -> Result<Fetched, Error> {
        let branch_ref = format!("refs/heads/{}", self.source.branch);
        let listed = self.git(&["ls-remote", &self.source.url, &branch_ref])?;
        if listed.trim().is_empty() {
            return Ok(Fetched::Missing);
        }
        let spec = format!("+{branch_ref}:{}", self.tracking_ref());
        self.git(&["fetch", "--no-tags", "--quiet", &self.source.url, &spec])?;
        self.tracked()
    }

    /// Run `git` against the mirror with the credentials in its environment.
    fn git(&self, args: &[&str]) -> Result<String, Error> {
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir").arg(&self.dir).args(args);
        cmd.env("GIT_TERMINAL_PROMPT", "0");
        if let Some(ca) = &self.source.ca_file {
            cmd.env("GIT_SSL_CAINFO", ca);
        }
        match &self.source.auth {
            Auth::None => {}
            Auth::Token(token) => {
                let basic = base64::engine::general_purpose::STANDARD
                    .encode(format!("x-access-token:{token}"));
                cmd.env("GIT_CONFIG_COUNT", "1")
                    .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                    .env(
                        "GIT_CONFIG_VALUE_0",
                        format!("Authorization: Basic {basic}"),
                    );
            }
            Auth::SshKey(_) => {}
        }
        if let Some(ssh) = self.ssh_command() {
            cmd.env("GIT_SSH_COMMAND", ssh);
        }
        let out = cmd
            .output()
            .map_err(|e| self.fail("cannot run git for", e))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // git prints the URL it was given; never show its credentials.
            let cleaned = stderr.replace(&self.source.url, &self.source.shown_url());
            return Err(self.fail(&format!("git {} failed for", args[0]), cleaned.trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The `ssh` command line git runs (a shell string: paths are quoted),
    /// when a key or a known_hosts file is configured.
    fn ssh_command(&self) -> Option<String> {
        let key = match &self.source.auth {
            Auth::SshKey(key) => Some(key),
            _ => None,
        };
        if key.is_none() && self.source.known_hosts.is_none() {
            return None;
        }
        let mut cmd = String::from("ssh -o BatchMode=yes");
        if let Some(key) = key {
            cmd += &format!(" -o IdentitiesOnly=yes -i {}", shell_quote(key));
        }
        if let Some(hosts) = &self.source.known_hosts {
            cmd += &format!(
                " -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
                shell_quote(hosts)
            );
        }
        Some(cmd)
    }

    fn tracked(&self) -> Result<Fetched, Error> {
        let oid = self
            .repo
            .refname_to_id(&self.tracking_ref())
            .map_err(|e| self.fail("fetched nothing from", e.message()))?;
        Ok(Fetched::Head(oid))
    }

    /// The commits from `old` (exclusive) to `new` (inclusive), oldest first,
    /// at most `cap` (the newest ones). `None` when `old` is not an ancestor
    /// of `new`: history was rewritten.
    pub fn between(&self, old: Oid, new: Oid, cap: usize) -> Result<Option<Vec<Oid>>, Error> {
        if old == new {
            return Ok(Some(Vec::new()));
        }
        let descends = self.repo.find_commit(old).is_ok()
            && self.repo.graph_descendant_of(new, old).unwrap_or(false);
        if !descends {
            return Ok(None);
        }
        let mut walk = self
            .repo
            .revwalk()
            .map_err(|e| Error(format!("revwalk: {}", e.message())))?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL)
            .and_then(|_| walk.push(new))
            .and_then(|_| walk.hide(old))
            .map_err(|e| Error(format!("revwalk: {}", e.message())))?;
        let mut commits: Vec<Oid> = walk.filter_map(Result::ok).take(cap).collect();
        commits.reverse();
        Ok(Some(commits))
    }
}

/// `path` as one single-quoted shell word.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_for_the_shell() {
        assert_eq!(shell_quote(Path::new("/a b/key")), "'/a b/key'");
        assert_eq!(shell_quote(Path::new("/it's/key")), r"'/it'\''s/key'");
    }

    #[test]
    fn credentials_are_removed_from_urls() {
        assert_eq!(
            redact("https://bot:s3cret@git.example.com/org/policy.git"),
            "https://git.example.com/org/policy.git"
        );
        assert_eq!(redact("file:///tmp/repo"), "file:///tmp/repo");
        assert_eq!(redact("/tmp/repo"), "/tmp/repo");
    }

    #[test]
    fn token_is_not_in_debug_output() {
        let s = format!("{:?}", Auth::Token("s3cret".into()));
        assert!(!s.contains("s3cret"), "{s}");
    }
}
