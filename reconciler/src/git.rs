//! Reading a repository's files at a revision with libgit2 (no work tree, no
//! checkout, nothing written).

use std::path::Path;

use git2::{ObjectType, Repository, TreeWalkMode, TreeWalkResult};

/// A file at a revision: its path in the repository and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Path relative to the repository root (or to the sub-path asked for).
    pub path: String,
    /// Contents.
    pub bytes: Vec<u8>,
    /// Its blob id.
    pub id: git2::Oid,
}

pub use crate::Error;

/// Open the repository containing `dir`.
pub fn open(dir: &Path) -> Result<Repository, Error> {
    Repository::discover(dir).map_err(|e| {
        Error(format!(
            "{}: not in a Git repository ({})",
            dir.display(),
            e.message()
        ))
    })
}

/// Whether `rev` names a commit in the repository containing `dir`.
pub fn is_revision(dir: &Path, rev: &str) -> bool {
    open(dir).is_ok_and(|r| {
        r.revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .is_ok()
    })
}

/// The files at `rev` (a commit, branch, tag or `HEAD~2`) under `subpath`
/// (empty: the whole tree) whose names `keep` accepts, sorted by path.
pub fn read_tree(
    repo: &Repository,
    rev: &str,
    subpath: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<File>, Error> {
    let mut files = Vec::new();
    for (path, id) in tree_ids(repo, rev, subpath, keep)? {
        let blob = repo
            .find_blob(id)
            .map_err(|e| Error(format!("{path}: {}", e.message())))?;
        files.push(File {
            path,
            bytes: blob.content().to_vec(),
            id,
        });
    }
    Ok(files)
}

/// [`read_tree`] without reading the files: each one's path and blob id,
/// sorted by path. Two files with the same id have the same bytes.
pub fn tree_ids(
    repo: &Repository,
    rev: &str,
    subpath: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<(String, git2::Oid)>, Error> {
    let commit = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| Error(format!("`{rev}` is not a commit: {}", e.message())))?;
    let mut tree = commit
        .tree()
        .map_err(|e| Error(format!("`{rev}`: {}", e.message())))?;
    let sub = subpath.trim_matches('/');
    if !sub.is_empty() {
        let entry = tree
            .get_path(Path::new(sub))
            .map_err(|_| Error(format!("`{rev}` has no `{sub}`")))?;
        tree = entry
            .to_object(repo)
            .and_then(|o| o.peel_to_tree())
            .map_err(|_| Error(format!("`{sub}` at `{rev}` is not a directory")))?;
    }
    let mut found = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        if entry.kind() == Some(ObjectType::Blob)
            && let Ok(name) = entry.name()
        {
            let path = format!("{dir}{name}");
            if keep(&path) {
                found.push((path, entry.id()));
            }
        }
        TreeWalkResult::Ok
    })
    .map_err(|e| Error(e.message().to_string()))?;
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(repo: &Repository, files: &[(&str, &str)], message: &str) -> git2::Oid {
        let root = repo.workdir().unwrap().to_path_buf();
        let mut index = repo.index().unwrap();
        index.clear().unwrap();
        for (path, text) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            index.add_path(Path::new(path)).unwrap();
        }
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .unwrap()
    }

    #[test]
    fn reads_each_revision_and_sub_path() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let first = commit(&repo, &[("p/a.yaml", "one"), ("p/b.txt", "x")], "first");
        commit(
            &repo,
            &[("p/a.yaml", "two"), ("q/c.yaml", "three")],
            "second",
        );
        let yaml = |p: &str| p.ends_with(".yaml");
        let head = read_tree(&repo, "HEAD", "", yaml).unwrap();
        let names: Vec<_> = head.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["p/a.yaml", "q/c.yaml"]);
        assert_eq!(head[0].bytes, b"two");
        let old = read_tree(&repo, &first.to_string(), "p", yaml).unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(
            (old[0].path.as_str(), old[0].bytes.as_slice()),
            ("a.yaml", b"one".as_slice())
        );
        assert_eq!(read_tree(&repo, "HEAD~1", "", yaml).unwrap().len(), 1);
        assert!(
            read_tree(&repo, "nope", "", yaml)
                .unwrap_err()
                .0
                .contains("not a commit")
        );
        assert!(
            read_tree(&repo, "HEAD", "zzz", yaml)
                .unwrap_err()
                .0
                .contains("has no")
        );
        assert!(is_revision(dir.path(), "HEAD~1"));
        assert!(!is_revision(dir.path(), "HEAD~5"));
    }
}
