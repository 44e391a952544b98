//! The versioned store: every compiled commit (accepted or rejected) with its
//! diagnostics and IR, the pin, and an audit log, in one redb file.
//!
//! redb rather than SQLite: pure Rust (no C build, 13 s CPU in a debug build
//! against 17 s for bundled rusqlite and 86 s in release), ACID transactions
//! with a copy-on-write B-tree, and the access pattern is key-value (a version
//! by id, an IR by hash) with no queries that want SQL.
//!
//! Invariants: a version and its IR are written in one transaction; an IR is
//! stored once per hash however many versions share it; retention never
//! deletes the version being served.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

const VERSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("versions");
const IRS: TableDefinition<&str, &[u8]> = TableDefinition::new("irs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Per accepted version, its semantic changes against the accepted version
/// before it (JSON [`StoredChange`]s), worked out when it is recorded.
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");

/// One semantic change of a version, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredChange {
    /// `added`, `removed` or `changed`.
    pub kind: String,
    /// The change in words (`reviews.default: rule "canary" ... 5% -> 20%`).
    pub text: String,
    /// Workloads (`namespace/name`) whose proxies it reaches.
    pub reaches: Vec<String>,
}

impl StoredChange {
    /// The changes from IR `before` to `after`.
    pub fn between(before: &meshc_ir::Ir, after: &meshc_ir::Ir) -> Vec<StoredChange> {
        meshc_ir::diff::diff(before, after)
            .into_iter()
            .map(|c| StoredChange {
                kind: match c.kind {
                    meshc_ir::diff::ChangeKind::Added => "added",
                    meshc_ir::diff::ChangeKind::Removed => "removed",
                    meshc_ir::diff::ChangeKind::Changed => "changed",
                }
                .to_string(),
                text: c.to_string(),
                reaches: c.reaches.clone(),
            })
            .collect()
    }
}

pub use crate::Error;

macro_rules! db {
    ($what:expr, $e:expr) => {
        $e.map_err(|e| Error(format!("store: {}: {e}", $what)))
    };
}

/// Whether a commit may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Compiled without errors (and without warnings when warnings block).
    Accepted,
    /// Has errors (or blocking warnings, or cannot be read); never served.
    Rejected,
}

/// One compiled commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Sequence number, from 1, in the order commits were compiled.
    pub id: u64,
    /// Commit id (hex).
    pub commit: String,
    /// Branch it was found on.
    pub branch: String,
    /// Author name.
    pub author: String,
    /// Author e-mail.
    pub email: String,
    /// Commit message.
    pub message: String,
    /// Commit time, seconds since the epoch.
    pub committed_at: i64,
    /// When meshc compiled it, seconds since the epoch.
    pub recorded_at: i64,
    /// Accepted or rejected.
    pub verdict: Verdict,
    /// Why it was rejected, in one line.
    pub reason: Option<String>,
    /// The IR's hash, when it compiled.
    pub ir_hash: Option<String>,
    /// Error diagnostics.
    pub errors: usize,
    /// Warning diagnostics.
    pub warnings: usize,
    /// The diagnostics in `meshc lint --format json` form.
    pub diagnostics: serde_json::Value,
}

/// A rollback: serve this version until the next accepted commit or an unpin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The pinned version's id.
    pub version: u64,
    /// Who pinned it.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When, seconds since the epoch.
    pub at: i64,
}

/// An audit entry: pins, unpins, force-pushes, deleted branches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number.
    pub id: u64,
    /// When, seconds since the epoch.
    pub at: i64,
    /// `pin`, `unpin`, `force-push`, `branch-deleted`, `fetch-failed`.
    pub kind: String,
    /// What happened, for people.
    pub detail: String,
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The page cache of the store's database.
const STORE_CACHE_BYTES: usize = 16 << 20;

/// The store.
pub struct Store {
    db: Database,
    retain: usize,
}

impl Store {
    /// Open (or create) the store at `path`, keeping at most `retain`
    /// versions (the served one is always kept).
    pub fn open(path: &Path, retain: usize) -> Result<Store, Error> {
        // redb caches up to 1 GiB of pages by default, and every recorded IR
        // passes through the cache. The store is written once per commit
        // and read when a page or the API asks: a small cache costs
        // nothing there and keeps the control plane's memory flat.
        let db = redb::Builder::new()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(path)
            .map_err(|e| Error(format!("store {}: {e}", path.display())))?;
        let txn = db!("begin", db.begin_write())?;
        {
            db!("versions", txn.open_table(VERSIONS))?;
            db!("irs", txn.open_table(IRS))?;
            db!("meta", txn.open_table(META))?;
            db!("events", txn.open_table(EVENTS))?;
            db!("changes", txn.open_table(CHANGES))?;
        }
        db!("commit", txn.commit())?;
        Ok(Store {
            db,
            retain: retain.max(1),
        })
    }

    /// Record a compiled commit and its IR (encoded) in one transaction.
    /// An accepted version ends any pin. Returns the stored version.
    pub fn record(&self, v: Version, ir: Option<&[u8]>) -> Result<Version, Error> {
        self.record_with_changes(v, ir, None)
    }

    /// [`Store::record`], keeping the version's semantic changes in the same
    /// transaction: a reader never sees the version without them.
    pub fn record_with_changes(
        &self,
        mut v: Version,
        ir: Option<&[u8]>,
        changes: Option<&[StoredChange]>,
    ) -> Result<Version, Error> {
        let txn = db!("begin", self.db.begin_write())?;
        {
            let mut versions = db!("versions", txn.open_table(VERSIONS))?;
            let last = db!("versions", versions.last())?.map_or(0, |(k, _)| k.value());
            v.id = last + 1;
            v.recorded_at = now();
            if let (Some(hash), Some(bytes)) = (&v.ir_hash, ir) {
                let mut irs = db!("irs", txn.open_table(IRS))?;
                if db!("irs", irs.get(hash.as_str()))?.is_none() {
                    db!("irs", irs.insert(hash.as_str(), bytes))?;
                }
            }
            db!("versions", versions.insert(v.id, json(&v).as_slice()))?;
            if let Some(changes) = changes {
                let mut t = db!("changes", txn.open_table(CHANGES))?;
                db!("changes", t.insert(v.id, json(&changes).as_slice()))?;
            }
            let mut meta = db!("meta", txn.open_table(META))?;
            db!("meta", meta.insert("head", v.commit.as_bytes()))?;
            if v.verdict == Verdict::Accepted {
                let had = db!("meta", meta.remove("pin"))?.map(|g| g.value().to_vec());
                if let Some(pin) = had.and_then(|b| serde_json::from_slice::<Pin>(&b).ok()) {
                    drop(meta);
                    event(
                        &txn,
                        "unpin",
                        format!(
                            "pin of version {} ended by accepted commit {}",
                            pin.version,
                            short(&v.commit)
                        ),
                    )?;
                }
            }
        }
        self.retention(&txn)?;
        db!("commit", txn.commit())?;
        Ok(v)
    }

    /// Drop the oldest versions beyond the limit, and IRs no version needs.
    fn retention(&self, txn: &redb::WriteTransaction) -> Result<(), Error> {
        let served = served_in(txn)?.map(|(v, _)| v.id);
        let mut versions = db!("versions", txn.open_table(VERSIONS))?;
        let count = db!("versions", versions.len())? as usize;
        if count <= self.retain {
            return Ok(());
        }
        let mut drop_ids = Vec::new();
        for entry in db!("versions", versions.iter())? {
            let (k, _) = db!("versions", entry)?;
            if drop_ids.len() + self.retain >= count {
                break;
            }
            if Some(k.value()) != served {
                drop_ids.push(k.value());
            }
        }
        let mut changes = db!("changes", txn.open_table(CHANGES))?;
        for id in drop_ids {
            db!("versions", versions.remove(id))?;
            db!("changes", changes.remove(id))?;
        }
        let mut needed = std::collections::HashSet::new();
        for entry in db!("versions", versions.iter())? {
            let (_, v) = db!("versions", entry)?;
            if let Some(h) = parse::<Version>(v.value())?.ir_hash {
                needed.insert(h);
            }
        }
        let mut irs = db!("irs", txn.open_table(IRS))?;
        db!("irs", irs.retain(|hash, _| needed.contains(hash)))?;
        Ok(())
    }

    /// Versions, newest first, at most `limit`.
    pub fn versions(&self, limit: usize) -> Result<Vec<Version>, Error> {
        self.newest(VERSIONS, limit)
    }

    /// The newest `limit` records of a table keyed by sequence number.
    fn newest<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<u64, &[u8]>,
        limit: usize,
    ) -> Result<Vec<T>, Error> {
        let what = "records";
        let txn = db!("begin", self.db.begin_read())?;
        let t = db!(what, txn.open_table(table))?;
        let mut out = Vec::new();
        for entry in db!(what, t.iter())?.rev().take(limit) {
            let (_, v) = db!(what, entry)?;
            out.push(parse(v.value())?);
        }
        Ok(out)
    }

    /// A version by id, commit (or a prefix of at least 7), or IR hash (or prefix).
    pub fn find(&self, key: &str) -> Result<Option<Version>, Error> {
        let txn = db!("begin", self.db.begin_read())?;
        let t = db!("versions", txn.open_table(VERSIONS))?;
        if key.len() < 7 {
            return match key.parse::<u64>().ok().map(|id| t.get(id)) {
                Some(got) => db!("versions", got)?.map(|v| parse(v.value())).transpose(),
                None => Ok(None),
            };
        }
        // Newest first, stopping at the first match: a commit compiled twice
        // (after a force-push back to it) resolves to its latest record.
        for entry in db!("versions", t.iter())?.rev() {
            let (_, v) = db!("versions", entry)?;
            let v: Version = parse(v.value())?;
            if v.commit.starts_with(key) || v.ir_hash.as_deref().is_some_and(|h| h.starts_with(key))
            {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// The newest accepted version recorded before version `id` (what a
    /// version's changes are shown against).
    pub fn accepted_before(&self, id: u64) -> Result<Option<Version>, Error> {
        let txn = db!("begin", self.db.begin_read())?;
        let t = db!("versions", txn.open_table(VERSIONS))?;
        newest_accepted(&t, ..id)
    }

    /// Version `id`'s semantic changes, when they were worked out at record
    /// time (versions recorded by an older meshc have none).
    pub fn changes(&self, id: u64) -> Result<Option<Vec<StoredChange>>, Error> {
        let txn = db!("begin", self.db.begin_read())?;
        let t = db!("changes", txn.open_table(CHANGES))?;
        db!("changes", t.get(id))?
            .map(|g| parse(g.value()))
            .transpose()
    }

    /// An encoded IR by hash.
    pub fn ir(&self, hash: &str) -> Result<Option<Vec<u8>>, Error> {
        let txn = db!("begin", self.db.begin_read())?;
        let t = db!("irs", txn.open_table(IRS))?;
        Ok(db!("irs", t.get(hash))?.map(|g| g.value().to_vec()))
    }

    /// The last commit compiled on the branch.
    pub fn head(&self) -> Result<Option<String>, Error> {
        let txn = db!("begin", self.db.begin_read())?;
        let t = db!("meta", txn.open_table(META))?;
        Ok(db!("meta", t.get("head"))?.map(|g| String::from_utf8_lossy(g.value()).into_owned()))
    }

    /// The version to serve: the pinned one, else the newest accepted one.
    pub fn served(&self) -> Result<Option<(Version, Option<Pin>)>, Error> {
        let txn = db!("begin", self.db.begin_read())?;
        let meta = db!("meta", txn.open_table(META))?;
        let versions = db!("versions", txn.open_table(VERSIONS))?;
        served_of(&meta, &versions)
    }

    /// The current pin.
    pub fn pin(&self) -> Result<Option<Pin>, Error> {
        let txn = db!("begin", self.db.begin_read())?;
        let t = db!("meta", txn.open_table(META))?;
        match db!("meta", t.get("pin"))? {
            Some(g) => Ok(Some(parse(g.value())?)),
            None => Ok(None),
        }
    }

    /// Pin version `key` (id, commit or hash; it must be accepted).
    pub fn set_pin(&self, key: &str, by: &str, reason: &str) -> Result<Version, Error> {
        let v = self
            .find(key)?
            .ok_or_else(|| Error(format!("no version `{key}`")))?;
        if v.verdict != Verdict::Accepted {
            return Err(Error(format!(
                "version {} (commit {}) was rejected; only accepted versions can be pinned",
                v.id,
                short(&v.commit)
            )));
        }
        let pin = Pin {
            version: v.id,
            by: by.to_string(),
            reason: reason.to_string(),
            at: now(),
        };
        let txn = db!("begin", self.db.begin_write())?;
        {
            let mut meta = db!("meta", txn.open_table(META))?;
            db!("meta", meta.insert("pin", json(&pin).as_slice()))?;
        }
        event(
            &txn,
            "pin",
            format!(
                "{by} pinned version {} (commit {}): {reason}",
                v.id,
                short(&v.commit)
            ),
        )?;
        db!("commit", txn.commit())?;
        Ok(v)
    }

    /// Remove the pin; false when there was none.
    pub fn unpin(&self, by: &str) -> Result<bool, Error> {
        let txn = db!("begin", self.db.begin_write())?;
        let had = {
            let mut meta = db!("meta", txn.open_table(META))?;
            db!("meta", meta.remove("pin"))?.is_some()
        };
        if had {
            event(&txn, "unpin", format!("{by} unpinned"))?;
        }
        db!("commit", txn.commit())?;
        Ok(had)
    }

    /// Append an audit event.
    pub fn note(&self, kind: &str, detail: String) -> Result<(), Error> {
        let txn = db!("begin", self.db.begin_write())?;
        event(&txn, kind, detail)?;
        db!("commit", txn.commit())
    }

    /// Audit events, newest first, at most `limit`.
    pub fn events(&self, limit: usize) -> Result<Vec<Event>, Error> {
        self.newest(EVENTS, limit)
    }
}

fn served_in(txn: &redb::WriteTransaction) -> Result<Option<(Version, Option<Pin>)>, Error> {
    let meta = db!("meta", txn.open_table(META))?;
    let versions = db!("versions", txn.open_table(VERSIONS))?;
    served_of(&meta, &versions)
}

fn served_of(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    versions: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<Option<(Version, Option<Pin>)>, Error> {
    if let Some(g) = db!("meta", meta.get("pin"))? {
        let pin: Pin = parse(g.value())?;
        if let Some(v) = db!("versions", versions.get(pin.version))? {
            return Ok(Some((parse(v.value())?, Some(pin))));
        }
    }
    Ok(newest_accepted(versions, ..)?.map(|v| (v, None)))
}

/// The newest accepted version with an id in `ids`.
fn newest_accepted(
    versions: &impl ReadableTable<u64, &'static [u8]>,
    ids: impl std::ops::RangeBounds<u64>,
) -> Result<Option<Version>, Error> {
    for entry in db!("versions", versions.range(ids))?.rev() {
        let (_, v) = db!("versions", entry)?;
        let v: Version = parse(v.value())?;
        if v.verdict == Verdict::Accepted {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

fn event(txn: &redb::WriteTransaction, kind: &str, detail: String) -> Result<(), Error> {
    let mut t = db!("events", txn.open_table(EVENTS))?;
    let id = db!("events", t.last())?.map_or(0, |(k, _)| k.value()) + 1;
    let e = Event {
        id,
        at: now(),
        kind: kind.to_string(),
        detail,
    };
    db!("events", t.insert(id, json(&e).as_slice()))?;
    Ok(())
}

fn json(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(v).expect("store records serialise")
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error(format!("store: corrupt record: {e}")))
}

/// The first 12 characters of a commit id.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(commit: &str, verdict: Verdict, hash: Option<&str>) -> Version {
        Version {
            id: 0,
            commit: commit.to_string(),
            branch: "main".into(),
            author: "Ada".into(),
            email: "ada@example.com".into(),
            message: "m".into(),
            committed_at: 0,
            recorded_at: 0,
            verdict,
            reason: None,
            ir_hash: hash.map(str::to_string),
            errors: 0,
            warnings: 0,
            diagnostics: serde_json::Value::Null,
        }
    }

    #[test]
    fn served_is_the_newest_accepted_unless_pinned_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let s = Store::open(&path, 10).unwrap();
            assert!(s.served().unwrap().is_none());
            s.record(
                version("aaaaaaaa1", Verdict::Accepted, Some("h1")),
                Some(b"ir1"),
            )
            .unwrap();
            s.record(
                version("bbbbbbbb2", Verdict::Accepted, Some("h2")),
                Some(b"ir2"),
            )
            .unwrap();
            s.record(version("cccccccc3", Verdict::Rejected, None), None)
                .unwrap();
            assert_eq!(s.served().unwrap().unwrap().0.commit, "bbbbbbbb2");
            assert_eq!(s.head().unwrap().as_deref(), Some("cccccccc3"));
            // A rejected version cannot be pinned.
            assert!(s.set_pin("cccccccc", "ada", "x").is_err());
            s.set_pin("aaaaaaaa", "ada", "bad canary").unwrap();
            let (v, pin) = s.served().unwrap().unwrap();
            assert_eq!(
                (v.commit.as_str(), pin.unwrap().by.as_str()),
                ("aaaaaaaa1", "ada")
            );
        }
        // Reopened: the same answer, without anything recompiled.
        let s = Store::open(&path, 10).unwrap();
        assert_eq!(s.served().unwrap().unwrap().0.commit, "aaaaaaaa1");
        assert_eq!(s.ir("h1").unwrap().as_deref(), Some(&b"ir1"[..]));
        // The next accepted commit ends the pin, and says so.
        s.record(
            version("dddddddd4", Verdict::Accepted, Some("h4")),
            Some(b"ir4"),
        )
        .unwrap();
        let (v, pin) = s.served().unwrap().unwrap();
        assert_eq!(v.commit, "dddddddd4");
        assert!(pin.is_none());
        let kinds: Vec<String> = s.events(10).unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["unpin", "pin"]);
    }

    #[test]
    fn retention_keeps_the_served_version_and_drops_unneeded_irs() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.redb"), 2).unwrap();
        s.record(
            version("aaaaaaaa1", Verdict::Accepted, Some("h1")),
            Some(b"1"),
        )
        .unwrap();
        s.set_pin("1", "ada", "keep").unwrap();
        for c in ["bbbbbbbb2", "cccccccc3"] {
            s.record(version(c, Verdict::Rejected, None), None).unwrap();
        }
        let change = StoredChange {
            kind: "changed".into(),
            text: "reviews.shop: weight 90% -> 40%".into(),
            reaches: vec!["shop/web".into()],
        };
        let v4 = s
            .record_with_changes(
                version("dddddddd4", Verdict::Rejected, None),
                None,
                Some(std::slice::from_ref(&change)),
            )
            .unwrap();
        assert_eq!(v4.id, 4);
        assert_eq!(s.changes(4).unwrap(), Some(vec![change]));
        assert_eq!(s.changes(3).unwrap(), None);
        let ids: Vec<u64> = s.versions(10).unwrap().iter().map(|v| v.id).collect();
        assert_eq!(ids, [4, 1], "the pinned version is kept past the limit");
        assert!(s.ir("h1").unwrap().is_some());
        s.record(
            version("eeeeeeee5", Verdict::Accepted, Some("h5")),
            Some(b"5"),
        )
        .unwrap();
        let ids: Vec<u64> = s.versions(10).unwrap().iter().map(|v| v.id).collect();
        assert_eq!(ids, [5, 4]);
        assert!(s.changes(4).unwrap().is_some(), "kept with its version");
        s.record(version("ffffffff6", Verdict::Rejected, None), None)
            .unwrap();
        assert_eq!(s.changes(4).unwrap(), None, "dropped with its version");
        assert!(
            s.ir("h1").unwrap().is_none(),
            "no version needs h1 any more"
        );
        assert!(s.find("1").unwrap().is_none());
        assert_eq!(s.find("eeeeeee").unwrap().unwrap().id, 5);
        assert!(s.find("4").unwrap().is_none());
        assert_eq!(
            s.find("h5").unwrap(),
            None,
            "hash prefixes need 7 characters"
        );
    }
}
