//! Upstream clusters: one per destination host, subset and port, holding its
//! endpoints' load-balancing and outlier state and its connection-pool limits.
//!
//! State outlives config swaps: a cluster is replaced only when its traffic
//! policy changes, and its endpoints keep their counters across endpoint
//! updates.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use meshc_ir::{LoadBalancer, OutlierDetection, PortPolicy};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Which upstream a cluster is.
#[derive(Debug, Clone, Copy)]
pub struct ClusterKey<'a> {
    /// Fully qualified host.
    pub host: &'a str,
    /// Subset.
    pub subset: Option<&'a str>,
    /// Port.
    pub port: Option<u16>,
}

/// One endpoint: an address of a workload behind the host.
#[derive(Debug)]
pub struct Endpoint {
    /// Where its inbound listener is.
    pub addr: SocketAddr,
    /// Its workload (`namespace/name`).
    pub workload: String,
    /// The SPIFFE id its peer must present, when the workload registered one.
    pub identity: Option<String>,
    /// The authority of plaintext requests to it (its address), made once,
    /// not per request.
    pub plain_authority: http::uri::Authority,
    /// The authority of mTLS requests to it, the expected identity included
    /// (made once: [`crate::http::upstream_authority`]).
    pub mesh_authority: http::uri::Authority,
    active: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    ejections: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
    latency: Mutex<PeakEwma>,
}

/// Linkerd's peak-EWMA latency estimate: a slower response replaces the
/// estimate at once (peak), a faster one moves it by the exponential weight
/// of the time since the last update, and the estimate decays with time
/// while nothing is observed, so an endpoint that was slow gets tried again.
#[derive(Debug, Clone, Copy)]
struct PeakEwma {
    /// Nanoseconds.
    estimate: f64,
    at: Instant,
}

/// The decay time of [`PeakEwma`] (Linkerd's default).
const EWMA_DECAY: Duration = Duration::from_secs(10);
/// The estimate of an endpoint with no response yet.
const EWMA_DEFAULT: Duration = Duration::from_millis(1);

impl PeakEwma {
    fn weight(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (-elapsed / EWMA_DECAY.as_secs_f64()).exp()
    }
    fn observe(&mut self, latency: Duration, now: Instant) {
        let l = latency.as_nanos() as f64;
        self.estimate = if l > self.estimate {
            l
        } else {
            let w = self.weight(now);
            self.estimate * w + l * (1.0 - w)
        };
        self.at = now;
    }
    fn at(&self, now: Instant) -> f64 {
        self.estimate * self.weight(now)
    }
}

/// An address, or an identity (hex) and an address, as an authority.
fn authority(text: String) -> http::uri::Authority {
    // Both are made of hex digits, dots, colons, brackets and `@`.
    http::uri::Authority::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or_else(|_| http::uri::Authority::from_static("invalid"))
}

impl Endpoint {
    fn new(workload: String, addr: SocketAddr, identity: Option<String>) -> Endpoint {
        Endpoint {
            plain_authority: authority(addr.to_string()),
            mesh_authority: authority(crate::http::upstream_authority(addr, identity.as_deref())),
            addr,
            workload,
            identity,
            active: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
            latency: Mutex::new(PeakEwma {
                estimate: EWMA_DEFAULT.as_nanos() as f64,
                at: Instant::now(),
            }),
        }
    }

    /// Record how long a response took to start (the least-request cost).
    pub fn observe(&self, latency: Duration, now: Instant) {
        self.latency
            .lock()
            .expect("not poisoned")
            .observe(latency, now);
    }

    /// What sending it one more request costs: the latency estimate times
    /// the requests that would then be in flight (Linkerd's peak EWMA).
    fn cost(&self, now: Instant) -> f64 {
        let rtt = self.latency.lock().expect("not poisoned").at(now);
        rtt * f64::from(self.active.load(Ordering::Relaxed) + 1)
    }

    /// Whether outlier detection has it ejected at `now`.
    pub fn ejected(&self, now: Instant) -> bool {
        self.ejected_until
            .lock()
            .expect("not poisoned")
            .is_some_and(|t| now < t)
    }

    /// Count a request in flight until the guard drops (least request).
    pub fn start(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }
}

/// A request in flight to an endpoint.
pub struct Active(Arc<Endpoint>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What an upstream attempt came to, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status.
    Status(u16),
    /// No connection, a reset or a timeout: counted as a gateway error.
    Failed,
}

/// A destination cluster.
pub struct Cluster {
    /// The settings in force (a change makes a new cluster).
    pub policy: PortPolicy,
    endpoints: RwLock<(u64, Arc<Vec<Arc<Endpoint>>>)>,
    next: AtomicUsize,
    concurrency: Arc<Semaphore>,
    pending: AtomicU32,
    retries: AtomicU32,
}

impl Cluster {
    fn new(policy: PortPolicy) -> Cluster {
        let pool = &policy.connection_pool;
        let permits = pool.max_connections.min(pool.http2_max_requests).max(1) as usize;
        Cluster {
            concurrency: Arc::new(Semaphore::new(permits.min(Semaphore::MAX_PERMITS))),
            policy,
            endpoints: RwLock::new((u64::MAX, Arc::new(Vec::new()))),
            next: AtomicUsize::new(0),
            pending: AtomicU32::new(0),
            retries: AtomicU32::new(0),
        }
    }

    /// The endpoints for endpoint generation `generation`; `compute` lists
    /// them (workload, address and expected identity) when the generation
    /// changed. Known endpoints keep their state.
    pub fn endpoints(
        &self,
        generation: u64,
        compute: impl FnOnce() -> Vec<(String, SocketAddr, Option<String>)>,
    ) -> Arc<Vec<Arc<Endpoint>>> {
        {
            let e = self.endpoints.read().expect("not poisoned");
            if e.0 == generation {
                return e.1.clone();
            }
        }
        let mut e = self.endpoints.write().expect("not poisoned");
        if e.0 != generation {
            let old: HashMap<SocketAddr, Arc<Endpoint>> =
                e.1.iter().map(|ep| (ep.addr, ep.clone())).collect();
            let fresh = compute()
                .into_iter()
                .map(|(w, addr, id)| match old.get(&addr) {
                    Some(ep) if ep.workload == w && ep.identity == id => ep.clone(),
                    _ => Arc::new(Endpoint::new(w, addr, id)),
                })
                .collect();
            *e = (generation, Arc::new(fresh));
        }
        e.1.clone()
    }

    /// Choose an endpoint with the cluster's load balancer, skipping ejected
    /// ones (unless fewer than the minimum healthy share remain: then all
    /// are used, as Envoy's panic threshold does). `hash` is the
    /// consistent-hash key's hash, if any.
    pub fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        hash: Option<u64>,
        exclude: Option<SocketAddr>,
        now: Instant,
    ) -> Option<Arc<Endpoint>> {
        if endpoints.is_empty() {
            return None;
        }
        let min_health = self
            .policy
            .outlier_detection
            .as_ref()
            .map_or(0, |o| o.min_health_percent) as usize;
        let healthy: Vec<&Arc<Endpoint>> = endpoints.iter().filter(|e| !e.ejected(now)).collect();
        let mut pool: Vec<&Arc<Endpoint>> =
            if healthy.is_empty() || healthy.len() * 100 < endpoints.len() * min_health {
                endpoints.iter().collect()
            } else {
                healthy
            };
        // A retry prefers another endpoint than the one that failed.
        if let Some(x) = exclude
            && pool.len() > 1
        {
            pool.retain(|e| e.addr != x);
        }
        let n = pool.len();
        let i = match (&self.policy.load_balancer, hash) {
            (LoadBalancer::ConsistentHash(_), Some(h)) => (h % n as u64) as usize,
            (LoadBalancer::RoundRobin, _) => self.next.fetch_add(1, Ordering::Relaxed) % n,
            (LoadBalancer::Random, _) | (LoadBalancer::ConsistentHash(_), None) => {
                fastrand::usize(..n)
            }
            (LoadBalancer::Passthrough, _) => 0,
            (LoadBalancer::LeastRequest, _) if n == 1 => 0,
            (LoadBalancer::LeastRequest, _) => {
                // Power of two (distinct) choices on the peak-EWMA cost:
                // with equal latencies, the fewer requests in flight wins.
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                if pool[b].cost(now) < pool[a].cost(now) {
                    b
                } else {
                    a
                }
            }
        };
        Some(pool[i].clone())
    }

    /// Record an attempt's outcome; true when it ejected the endpoint.
    pub fn record(
        &self,
        endpoints: &[Arc<Endpoint>],
        ep: &Endpoint,
        outcome: Outcome,
        now: Instant,
    ) -> bool {
        let Some(od) = &self.policy.outlier_detection else {
            return false;
        };
        let (is_5xx, is_gateway) = match outcome {
            Outcome::Status(s) => (s >= 500, matches!(s, 502..=504)),
            Outcome::Failed => (true, true),
        };
        if !is_5xx {
            ep.consecutive_5xx.store(0, Ordering::Relaxed);
            ep.consecutive_gateway.store(0, Ordering::Relaxed);
            return false;
        }
        let c5 = ep.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let cg = if is_gateway {
            ep.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            ep.consecutive_gateway.store(0, Ordering::Relaxed);
            0
        };
        let tripped = (od.consecutive_5xx_errors > 0 && c5 >= od.consecutive_5xx_errors)
            || (od.consecutive_gateway_errors > 0 && cg >= od.consecutive_gateway_errors);
        if !tripped || ep.ejected(now) || !may_eject(od, endpoints, now) {
            return false;
        }
        ep.consecutive_5xx.store(0, Ordering::Relaxed);
        ep.consecutive_gateway.store(0, Ordering::Relaxed);
        let n = ep.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        // Envoy: the base time multiplied by the times ejected, capped at 300 s.
        let time = Duration::from_millis(od.base_ejection_time_ms.saturating_mul(n as u64))
            .min(Duration::from_secs(300).max(Duration::from_millis(od.base_ejection_time_ms)));
        *ep.ejected_until.lock().expect("not poisoned") = Some(now + time);
        true
    }

    /// Admission under the connection-pool limits: a permit, after waiting
    /// as one of at most `http1_max_pending_requests` pending requests, or
    /// `None` when the pool overflows.
    pub async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.concurrency.clone().try_acquire_owned() {
            return Some(p);
        }
        let max_pending = self.policy.connection_pool.http1_max_pending_requests;
        if self.pending.fetch_add(1, Ordering::AcqRel) >= max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let permit = self.concurrency.clone().acquire_owned().await.ok();
        self.pending.fetch_sub(1, Ordering::AcqRel);
        permit
    }

    /// Admission of a TCP connection: a permit now, or `None` when the
    /// cluster is at `max_connections` (TCP has no pending queue).
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        self.concurrency.clone().try_acquire_owned().ok()
    }

    /// Take a retry slot under `max_retries` (Envoy's retry circuit breaker).
    pub fn retry_slot(self: &Arc<Self>) -> Option<RetrySlot> {
        let max = self.policy.connection_pool.max_retries;
        if self.retries.fetch_add(1, Ordering::AcqRel) >= max {
            self.retries.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(RetrySlot(self.clone()))
    }
}

/// A retry in progress.
pub struct RetrySlot(Arc<Cluster>);

impl Drop for RetrySlot {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether one more endpoint may be ejected under `max_ejection_percent`
/// (at least one may be, when the percentage is not zero).
fn may_eject(od: &OutlierDetection, endpoints: &[Arc<Endpoint>], now: Instant) -> bool {
    if od.max_ejection_percent == 0 {
        return false;
    }
    let ejected = endpoints.iter().filter(|e| e.ejected(now)).count();
    let max = (endpoints.len() * od.max_ejection_percent as usize / 100).max(1);
    ejected < max
}

/// A host's clusters by subset and port.
type HostClusters = Vec<(Option<String>, Option<u16>, Arc<Cluster>)>;

/// Every cluster the proxy has used.
#[derive(Default)]
pub struct Clusters {
    /// By host, then by subset and port (a host has a few): looked up with
    /// borrowed names, so a request allocates no key.
    map: Mutex<rustc_hash::FxHashMap<String, HostClusters>>,
    /// Bumped whenever the endpoints may have changed (a config or an
    /// endpoint update), so clusters recompute theirs.
    pub generation: AtomicU64,
}

impl Clusters {
    /// The cluster for `key` under `policy`.
    pub fn get(&self, key: &ClusterKey<'_>, policy: PortPolicy) -> Arc<Cluster> {
        let mut map = self.map.lock().expect("not poisoned");
        if let Some(clusters) = map.get_mut(key.host) {
            if let Some(i) = clusters
                .iter()
                .position(|(s, p, _)| s.as_deref() == key.subset && *p == key.port)
            {
                if clusters[i].2.policy == policy {
                    return clusters[i].2.clone();
                }
                // The policy changed: a new cluster, with fresh state.
                clusters.swap_remove(i);
            }
            return add_cluster(clusters, key, policy);
        }
        add_cluster(map.entry(key.host.to_string()).or_default(), key, policy)
    }
}

fn add_cluster(
    clusters: &mut HostClusters,
    key: &ClusterKey<'_>,
    policy: PortPolicy,
) -> Arc<Cluster> {
    let c = Arc::new(Cluster::new(policy));
    clusters.push((key.subset.map(str::to_string), key.port, c.clone()));
    c
}

/// The hash of a consistent-hash key.
pub fn hash_of(v: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshc_ir::{ConnectionPool, TlsMode};

    fn policy(lb: LoadBalancer, od: Option<OutlierDetection>) -> PortPolicy {
        PortPolicy {
            load_balancer: lb,
            connection_pool: ConnectionPool::default(),
            outlier_detection: od,
            tls: TlsMode::Disable,
        }
    }

    fn eps(n: u16) -> Vec<(String, SocketAddr, Option<String>)> {
        (0..n)
            .map(|i| {
                (
                    format!("ns/w{i}"),
                    SocketAddr::from(([127, 0, 0, 1], 1000 + i)),
                    None,
                )
            })
            .collect()
    }

    #[test]
    fn round_robin_visits_every_endpoint_in_turn() {
        let c = Cluster::new(policy(LoadBalancer::RoundRobin, None));
        let e = c.endpoints(1, || eps(3));
        let now = Instant::now();
        let ports: Vec<u16> = (0..6)
            .map(|_| c.pick(&e, None, None, now).unwrap().addr.port())
            .collect();
        assert_eq!(ports, [1000, 1001, 1002, 1000, 1001, 1002]);
    }

    #[test]
    fn least_request_prefers_the_faster_endpoint_and_forgives_with_time() {
        let c = Cluster::new(policy(LoadBalancer::LeastRequest, None));
        let e = c.endpoints(1, || eps(3));
        let now = Instant::now();
        for _ in 0..5 {
            e[0].observe(Duration::from_millis(2), now);
            e[1].observe(Duration::from_millis(40), now);
            e[2].observe(Duration::from_millis(3), now);
        }
        let mut picks = [0usize; 3];
        for _ in 0..3000 {
            let p = c.pick(&e, None, None, now).unwrap();
            picks[usize::from(p.addr.port() - 1000)] += 1;
        }
        // Two distinct choices: the slow one wins no comparison.
        assert_eq!(picks[1], 0, "{picks:?}");
        // The fastest wins every comparison it is in: about two thirds.
        assert!((1800..=2200).contains(&picks[0]), "{picks:?}");
        // In-flight requests count: 20 on the fastest make it dearer.
        let busy: Vec<Active> = (0..20).map(|_| e[0].start()).collect();
        let p = (0..300)
            .filter(|_| c.pick(&e, None, None, now).unwrap().addr.port() == 1000)
            .count();
        assert_eq!(p, 0, "the busy endpoint was picked");
        drop(busy);
        // A peak replaces the estimate at once; time decays it again.
        e[0].observe(Duration::from_millis(500), now);
        assert!(e[0].cost(now) > e[1].cost(now));
        let later = now + Duration::from_secs(60);
        assert!(e[0].cost(later) < e[1].cost(now));
    }

    #[test]
    fn outlier_detection_ejects_after_consecutive_errors_within_the_cap() {
        let od = OutlierDetection {
            consecutive_5xx_errors: 3,
            consecutive_gateway_errors: 0,
            interval_ms: 1000,
            base_ejection_time_ms: 1000,
            max_ejection_percent: 50,
            min_health_percent: 0,
        };
        let c = Cluster::new(policy(LoadBalancer::RoundRobin, Some(od)));
        let e = c.endpoints(1, || eps(2));
        let now = Instant::now();
        assert!(!c.record(&e, &e[0], Outcome::Status(500), now));
        assert!(
            !c.record(&e, &e[0], Outcome::Status(200), now),
            "a success resets"
        );
        assert!(!c.record(&e, &e[0], Outcome::Status(500), now));
        assert!(!c.record(&e, &e[0], Outcome::Status(503), now));
        assert!(c.record(&e, &e[0], Outcome::Failed, now));
        assert!(e[0].ejected(now));
        for _ in 0..4 {
            assert_eq!(c.pick(&e, None, None, now).unwrap().addr, e[1].addr);
        }
        // 50% of two: the second may not be ejected as well.
        for _ in 0..3 {
            c.record(&e, &e[1], Outcome::Status(500), now);
        }
        assert!(!e[1].ejected(now));
        // Back after the base ejection time.
        assert!(!e[0].ejected(now + Duration::from_millis(1001)));
        // Endpoint state survives a new generation.
        let again = c.endpoints(2, || eps(2));
        assert!(again[0].ejected(now));
    }

    #[tokio::test]
    async fn the_pool_overflows_past_its_pending_limit() {
        let mut p = policy(LoadBalancer::RoundRobin, None);
        p.connection_pool.max_connections = 1;
        p.connection_pool.http1_max_pending_requests = 1;
        let c = Arc::new(Cluster::new(p));
        let first = c.admit().await.expect("a permit");
        let waiting = {
            let c = c.clone();
            tokio::spawn(async move { c.admit().await.is_some() })
        };
        while c.pending.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(
            c.admit().await.is_none(),
            "a second pending request overflows"
        );
        drop(first);
        assert!(waiting.await.unwrap(), "the pending one gets the permit");
    }
}
