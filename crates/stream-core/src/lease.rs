//! Per-user caps on concurrent streams: the [`LeaseStore`] trait and the [`StreamLease`] guard.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::error::BoxError;
use crate::ids::{LeaseId, UserId};

/// Lease settings, with the seed's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLeaseConfig {
    /// Maximum concurrent streams per user (default 5).
    pub limit: usize,
    /// Lease lifetime without a refresh, for crash recovery (default 180 s).
    pub ttl_seconds: u64,
    /// Key prefix of the per-user sets in Redis (default `"stream_leases"`).
    pub key_namespace: String,
    /// Extra key lifetime after the last lease expires (default 60 s).
    pub key_ttl_grace: u64,
    /// The `Retry-After` hint, in seconds, given with [`StreamLimitExceeded`] (default 5).
    pub retry_after_seconds: u64,
}

impl Default for StreamLeaseConfig {
    fn default() -> Self {
        Self {
            limit: 5,
            ttl_seconds: 180,
            key_namespace: "stream_leases".into(),
            key_ttl_grace: 60,
            retry_after_seconds: 5,
        }
    }
}

impl StreamLeaseConfig {
    /// The lease lifetime.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_seconds)
    }

    /// How often a held lease is refreshed: a third of the TTL, at least every 100 ms.
    pub fn refresh_interval(&self) -> Duration {
        (self.ttl() / 3).max(Duration::from_millis(100))
    }
}

/// A lease store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The backend failed.
    #[error("lease backend failed: {0}")]
    Backend(#[source] BoxError),
}

/// The user already holds `limit` streams. Web adapters turn it into HTTP 429 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user {user_id} already has {limit} concurrent streams; retry in {} s", retry_after.as_secs().max(1))]
pub struct StreamLimitExceeded {
    /// The user.
    pub user_id: UserId,
    /// The cap.
    pub limit: usize,
    /// When to try again.
    pub retry_after: Duration,
}

/// Why a lease could not be had.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    /// The user is at the cap.
    #[error(transparent)]
    LimitExceeded(#[from] StreamLimitExceeded),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] LeaseError),
}

/// One active lease, as listed by [`LeaseStore::leases`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The lease.
    pub lease_id: LeaseId,
    /// When it expires unless refreshed (by the store's clock).
    pub expires_at: SystemTime,
}

/// Keeps per-user leases: at most `limit` unexpired leases per user, each expiring `ttl` after
/// it was acquired or last refreshed.
///
/// Each operation is atomic: concurrent acquires never exceed the limit. Like publishers, the
/// futures must not depend on a particular runtime (a dropped lease may be released from a plain
/// thread).
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// The store's settings.
    fn config(&self) -> &StreamLeaseConfig;

    /// Takes a lease for `user`, or `None` when the user holds `limit` unexpired leases.
    async fn acquire(&self, user: &UserId) -> Result<Option<LeaseId>, LeaseError>;

    /// Gives a lease back. Releasing an unknown or expired lease is not an error.
    async fn release(&self, user: &UserId, lease: &LeaseId) -> Result<(), LeaseError>;

    /// Extends a lease by the TTL. `false` when it had expired or was released: a refresh never
    /// revives a lease.
    async fn refresh(&self, user: &UserId, lease: &LeaseId) -> Result<bool, LeaseError>;

    /// The number of unexpired leases of `user`.
    async fn active_count(&self, user: &UserId) -> Result<usize, LeaseError>;

    /// The unexpired leases of `user`, soonest expiry first (for debugging).
    async fn leases(&self, user: &UserId) -> Result<Vec<LeaseInfo>, LeaseError>;
}

#[async_trait]
impl<T: LeaseStore + ?Sized> LeaseStore for Arc<T> {
    fn config(&self) -> &StreamLeaseConfig {
        (**self).config()
    }
    async fn acquire(&self, user: &UserId) -> Result<Option<LeaseId>, LeaseError> {
        (**self).acquire(user).await
    }
    async fn release(&self, user: &UserId, lease: &LeaseId) -> Result<(), LeaseError> {
        (**self).release(user, lease).await
    }
    async fn refresh(&self, user: &UserId, lease: &LeaseId) -> Result<bool, LeaseError> {
        (**self).refresh(user, lease).await
    }
    async fn active_count(&self, user: &UserId) -> Result<usize, LeaseError> {
        (**self).active_count(user).await
    }
    async fn leases(&self, user: &UserId) -> Result<Vec<LeaseInfo>, LeaseError> {
        (**self).leases(user).await
    }
}

/// A held lease. It is released when dropped, also when a client disconnects mid-stream and the
/// response body holding it is dropped.
///
/// On drop inside a tokio runtime the release is spawned; elsewhere it runs to completion on the
/// dropping thread. With [`auto_refresh`](Self::auto_refresh) a background task refreshes it at a
/// third of the TTL while it is held.
#[must_use = "dropping the guard releases the lease at once"]
pub struct StreamLease {
    store: Arc<dyn LeaseStore>,
    user_id: UserId,
    lease_id: LeaseId,
    active: Arc<AtomicBool>,
    refresher: Option<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for StreamLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLease")
            .field("user_id", &self.user_id)
            .field("lease_id", &self.lease_id)
            .field("active", &self.is_active())
            .finish()
    }
}

impl StreamLease {
    /// Acquires a lease for `user` from `store`. One store round trip.
    pub async fn acquire(store: Arc<dyn LeaseStore>, user: UserId) -> Result<Self, AcquireError> {
        match store.acquire(&user).await? {
            Some(lease_id) => Ok(Self {
                store,
                user_id: user,
                lease_id,
                active: Arc::new(AtomicBool::new(true)),
                refresher: None,
            }),
            None => {
                let config = store.config();
                Err(StreamLimitExceeded {
                    user_id: user,
                    limit: config.limit,
                    retry_after: Duration::from_secs(config.retry_after_seconds),
                }
                .into())
            }
        }
    }

    /// Blocking [`acquire`](Self::acquire), for plain threads without a runtime.
    ///
    /// Like every blocking form here it blocks its thread until Redis (or the store) answers: call
    /// it from plain threads or `spawn_blocking`, never from async code, where it would stall a
    /// tokio worker (and can hang a current-thread runtime). Async code uses
    /// [`acquire`](Self::acquire).
    pub fn acquire_blocking(store: Arc<dyn LeaseStore>, user: UserId) -> Result<Self, AcquireError> {
        futures_executor::block_on(Self::acquire(store, user))
    }

    /// Starts a background task that refreshes the lease every third of its TTL while it is held.
    /// Needs a tokio runtime. A refresh that reports the lease gone marks it inactive.
    pub fn auto_refresh(mut self) -> Self {
        if self.refresher.is_some() || !self.is_active() {
            return self;
        }
        let (store, user, lease, active) = (
            self.store.clone(),
            self.user_id.clone(),
            self.lease_id.clone(),
            self.active.clone(),
        );
        let every = store.config().refresh_interval();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            while active.load(Ordering::Acquire) {
                tick.tick().await;
                match store.refresh(&user, &lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        active.store(false, Ordering::Release);
                        tracing::warn!(user = %user, lease = %lease, "stream lease expired while held");
                    }
                    Err(e) => tracing::warn!(user = %user, error = %e, "stream lease refresh failed"),
                }
            }
        });
        self.refresher = Some(task.abort_handle());
        self
    }

    /// The lease's id.
    pub fn lease_id(&self) -> &LeaseId {
        &self.lease_id
    }

    /// The user who holds it.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// Whether the lease is still held: not released, and not found expired by a refresh.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// The store it came from.
    pub fn store(&self) -> &Arc<dyn LeaseStore> {
        &self.store
    }

    /// Extends the lease by the TTL. `false` (and inactive from then on) when it had expired.
    pub async fn refresh_async(&self) -> Result<bool, LeaseError> {
        self.refresh_owned().await
    }

    /// [`refresh_async`](Self::refresh_async) as a future that owns what it needs, for a caller
    /// that keeps it next to the lease (the SSE pipeline).
    pub(crate) fn refresh_owned(&self) -> impl Future<Output = Result<bool, LeaseError>> + Send + 'static {
        let store = self.store.clone();
        let user = self.user_id.clone();
        let lease = self.lease_id.clone();
        let active = self.active.clone();
        async move {
            if !active.load(Ordering::Acquire) {
                return Ok(false);
            }
            let alive = store.refresh(&user, &lease).await?;
            if !alive {
                active.store(false, Ordering::Release);
            }
            Ok(alive)
        }
    }

    /// Blocking [`refresh_async`](Self::refresh_async).
    pub fn refresh(&self) -> Result<bool, LeaseError> {
        futures_executor::block_on(self.refresh_async())
    }

    /// Releases the lease now. Releasing twice is a no-op.
    pub async fn release_async(&self) -> Result<(), LeaseError> {
        if self.active.swap(false, Ordering::AcqRel) {
            self.stop_refresher();
            self.store.release(&self.user_id, &self.lease_id).await?;
        }
        Ok(())
    }

    /// Blocking [`release_async`](Self::release_async).
    pub fn release(&self) -> Result<(), LeaseError> {
        futures_executor::block_on(self.release_async())
    }

    fn stop_refresher(&self) {
        if let Some(task) = &self.refresher {
            task.abort();
        }
    }
}

/// Releases started by dropped [`StreamLease`]s that have not finished yet, in this process.
static PENDING_RELEASES: AtomicUsize = AtomicUsize::new(0);

/// A lease to give back: its store, user and id.
type ReleaseJob = (Arc<dyn LeaseStore>, UserId, LeaseId);

/// Releases whose task was dropped before it finished (its runtime shut down, as a web server's
/// worker runtimes do when it stops): [`StreamLease::wait_for_releases`] runs them.
static ORPHANED_RELEASES: std::sync::Mutex<Vec<ReleaseJob>> = std::sync::Mutex::new(Vec::new());

/// One release under way; counted while it lives, and handed to [`ORPHANED_RELEASES`] when it is
/// dropped unfinished.
struct PendingRelease(Option<ReleaseJob>);

impl PendingRelease {
    fn start(job: ReleaseJob) -> Self {
        PENDING_RELEASES.fetch_add(1, Ordering::AcqRel);
        Self(Some(job))
    }

    async fn run(mut self) {
        if let Some((store, user, lease)) = &self.0
            && let Err(e) = store.release(user, lease).await
        {
            tracing::warn!(user = %user, lease = %lease, error = %e, "releasing a dropped stream lease failed; it expires with its TTL");
        }
        self.0 = None;
    }
}

impl Drop for PendingRelease {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            ORPHANED_RELEASES.lock().unwrap_or_else(|e| e.into_inner()).push(job);
        }
        PENDING_RELEASES.fetch_sub(1, Ordering::AcqRel);
    }
}

impl StreamLease {
    /// Waits, for at most `timeout`, until every release that a dropped lease guard of this
    /// process has started is done, and returns how many are still pending (0 when all are).
    ///
    /// A guard releases its lease from a task of the runtime it is dropped on, so a server that
    /// stops right after its streams end could exit before the releases reach the store, or drop
    /// them unfinished with its worker runtimes. A graceful shutdown calls this last (the demo
    /// apps wait 2 s): it runs the releases whose task was dropped itself, and waits for the
    /// others, so that the users' lease counts are back to 0 when the process exits.
    pub async fn wait_for_releases(timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let orphans = std::mem::take(&mut *ORPHANED_RELEASES.lock().unwrap_or_else(|e| e.into_inner()));
            for job in orphans {
                let release = PendingRelease::start(job).run();
                // Past the deadline the release is dropped and counted as orphaned again.
                let _ = tokio::time::timeout_at(deadline, release).await;
            }
            let pending = PENDING_RELEASES.load(Ordering::Acquire)
                + ORPHANED_RELEASES.lock().unwrap_or_else(|e| e.into_inner()).len();
            if pending == 0 || tokio::time::Instant::now() >= deadline {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        self.stop_refresher();
        if !self.active.swap(false, Ordering::AcqRel) {
            return;
        }
        let job = (self.store.clone(), self.user_id.clone(), self.lease_id.clone());
        let release = PendingRelease::start(job).run();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(release);
            }
            Err(_) => futures_executor::block_on(release),
        }
    }
}
