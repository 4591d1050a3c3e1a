use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;

use crate::ids::{LeaseId, UserId};
use crate::lease::{LeaseError, LeaseInfo, LeaseStore, StreamLeaseConfig};
use crate::metrics::LeaseMetrics;

/// An in-process lease store with TTL expiry: the embedded default. Same semantics as the Redis
/// limiter; the clock is this process's monotonic clock.
///
/// It records the lease metrics of [`crate::metrics`] (acquired, denied, refreshed, lost,
/// released, acquire latency) with `backend="memory"`, through handles registered when the store
/// is built.
#[derive(Debug)]
pub struct MemoryLeaseStore {
    config: StreamLeaseConfig,
    users: Mutex<HashMap<UserId, HashMap<LeaseId, Instant>>>,
    metrics: LeaseMetrics,
}

impl Default for MemoryLeaseStore {
    fn default() -> Self {
        Self::new(StreamLeaseConfig::default())
    }
}

impl MemoryLeaseStore {
    /// A store with these settings.
    pub fn new(config: StreamLeaseConfig) -> Self {
        Self {
            config,
            users: Mutex::default(),
            metrics: LeaseMetrics::new("memory"),
        }
    }

    /// Runs `f` on the user's unexpired leases, dropping the expired ones first.
    fn with_user<T>(&self, user: &UserId, f: impl FnOnce(&mut HashMap<LeaseId, Instant>, Instant) -> T) -> T {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let leases = users.entry(user.clone()).or_default();
        leases.retain(|_, expires| *expires > now);
        let out = f(leases, now);
        if leases.is_empty() {
            users.remove(user);
        }
        out
    }
}

#[async_trait]
impl LeaseStore for MemoryLeaseStore {
    fn config(&self) -> &StreamLeaseConfig {
        &self.config
    }

    async fn acquire(&self, user: &UserId) -> Result<Option<LeaseId>, LeaseError> {
        let started = Instant::now();
        let got = self.with_user(user, |leases, now| {
            (leases.len() < self.config.limit).then(|| {
                let id = LeaseId::generate();
                leases.insert(id.clone(), now + self.config.ttl());
                id
            })
        });
        let metrics = &self.metrics;
        metrics.acquire_seconds.record(started.elapsed());
        match got {
            Some(_) => metrics.acquired.increment(1),
            None => metrics.denied.increment(1),
        }
        Ok(got)
    }

    async fn release(&self, user: &UserId, lease: &LeaseId) -> Result<(), LeaseError> {
        // Only a lease that was there counts, as in the Redis limiter.
        if self.with_user(user, |leases, _| leases.remove(lease)).is_some() {
            self.metrics.released.increment(1);
        }
        Ok(())
    }

    async fn refresh(&self, user: &UserId, lease: &LeaseId) -> Result<bool, LeaseError> {
        let found = self.with_user(user, |leases, now| match leases.get_mut(lease) {
            Some(expires) => {
                *expires = now + self.config.ttl();
                true
            }
            None => false,
        });
        if found {
            self.metrics.refreshed.increment(1);
        } else {
            self.metrics.lost.increment(1);
        }
        Ok(found)
    }

    async fn active_count(&self, user: &UserId) -> Result<usize, LeaseError> {
        Ok(self.with_user(user, |leases, _| leases.len()))
    }

    async fn leases(&self, user: &UserId) -> Result<Vec<LeaseInfo>, LeaseError> {
        Ok(self.with_user(user, |leases, now| {
            let wall = SystemTime::now();
            let mut out: Vec<LeaseInfo> = leases
                .iter()
                .map(|(id, expires)| LeaseInfo {
                    lease_id: id.clone(),
                    expires_at: wall + (*expires - now),
                })
                .collect();
            out.sort_by_key(|l| l.expires_at);
            out
        }))
    }
}
