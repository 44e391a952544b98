//! The control plane's shared state: the store, the snapshot being served,
//! per-proxy sync status, metrics, and the reconcile step that ties Git to
//! the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshc_ir::Ir;
use meshc_ir::resources::{compose, host_digest};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::commit::{self, Policy};
use crate::store::{Pin, Store, Verdict, Version, now, short};
use crate::sync::{Fetched, Mirror};

/// One resource as distributed: name, version and a shared body.
#[derive(Debug)]
pub struct Shared {
    /// `host/...`, `workload/...`, `gateway/...` or `mesh`.
    pub name: String,
    /// SHA-256 of the body.
    pub version: String,
    /// Canonical JSON, reference-counted: one copy for every proxy.
    pub body: prost::bytes::Bytes,
}

impl From<meshc_ir::resources::Resource> for Shared {
    fn from(r: meshc_ir::resources::Resource) -> Shared {
        Shared {
            name: r.name,
            version: r.version,
            body: r.body.into(),
        }
    }
}

/// The endpoints resource of a registry (proxy id to workload and address);
/// `None` when it is empty.
fn endpoints_of(registry: &BTreeMap<String, Registered>) -> Option<Arc<Shared>> {
    if registry.is_empty() {
        return None;
    }
    let mut by_workload: BTreeMap<String, meshc_ir::resources::EndpointSet> = BTreeMap::new();
    for r in registry.values() {
        let set = by_workload.entry(r.workload.clone()).or_default();
        // One workload has one identity (the stream checks it against the
        // policy); the first registration's stands.
        if set.identity.is_empty() {
            set.identity = r.identity.clone();
        }
        set.addresses.push(r.address.clone());
    }
    for set in by_workload.values_mut() {
        set.addresses.sort();
        set.addresses.dedup();
    }
    Some(Arc::new(Shared::from(
        meshc_ir::resources::endpoints_resource(&by_workload),
    )))
}

/// A proxy's registration: its workload (`namespace/name`), inbound
/// `ip:port` and the SPIFFE id of its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// `namespace/name`.
    pub workload: String,
    /// `ip:port` of its inbound listener.
    pub address: String,
    /// The SPIFFE id its certificate proved.
    pub identity: String,
}

/// The hosts some proxies see, with their digest; shared by every proxy with
/// the same namespace and egress.
#[derive(Debug)]
pub struct HostSet {
    /// In name order.
    pub items: Vec<Arc<Shared>>,
    /// [`meshc_ir::resources::host_digest`] of the items.
    pub digest: String,
}

/// One proxy's scope in a snapshot.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Its hosts (shared).
    pub hosts: Arc<HostSet>,
    /// `mesh`, its workload, the gateways it runs; in name order.
    pub others: Vec<Arc<Shared>>,
    /// The scope version.
    pub version: String,
    /// Whether the workload is in the policy.
    pub known: bool,
}

/// What decides the hosts a proxy sees: its namespace and egress patterns.
type Egress = (String, Vec<String>);

/// What is being served: an accepted version, its IR, and the IR cut into
/// resources once for all proxies.
#[derive(Debug)]
pub struct Snapshot {
    /// The version.
    pub version: Version,
    /// The pin that selected it, if any.
    pub pin: Option<Pin>,
    /// Its IR.
    pub ir: Arc<Ir>,
    /// Every resource of the IR, by name.
    pub resources: BTreeMap<String, Arc<Shared>>,
    /// When the control plane started serving it (for convergence time).
    pub published: Instant,
    /// The registered endpoints ([`meshc_ir::resources::ENDPOINTS`]), sent
    /// with every known workload's scope; `None` while no proxy registered.
    pub endpoints: Option<Arc<Shared>>,
    host_sets: Arc<Mutex<HashMap<Egress, Arc<HostSet>>>>,
}

impl Snapshot {
    /// Cut `ir` into resources.
    pub fn new(version: Version, pin: Option<Pin>, ir: Arc<Ir>) -> Snapshot {
        let resources = ir
            .resources()
            .into_values()
            .map(|r| (r.name.clone(), Arc::new(Shared::from(r))))
            .collect();
        Snapshot {
            version,
            pin,
            ir,
            resources,
            published: Instant::now(),
            endpoints: None,
            host_sets: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The same version with other endpoints (sharing everything else).
    pub fn with_endpoints(&self, endpoints: Option<Arc<Shared>>) -> Snapshot {
        Snapshot {
            version: self.version.clone(),
            pin: self.pin.clone(),
            ir: self.ir.clone(),
            resources: self.resources.clone(),
            published: Instant::now(),
            endpoints,
            host_sets: self.host_sets.clone(),
        }
    }

    /// The scope of workload `namespace/name`. An unknown workload gets the
    /// mesh settings only.
    pub fn scope(&self, workload: &str) -> Scope {
        let Some(w) = self.ir.workloads.get(workload) else {
            let hosts = Arc::new(HostSet {
                items: Vec::new(),
                digest: host_digest([]),
            });
            let others: Vec<Arc<Shared>> =
                self.resources.get("mesh").cloned().into_iter().collect();
            let version = compose(
                &hosts.digest,
                others.iter().map(|r| (r.name.as_str(), r.version.as_str())),
            );
            return Scope {
                hosts,
                others,
                version,
                known: false,
            };
        };
        let key = (w.namespace.clone(), w.egress.clone());
        let hosts = {
            let mut sets = self.host_sets.lock().unwrap_or_else(|e| e.into_inner());
            sets.entry(key)
                .or_insert_with(|| {
                    let items: Vec<Arc<Shared>> = self
                        .ir
                        .visible_hosts(w)
                        .filter_map(|h| self.resources.get(&format!("host/{h}")).cloned())
                        .collect();
                    let digest =
                        host_digest(items.iter().map(|r| (r.name.as_str(), r.version.as_str())));
                    Arc::new(HostSet { items, digest })
                })
                .clone()
        };
        let names = self.ir.own_names(workload).unwrap_or_default();
        let mut others: Vec<Arc<Shared>> = names
            .iter()
            .filter_map(|n| self.resources.get(n).cloned())
            .chain(self.endpoints.clone())
            .collect();
        others.sort_by(|a, b| a.name.cmp(&b.name));
        let version = compose(
            &hosts.digest,
            others.iter().map(|r| (r.name.as_str(), r.version.as_str())),
        );
        Scope {
            hosts,
            others,
            version,
            known: true,
        }
    }
}

/// A proxy's sync state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncState {
    /// Runs the desired version.
    Synced,
    /// Sent, not acknowledged yet.
    Stale,
    /// Nothing sent yet (no accepted version, or just connected).
    NotSent,
    /// Refused (NACKed) the desired version; see the message.
    Error,
}

impl SyncState {
    /// As in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Synced => "SYNCED",
            SyncState::Stale => "STALE",
            SyncState::NotSent => "NOT_SENT",
            SyncState::Error => "ERROR",
        }
    }
}

/// One proxy as the control plane sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyStatus {
    /// Proxy id.
    pub id: String,
    /// Workload `namespace/name`.
    pub workload: String,
    /// Service account.
    pub service_account: String,
    /// Identity proven by its certificate (empty without TLS).
    pub identity: String,
    /// Inbound address it registered.
    pub address: String,
    /// Whether its stream is open.
    pub connected: bool,
    /// State.
    pub state: SyncState,
    /// Since when (seconds since the epoch).
    pub since: i64,
    /// Scope version it should run.
    pub desired: Option<String>,
    /// Scope version it acknowledged.
    pub running: Option<String>,
    /// Commit of the desired version.
    pub desired_commit: Option<String>,
    /// Commit of the version it runs.
    pub running_commit: Option<String>,
    /// Last NACK message, or a note (workload not in the policy).
    pub message: Option<String>,
    /// Last ACK or NACK (seconds since the epoch).
    pub last_reply: Option<i64>,
    /// Responses sent to it.
    pub pushes: u64,
    /// When its stream ended, if it is disconnected (seconds since the epoch).
    pub disconnected_at: Option<i64>,
}

/// Disconnected proxies are forgotten this long after their stream ended
/// (a proxy that comes back registers again), so the status map does not
/// grow with every pod that ever ran.
pub const FORGET_AFTER_SECONDS: i64 = 600;

impl ProxyStatus {
    /// Whether desired and running differ.
    pub fn drifted(&self) -> bool {
        self.desired.is_some() && self.desired != self.running
    }
}

/// Prometheus metrics of the control plane.
pub struct Metrics {
    registry: Registry,
    versions: Family<Vec<(String, String)>, Counter>,
    /// Responses pushed to proxies.
    pub pushes: Counter,
    /// NACKs received.
    pub nacks: Counter,
    /// Certificates issued.
    pub certificates: Counter,
    /// Seconds from sending a response to its ACK.
    pub push_latency: Histogram,
    /// Seconds from serving a version to a proxy's ACK of it.
    pub convergence: Histogram,
    proxies: Family<Vec<(String, String)>, Gauge>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("meshc");
        let versions = Family::<Vec<(String, String)>, Counter>::default();
        let pushes = Counter::default();
        let nacks = Counter::default();
        let certificates = Counter::default();
        let push_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let convergence = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let proxies = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register("versions", "Commits compiled, by verdict", versions.clone());
        registry.register("pushes", "Responses pushed to proxies", pushes.clone());
        registry.register("nacks", "Responses refused by proxies", nacks.clone());
        registry.register(
            "certificates_issued",
            "Workload certificates issued",
            certificates.clone(),
        );
        registry.register(
            "push_latency_seconds",
            "Time from sending a response to its acknowledgement",
            push_latency.clone(),
        );
        registry.register(
            "convergence_seconds",
            "Time from serving a version to a proxy acknowledging it",
            convergence.clone(),
        );
        registry.register(
            "proxies",
            "Connected proxies by sync state",
            proxies.clone(),
        );
        Metrics {
            registry,
            versions,
            pushes,
            nacks,
            certificates,
            push_latency,
            convergence,
            proxies,
        }
    }

    fn count_version(&self, verdict: Verdict) {
        let v = match verdict {
            Verdict::Accepted => "accepted",
            Verdict::Rejected => "rejected",
        };
        self.versions
            .get_or_create(&vec![("verdict".to_string(), v.to_string())])
            .inc();
    }
}

/// Shared control-plane state.
pub struct Control {
    /// The store.
    pub store: Store,
    desired: watch::Sender<Option<Arc<Snapshot>>>,
    proxies: Mutex<BTreeMap<String, ProxyStatus>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Wakes the reconcile loop (webhook, `POST /api/v1/sync`).
    pub sync_now: Notify,
    /// Trust domain of issued identities.
    pub trust_domain: String,
    /// Registered endpoints: proxy id to its registration.
    registry: Mutex<BTreeMap<String, Registered>>,
}

/// A control-plane error.
pub type Error = anyhow::Error;

impl Control {
    /// State over `store`; serves what the store says (no recompiling).
    pub fn new(store: Store, trust_domain: String) -> Result<Arc<Control>, Error> {
        let (desired, _) = watch::channel(None);
        let control = Arc::new(Control {
            store,
            desired,
            proxies: Mutex::new(BTreeMap::new()),
            metrics: Metrics::new(),
            sync_now: Notify::new(),
            trust_domain,
            registry: Mutex::new(BTreeMap::new()),
        });
        control.refresh()?;
        Ok(control)
    }

    /// The snapshot being served now (before debouncing).
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.desired.borrow().clone()
    }

    /// Follow the served snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.desired.subscribe()
    }

    /// Serve what the store says should be served. True when that changed.
    pub fn refresh(&self) -> Result<bool, Error> {
        self.refresh_with(None)
    }

    /// [`Control::refresh`], with an IR at hand (just compiled and recorded)
    /// used instead of decoding the stored copy when it is the one to serve.
    pub fn refresh_with(&self, fresh: Option<(u64, Arc<Ir>)>) -> Result<bool, Error> {
        let Some((version, pin)) = self.store.served()? else {
            return Ok(false);
        };
        if let Some(cur) = self.current()
            && cur.version.id == version.id
            && cur.pin == pin
        {
            return Ok(false);
        }
        let hash = version
            .ir_hash
            .clone()
            .ok_or_else(|| anyhow::anyhow!("accepted version {} has no IR", version.id))?;
        let ir = match fresh {
            Some((id, ir)) if id == version.id => ir,
            _ => {
                let bytes = self.store.ir(&hash)?.ok_or_else(|| {
                    anyhow::anyhow!("IR {hash} of version {} is missing", version.id)
                })?;
                Arc::new(Ir::decode(&bytes).map_err(|e| anyhow::anyhow!("IR {hash}: {e}"))?)
            }
        };
        tracing::info!(
            version = version.id,
            commit = short(&version.commit),
            pinned = pin.is_some(),
            "serving"
        );
        let snapshot = Snapshot::new(version, pin, ir);
        // Under the registry's lock: a registration between reading the
        // endpoints and publishing would otherwise be lost.
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = snapshot.with_endpoints(endpoints_of(&registry));
        self.desired.send_replace(Some(Arc::new(snapshot)));
        Ok(true)
    }

    /// Register (`Some(registration)`) or forget (`None`) the inbound
    /// address of proxy `id`; every scope then carries the new endpoints.
    /// Only the policy's own workloads register (the server checks the
    /// proxy's certificate first), so their labels come from the policy.
    pub fn set_endpoint(&self, id: &str, endpoint: Option<Registered>) {
        // The lock is held until the snapshot is published, so concurrent
        // registrations are published in order and none is lost.
        let mut registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match endpoint {
            Some(e) => registry.insert(id.to_string(), e.clone()) != Some(e),
            None => registry.remove(id).is_some(),
        };
        if !changed {
            return;
        }
        let endpoints = endpoints_of(&registry);
        self.desired.send_modify(|s| {
            if let Some(cur) = s {
                *s = Some(Arc::new(cur.with_endpoints(endpoints)));
            }
        });
    }

    /// Pin a version (rollback) and serve it.
    pub fn rollback(&self, key: &str, by: &str, reason: &str) -> Result<Version, Error> {
        let v = self.store.set_pin(key, by, reason)?;
        tracing::warn!(version = v.id, by, reason, "rollback: version pinned");
        self.refresh()?;
        Ok(v)
    }

    /// Remove the pin and serve the newest accepted version.
    pub fn unpin(&self, by: &str) -> Result<bool, Error> {
        let had = self.store.unpin(by)?;
        if had {
            tracing::warn!(by, "unpinned");
        }
        self.refresh()?;
        Ok(had)
    }

    /// Change one proxy's status (creating it).
    pub fn update_proxy(&self, id: &str, f: impl FnOnce(&mut ProxyStatus)) {
        let mut proxies = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
        let entry = proxies
            .entry(id.to_string())
            .or_insert_with(|| ProxyStatus {
                id: id.to_string(),
                workload: String::new(),
                service_account: String::new(),
                identity: String::new(),
                address: String::new(),
                connected: false,
                state: SyncState::NotSent,
                since: now(),
                desired: None,
                running: None,
                desired_commit: None,
                running_commit: None,
                message: None,
                last_reply: None,
                pushes: 0,
                disconnected_at: None,
            });
        let (before, was_connected) = (entry.state, entry.connected);
        f(entry);
        if entry.state != before {
            entry.since = now();
        }
        match (was_connected, entry.connected) {
            (true, false) => {
                entry.disconnected_at = Some(now());
                // A disconnection is rare: the moment to forget old ones.
                let cutoff = now() - FORGET_AFTER_SECONDS;
                proxies.retain(|_, p| p.connected || p.disconnected_at.is_none_or(|t| t > cutoff));
            }
            (_, true) => entry.disconnected_at = None,
            _ => {}
        }
    }

    /// Every proxy known: connected ones, and disconnected ones for
    /// [`FORGET_AFTER_SECONDS`].
    pub fn proxies(&self) -> Vec<ProxyStatus> {
        let proxies = self.proxies.lock().unwrap_or_else(|e| e.into_inner());
        proxies.values().cloned().collect()
    }

    /// Prometheus text exposition.
    pub fn metrics_text(&self) -> String {
        let mut counts: BTreeMap<&str, i64> = [
            SyncState::Synced,
            SyncState::Stale,
            SyncState::NotSent,
            SyncState::Error,
        ]
        .into_iter()
        .map(|s| (s.as_str(), 0))
        .collect();
        for p in self.proxies().iter().filter(|p| p.connected) {
            *counts.entry(p.state.as_str()).or_default() += 1;
        }
        for (state, n) in counts {
            self.metrics
                .proxies
                .get_or_create(&vec![("state".to_string(), state.to_string())])
                .set(n);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.metrics.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The Git side of the control plane: fetch, compile new commits, record.
pub struct Reconciler {
    mirror: Mirror,
    control: Arc<Control>,
    policy: Policy,
    /// Commits compiled per fetch at most (the newest ones).
    pub cap: usize,
    missing_noted: bool,
    /// The incremental compiler, kept across commits: a commit that changes
    /// one file reloads one file and lowers only what it reaches.
    session: Option<meshc_compiler::incremental::Session>,
    /// The last accepted version recorded and its IR: what the next accepted
    /// one's semantic changes are worked out against.
    last_accepted: Option<(u64, Arc<Ir>)>,
}

/// What one reconcile step did.
#[derive(Debug, Default)]
pub struct Step {
    /// Versions recorded, oldest first.
    pub recorded: Vec<Version>,
    /// Whether history was rewritten.
    pub force_push: bool,
    /// Whether the branch is gone.
    pub missing: bool,
    /// Whether the served version changed.
    pub changed: bool,
}

impl Reconciler {
    /// A reconciler for `mirror` feeding `control`.
    pub fn new(mirror: Mirror, control: Arc<Control>, policy: Policy) -> Reconciler {
        Reconciler {
            mirror,
            control,
            policy,
            cap: 50,
            missing_noted: false,
            session: None,
            last_accepted: None,
        }
    }

    /// Fetch and compile what is new. Blocking (Git and the compiler).
    pub fn step(&mut self) -> Result<Step, Error> {
        let source = self.mirror.source().clone();
        let mut step = Step::default();
        let new = match self.mirror.fetch() {
            Ok(Fetched::Head(oid)) => {
                self.missing_noted = false;
                oid
            }
            Ok(Fetched::Missing) => {
                step.missing = true;
                if !self.missing_noted {
                    self.missing_noted = true;
                    let detail = format!(
                        "branch `{}` is missing on {}; still serving the last accepted version",
                        source.branch,
                        source.shown_url()
                    );
                    tracing::warn!("{detail}");
                    self.control.store.note("branch-deleted", detail)?;
                }
                return Ok(step);
            }
            Err(e) => return Err(e.into()),
        };
        let old = self
            .control
            .store
            .head()?
            .and_then(|h| git2::Oid::from_str(&h).ok());
        let commits = match old {
            None => vec![new],
            Some(old) => match self.mirror.between(old, new, self.cap)? {
                Some(c) => c,
                None => {
                    step.force_push = true;
                    let detail = format!(
                        "branch `{}` was rewritten: {} is not an ancestor of {}; following {}",
                        source.branch,
                        short(&old.to_string()),
                        short(&new.to_string()),
                        short(&new.to_string())
                    );
                    tracing::warn!("{detail}");
                    self.control.store.note("force-push", detail)?;
                    vec![new]
                }
            },
        };
        let mut fresh = None;
        for oid in commits {
            let started = Instant::now();
            let built = commit::build(
                self.mirror.repo(),
                oid,
                &source.branch,
                &source.subpath,
                self.policy,
                &mut self.session,
            );
            let bytes = built.encoded;
            let changes = built.ir.as_deref().and_then(|ir| self.changes_to(ir));
            let v = self.control.store.record_with_changes(
                built.version,
                bytes.as_deref(),
                changes.as_deref(),
            )?;
            // One IR, shared by the compile session, the served snapshot
            // and the next diff.
            let ir = built.ir;
            if let Some(ir) = &ir {
                self.last_accepted = Some((v.id, ir.clone()));
            }
            fresh = ir.map(|ir| (v.id, ir));
            self.control.metrics.count_version(v.verdict);
            match v.verdict {
                Verdict::Accepted => tracing::info!(
                    version = v.id,
                    commit = short(&v.commit),
                    warnings = v.warnings,
                    ms = started.elapsed().as_millis() as u64,
                    "accepted"
                ),
                Verdict::Rejected => tracing::warn!(
                    version = v.id,
                    commit = short(&v.commit),
                    reason = v.reason.as_deref().unwrap_or(""),
                    "rejected; the last accepted version stays in force"
                ),
            }
            step.recorded.push(v);
        }
        step.changed = self.control.refresh_with(fresh)?;
        Ok(step)
    }
}

impl Reconciler {
    /// The semantic changes from the newest accepted version recorded so far
    /// to `ir` (the next one), kept with it so that pages and the API need
    /// not decode two IRs to show them. The previous IR is the one kept from
    /// the last accepted commit, or, after a restart, read from the store.
    /// `None` for the first accepted version, or when the previous IR cannot
    /// be read (the page then works the changes out itself).
    fn changes_to(&self, ir: &Ir) -> Option<Vec<crate::store::StoredChange>> {
        let store = &self.control.store;
        let previous = store.accepted_before(u64::MAX).ok().flatten()?;
        let decoded;
        let before = match &self.last_accepted {
            Some((last, kept)) if *last == previous.id => kept,
            _ => {
                decoded = previous
                    .ir_hash
                    .as_deref()
                    .and_then(|h| store.ir(h).ok().flatten())
                    .and_then(|b| Ir::decode(&b).ok())?;
                &decoded
            }
        };
        Some(crate::store::StoredChange::between(before, ir))
    }
}

/// Forward `input` to the returned receiver after a quiet period with no
/// further change, or at the latest `max` after the first change.
pub fn debounce<T: Clone + Send + Sync + 'static>(
    mut input: watch::Receiver<T>,
    quiet: Duration,
    max: Duration,
) -> watch::Receiver<T> {
    let (tx, rx) = watch::channel(input.borrow_and_update().clone());
    tokio::spawn(async move {
        while input.changed().await.is_ok() {
            let deadline = tokio::time::Instant::now() + max;
            loop {
                let wake = (tokio::time::Instant::now() + quiet).min(deadline);
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => break,
                    r = input.changed() => {
                        if r.is_err() || tokio::time::Instant::now() >= deadline {
                            break;
                        }
                    }
                }
            }
            let value = input.borrow_and_update().clone();
            if tx.send(value).is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnected_proxies_are_forgotten_after_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb"), 10).unwrap();
        let control = Control::new(store, "cluster.local".into()).unwrap();
        for id in ["a", "b", "c"] {
            control.update_proxy(id, |p| p.connected = true);
        }
        control.update_proxy("a", |p| p.connected = false);
        assert!(
            control.proxies().iter().any(|p| p.id == "a"),
            "kept for a while"
        );
        // `a` ended long ago; the next disconnection forgets it.
        control.update_proxy("a", |p| {
            p.disconnected_at = Some(now() - FORGET_AFTER_SECONDS - 1);
        });
        control.update_proxy("b", |p| p.connected = false);
        let ids: Vec<String> = control.proxies().into_iter().map(|p| p.id).collect();
        assert_eq!(ids, ["b", "c"]);
        assert!(control.proxies()[0].disconnected_at.is_some());
        // A proxy that comes back is connected again, with no end time.
        control.update_proxy("b", |p| p.connected = true);
        assert!(
            control
                .proxies()
                .iter()
                .all(|p| p.connected && p.disconnected_at.is_none())
        );
    }
}
