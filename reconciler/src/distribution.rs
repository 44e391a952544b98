//! The distribution server: one bidirectional stream per proxy (see
//! `ir/proto/meshc/distribution/v1/distribution.proto`), and certificate
//! issuance.
//!
//! Per stream, one response is in flight at a time (as in xDS): the server
//! sends what changed in the proxy's scope, waits for the ACK or NACK, then
//! sends again if the desired scope moved meanwhile. A NACKed version is not
//! re-sent until the desired scope changes; the proxy keeps what it had.

use std::collections::{BTreeMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use meshc_ir::proto::distribution_server::Distribution;
use meshc_ir::proto::{
    CertificateRequest, CertificateResponse, DiscoveryRequest, DiscoveryResponse, Node, Resource,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::ca::{Ca, spiffe_ids};
use crate::control::{Control, Scope, Shared, Snapshot, SyncState};
use crate::store::now;

/// The gRPC service.
pub struct Server {
    control: Arc<Control>,
    pushed: watch::Receiver<Option<Arc<Snapshot>>>,
    ca: Arc<Ca>,
    bootstrap_token: String,
    /// Demand a client certificate on `Stream` (off only for plaintext tests).
    require_identity: bool,
    nonces: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
    live: Arc<AtomicUsize>,
    budget: Arc<Semaphore>,
}

/// Counts a live session; the count drops when the session ends.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn new(count: &Arc<AtomicUsize>) -> Live {
        count.fetch_add(1, Ordering::SeqCst);
        Live(count.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Server {
    /// A server pushing the snapshots of `pushed` (the debounced feed).
    pub fn new(
        control: Arc<Control>,
        pushed: watch::Receiver<Option<Arc<Snapshot>>>,
        ca: Arc<Ca>,
        bootstrap_token: String,
        require_identity: bool,
        stop: watch::Receiver<bool>,
    ) -> Server {
        Server {
            control,
            pushed,
            ca,
            bootstrap_token,
            require_identity,
            nonces: Arc::new(AtomicU64::new(0)),
            stop,
            live: Arc::new(AtomicUsize::new(0)),
            budget: Arc::new(Semaphore::new(PUSH_BUDGET_KB as usize)),
        }
    }

    /// The number of open streams (shared counter).
    pub fn live_sessions(&self) -> Arc<AtomicUsize> {
        self.live.clone()
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Distribution for Server {
    type StreamStream = ResponseStream;

    async fn stream(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let ids: Vec<String> = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| spiffe_ids(c.as_ref())))
            .unwrap_or_default();
        let peer = request
            .remote_addr()
            .map_or_else(String::new, |a| a.to_string());
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the stream ended before the first request"))?;
        let node = first
            .node
            .clone()
            .ok_or_else(|| Status::invalid_argument("the first request must carry the node"))?;
        if node.namespace.is_empty() || node.workload.is_empty() {
            return Err(Status::invalid_argument(
                "node.namespace and node.workload are required",
            ));
        }
        let claimed = self.ca.spiffe_id(&node.namespace, &node.service_account);
        let identity = if self.require_identity {
            match ids.as_slice() {
                [] => {
                    return Err(Status::unauthenticated(
                        "a client certificate issued by IssueCertificate is required",
                    ));
                }
                [id] if *id == claimed => id.clone(),
                _ => {
                    return Err(Status::permission_denied(format!(
                        "the certificate's identity {ids:?} is not {claimed}, which node {}/{} claims",
                        node.namespace, node.workload
                    )));
                }
            }
        } else {
            String::new()
        };
        let id = if node.id.is_empty() {
            format!("{}/{}@{peer}", node.namespace, node.workload)
        } else {
            node.id.clone()
        };
        let (tx, rx) = mpsc::channel(2);
        let session = Session {
            control: self.control.clone(),
            pushed: self.pushed.clone(),
            nonces: self.nonces.clone(),
            workload: format!("{}/{}", node.namespace, node.workload),
            identity,
            id,
            held: if first.running.is_empty() {
                Held::Nothing
            } else {
                Held::Listed(
                    first
                        .running
                        .iter()
                        .map(|r| (r.name.clone(), r.version.clone()))
                        .collect(),
                )
            },
            running: (!first.version.is_empty()).then(|| first.version.clone()),
            inflight: None,
            refused: None,
            tx,
            stop: self.stop.clone(),
            _live: Live::new(&self.live),
            budget: self.budget.clone(),
            address: node.address.clone(),
            registered: false,
        };
        session.register(&node);
        tokio::spawn(session.run(inbound));
        let out: ResponseStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        Ok(Response::new(out))
    }

    async fn issue_certificate(
        &self,
        request: Request<CertificateRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        // A renewal: the client certificate (chained to the mesh CA, checked
        // by the TLS layer) already proves this identity, so the bootstrap
        // token, which operators rotate after the first issue, is not needed.
        let presented: Vec<String> = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| spiffe_ids(c.as_ref())))
            .unwrap_or_default();
        let r = request.into_inner();
        let claimed = self.ca.spiffe_id(&r.namespace, &r.service_account);
        let renewal = presented.as_slice() == [claimed.clone()];
        if !renewal && !constant_time_eq(r.token.as_bytes(), self.bootstrap_token.as_bytes()) {
            tracing::warn!(
                namespace = r.namespace,
                sa = r.service_account,
                presented = ?presented,
                "bad bootstrap token"
            );
            let message = if presented.is_empty() {
                "bad bootstrap token".to_string()
            } else {
                format!(
                    "bad bootstrap token, and the client certificate ({}) is not {claimed}",
                    presented.join(", ")
                )
            };
            return Err(Status::unauthenticated(message));
        }
        let issued = self
            .ca
            .issue(&r.csr_pem, &r.namespace, &r.service_account)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.control.metrics.certificates.inc();
        tracing::info!(
            namespace = r.namespace,
            sa = r.service_account,
            renewal,
            "certificate issued"
        );
        Ok(Response::new(CertificateResponse {
            certificate_pem: issued.certificate_pem,
            ca_pem: self.ca.pem().to_string(),
            not_after: issued.not_after,
        }))
    }
}

/// Compare secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

struct Inflight {
    nonce: String,
    version: String,
    commit: String,
    after: Scope,
    sent: Instant,
    published: Instant,
    /// Its share of the push budget, returned on ACK, NACK or disconnect.
    _budget: OwnedSemaphorePermit,
}

/// How many kilobytes of resource bodies may be in flight (sent, not yet
/// acknowledged) across all proxies. A response is encoded whole and then
/// waits for HTTP/2 flow control, so a thousand proxies syncing from scratch
/// at once would each hold a copy; the budget bounds that memory and lets
/// them take turns. Small updates never wait behind it for long.
pub const PUSH_BUDGET_KB: u32 = 32 * 1024;

/// The size of one response part. tonic keeps a stream's encoding buffer at
/// the size of the largest message it sent (about twice the part), so parts
/// keep a thousand idle streams from holding megabytes each. Measured with
/// `cargo bench --bench converge` at 1,000 proxies, back to back: 32 KiB
/// parts 262 MB steady, 16 KiB 251 MB, 8 KiB 229 MB, with the same push
/// latency; the initial sync of a thousand full scopes takes longer (5.4,
/// 5.6 and 8.0 s), which matters less than the resident memory.
pub const PART_BYTES: usize = 8 * 1024;

/// What a proxy holds, as far as the server knows.
enum Held {
    /// Nothing.
    Nothing,
    /// What it listed when it connected.
    Listed(BTreeMap<String, String>),
    /// A scope it acknowledged.
    Known(Scope),
}

impl Held {
    /// The resources of `want` the proxy lacks, and the names it holds that
    /// `want` has not.
    fn diff(&self, want: &Scope) -> (Vec<Arc<Shared>>, Vec<String>) {
        let wanted = || want.hosts.items.iter().chain(&want.others);
        match self {
            Held::Nothing => (wanted().cloned().collect(), Vec::new()),
            Held::Listed(map) => {
                let changed = wanted()
                    .filter(|r| map.get(&r.name) != Some(&r.version))
                    .cloned()
                    .collect();
                let names: HashSet<&str> = wanted().map(|r| r.name.as_str()).collect();
                let removed = map
                    .keys()
                    .filter(|k| !names.contains(k.as_str()))
                    .cloned()
                    .collect();
                (changed, removed)
            }
            Held::Known(have) => {
                let (mut changed, mut removed) = merge_diff(&have.hosts.items, &want.hosts.items);
                let (c, r) = merge_diff(&have.others, &want.others);
                changed.extend(c);
                removed.extend(r);
                (changed, removed)
            }
        }
    }
}

/// Diff two name-ordered lists: (in `new` and changed or absent from `old`,
/// names in `old` absent from `new`).
fn merge_diff(old: &[Arc<Shared>], new: &[Arc<Shared>]) -> (Vec<Arc<Shared>>, Vec<String>) {
    if std::ptr::eq(old, new) {
        return (Vec::new(), Vec::new());
    }
    let (mut changed, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) => match o.name.cmp(&n.name) {
                std::cmp::Ordering::Equal => {
                    if !Arc::ptr_eq(o, n) && o.version != n.version {
                        changed.push(n.clone());
                    }
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => {
                    removed.push(o.name.clone());
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    changed.push(n.clone());
                    j += 1;
                }
            },
            (Some(o), None) => {
                removed.push(o.name.clone());
                i += 1;
            }
            (None, Some(n)) => {
                changed.push(n.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    (changed, removed)
}

struct Session {
    control: Arc<Control>,
    pushed: watch::Receiver<Option<Arc<Snapshot>>>,
    nonces: Arc<AtomicU64>,
    workload: String,
    identity: String,
    id: String,
    /// What the proxy holds.
    held: Held,
    /// The scope version it runs.
    running: Option<String>,
    inflight: Option<Inflight>,
    /// A version it refused; not sent again until the desired one changes.
    refused: Option<String>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    /// Server shutdown: end the stream so the server can stop.
    stop: watch::Receiver<bool>,
    _live: Live,
    budget: Arc<Semaphore>,
    /// The inbound address the proxy announced (endpoint registration).
    address: String,
    /// Whether its address is registered (after its identity was checked
    /// against the policy), so that it is forgotten when the stream ends.
    registered: bool,
}

impl Session {
    fn register(&self, node: &Node) {
        let (workload, identity) = (self.workload.clone(), self.identity.clone());
        let running = self.running.clone();
        self.control.update_proxy(&self.id, |p| {
            p.workload = workload;
            p.service_account = node.service_account.clone();
            p.identity = identity;
            p.address = node.address.clone();
            p.connected = true;
            p.state = SyncState::NotSent;
            p.running = running;
            p.message = None;
        });
        tracing::info!(proxy = self.id, workload = self.workload, "proxy connected");
    }

    async fn run(mut self, mut inbound: Streaming<DiscoveryRequest>) {
        loop {
            if self.inflight.is_none() {
                let snap = self.pushed.borrow().clone();
                if let Some(snap) = snap
                    && self.push(&snap).await.is_err()
                {
                    break;
                }
            }
            enum Event {
                Changed,
                Reply(Box<DiscoveryRequest>),
                End,
                Stop,
            }
            let event = tokio::select! {
                changed = self.pushed.changed() => {
                    if changed.is_err() { Event::End } else { Event::Changed }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => Event::Reply(Box::new(req)),
                    Ok(None) | Err(_) => Event::End,
                },
                _ = self.stop.wait_for(|s| *s) => Event::Stop,
            };
            match event {
                // Seen; the loop's top pushes the newest value once nothing
                // is in flight.
                Event::Changed => {
                    self.pushed.borrow_and_update();
                }
                Event::Reply(req) => self.reply(*req),
                Event::End => break,
                Event::Stop => {
                    let _ = self
                        .tx
                        .send(Err(Status::unavailable(
                            "the control plane is shutting down",
                        )))
                        .await;
                    break;
                }
            }
        }
        if self.registered {
            self.control.set_endpoint(&self.id, None);
        }
        self.control.update_proxy(&self.id, |p| p.connected = false);
        tracing::info!(proxy = self.id, "proxy disconnected");
    }

    /// Send what changed in the scope, if anything.
    async fn push(&mut self, snap: &Snapshot) -> Result<(), ()> {
        // The certificate proves a namespace and service account; the
        // workload's scope goes only to the identity the policy gives it.
        if !self.identity.is_empty()
            && let Some(w) = snap.ir.workloads.get(&self.workload)
            && w.identity != self.identity
        {
            let message = format!(
                "workload {} runs as {}; this proxy's certificate is {}",
                self.workload, w.identity, self.identity
            );
            tracing::warn!(proxy = self.id, "{message}");
            self.control.update_proxy(&self.id, |p| {
                p.state = SyncState::Error;
                p.message = Some(message.clone());
            });
            let _ = self.tx.send(Err(Status::permission_denied(message))).await;
            return Err(());
        }
        let scope = snap.scope(&self.workload);
        if !self.registered && scope.known && !self.address.is_empty() {
            if self.address.parse::<std::net::SocketAddr>().is_ok() {
                self.registered = true;
                self.control.set_endpoint(
                    &self.id,
                    Some(crate::control::Registered {
                        workload: self.workload.clone(),
                        address: self.address.clone(),
                        identity: self.identity.clone(),
                    }),
                );
            } else {
                tracing::warn!(
                    proxy = self.id,
                    address = self.address,
                    "not an ip:port; not registered"
                );
            }
        }
        let note = (!scope.known).then(|| {
            format!(
                "workload {} is not in the policy; it gets mesh settings only",
                self.workload
            )
        });
        let version = scope.version.clone();
        let commit = snap.version.commit.clone();
        let synced = self.running.as_deref() == Some(version.as_str());
        let refused = self.refused.as_deref() == Some(version.as_str());
        self.control.update_proxy(&self.id, |p| {
            p.desired = Some(version.clone());
            p.desired_commit = Some(commit.clone());
            if synced {
                p.state = SyncState::Synced;
                p.running_commit = Some(commit.clone());
            }
            if note.is_some() {
                p.message = note;
            }
        });
        if synced {
            // Same bytes as what it runs: remember them in the shared form.
            self.held = Held::Known(scope);
            return Ok(());
        }
        if refused {
            return Ok(());
        }
        let (changed, removed) = self.held.diff(&scope);
        // Wait for a share of the budget before making the responses: a
        // thousand proxies waiting here each holding a response's resource
        // names and versions cost more memory than the budget saves.
        let bytes: usize = changed.iter().map(|r| r.body.len() + 200).sum();
        let kb = u32::try_from(bytes / 1024 + 1)
            .unwrap_or(u32::MAX)
            .min(PUSH_BUDGET_KB);
        let budget = self
            .budget
            .clone()
            .acquire_many_owned(kb)
            .await
            .map_err(|_| ())?;
        let nonce = self.nonces.fetch_add(1, Ordering::Relaxed).to_string();
        // Cut into parts of about PART_BYTES; the last part carries `removed`.
        let mut parts: Vec<Vec<Resource>> = vec![Vec::new()];
        let mut size = 0;
        for r in &changed {
            if size > 0 && size + r.body.len() > PART_BYTES {
                parts.push(Vec::new());
                size = 0;
            }
            size += r.body.len() + r.name.len() + r.version.len();
            parts.last_mut().expect("never empty").push(Resource {
                name: r.name.clone(),
                version: r.version.clone(),
                body: r.body.clone(),
            });
        }
        let last = parts.len() - 1;
        let mut removed = Some(removed);
        let responses: Vec<DiscoveryResponse> = parts
            .into_iter()
            .enumerate()
            .map(|(i, resources)| DiscoveryResponse {
                version: version.clone(),
                nonce: nonce.clone(),
                source: commit.clone(),
                resources,
                removed: if i == last {
                    removed.take().unwrap_or_default()
                } else {
                    Vec::new()
                },
                more: i != last,
            })
            .collect();
        let after = scope;
        self.inflight = Some(Inflight {
            nonce,
            version,
            commit,
            after,
            sent: Instant::now(),
            published: snap.published,
            _budget: budget,
        });
        self.control.metrics.pushes.inc();
        self.control.update_proxy(&self.id, |p| {
            p.state = SyncState::Stale;
            p.pushes += 1;
        });
        for response in responses {
            self.tx.send(Ok(response)).await.map_err(|_| ())?;
        }
        Ok(())
    }

    /// An ACK or NACK.
    fn reply(&mut self, req: DiscoveryRequest) {
        let Some(inflight) = self.inflight.take_if(|f| f.nonce == req.response_nonce) else {
            return; // stale nonce, or a keepalive
        };
        match req.error {
            None => {
                self.control
                    .metrics
                    .push_latency
                    .observe(inflight.sent.elapsed().as_secs_f64());
                self.control
                    .metrics
                    .convergence
                    .observe(inflight.published.elapsed().as_secs_f64());
                self.held = Held::Known(inflight.after);
                self.running = Some(inflight.version.clone());
                self.refused = None;
                self.control.update_proxy(&self.id, |p| {
                    p.running = Some(inflight.version.clone());
                    p.running_commit = Some(inflight.commit.clone());
                    p.state = if p.desired.as_deref() == Some(inflight.version.as_str()) {
                        SyncState::Synced
                    } else {
                        SyncState::Stale
                    };
                    p.message = None;
                    p.last_reply = Some(now());
                });
            }
            Some(e) => {
                self.control.metrics.nacks.inc();
                tracing::warn!(
                    proxy = self.id,
                    version = inflight.version,
                    error = e.message,
                    "NACK"
                );
                self.refused = Some(inflight.version);
                self.control.update_proxy(&self.id, |p| {
                    p.state = SyncState::Error;
                    p.message = Some(e.message.clone());
                    p.last_reply = Some(now());
                });
            }
        }
    }
}
