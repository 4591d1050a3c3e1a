//! Group commit: concurrent publishes of one key (a channel) go out together.
//!
//! While a call of a key is under way, the items submitted meanwhile for that key queue, and the
//! next call takes them all, in the order they were submitted. Nothing waits to fill a batch: a
//! lone submit goes out at once, and a submit never waits longer than a call in flight. The
//! [`Emitter`](crate::Emitter) uses it for one emitter's events, one call at a time; the Redis
//! broker uses it per channel, with a second call under way once enough events wait
//! ([`GroupCommit::with_depth`]), so that publishes from many routes or tasks to one channel (each
//! with an emitter of its own) share a script call instead of paying one each, and under a heavy
//! load the next call is on its way while Redis runs the one before.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::{EventId, PublishError};

type Published = Result<Vec<EventId>, PublishError>;

/// What a queued submitter hears: its ids, or that it leads now (its items head the queue).
enum Turn {
    Done(Published),
    Lead,
}

/// One key's queue. Its presence in the map means that a task is publishing for the key.
struct Queue<T> {
    items: Vec<T>,
    /// Each queued submitter's item count, and where its turn goes, in the order of `items`.
    waiters: Vec<(usize, oneshot::Sender<Turn>)>,
    /// The calls of the key under way, counting a lead handed on and not yet taken.
    leading: usize,
    /// Whether a waiter was given the lead and has not taken the queue yet: its items head the
    /// queue, so no one else may take them meanwhile.
    handed: bool,
}

/// Per-key group commit (see the [module](self) docs).
pub struct GroupCommit<K, T> {
    queues: Mutex<HashMap<K, Queue<T>>>,
    depth: usize,
    /// The items that must be queued before a call starts beside one under way.
    spill: usize,
}

impl<K, T> Default for GroupCommit<K, T> {
    fn default() -> Self {
        Self::with_depth(1, 1)
    }
}

impl<K, T> std::fmt::Debug for GroupCommit<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("depth", &self.depth)
            .field("spill", &self.spill)
            .finish_non_exhaustive()
    }
}

/// The lead of a key, handed on when it ends: after the leader's call, or when the leader is
/// dropped mid-call (its caller went away), the lead passes to the first waiting submitter, so
/// that no submit waits forever. A dropped call's own submitters hear [`PublishError::Closed`]
/// (their items may or may not be out).
struct Leading<'a, K: Hash + Eq, T> {
    commit: &'a GroupCommit<K, T>,
    key: &'a K,
}

impl<K: Hash + Eq, T> Drop for Leading<'_, K, T> {
    fn drop(&mut self) {
        let mut queues = self.commit.lock();
        if let Some(queue) = queues.get_mut(self.key) {
            queue.leading -= 1;
        }
        self.commit.hand_on(&mut queues, self.key);
    }
}

/// A queued submitter. Dropped after it was given the lead but before it took it, it gives up its
/// items (its caller went away) and hands the lead on, so the queue never stalls.
struct Waiting<'a, K: Hash + Eq, T> {
    commit: &'a GroupCommit<K, T>,
    key: &'a K,
    count: usize,
    turn: oneshot::Receiver<Turn>,
}

impl<K: Hash + Eq, T> Drop for Waiting<'_, K, T> {
    fn drop(&mut self) {
        // A turn already received (or never sent) reads as an error here.
        if let Ok(Turn::Lead) = self.turn.try_recv() {
            let mut queues = self.commit.lock();
            if let Some(queue) = queues.get_mut(self.key) {
                queue.items.drain(..self.count.min(queue.items.len()));
                queue.leading -= 1;
                queue.handed = false;
            }
            self.commit.hand_on(&mut queues, self.key);
        }
    }
}

impl<K, T> GroupCommit<K, T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Queue<T>>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A group commit with up to `depth` calls of one key under way at once (at least 1); a call
    /// beside one already under way starts only once `spill` items (at least 1) are queued for it.
    ///
    /// With a depth of 1, a key's calls run one after the other, in the order their items were
    /// submitted. With more, the queue goes out in a call of its own as soon as it holds `spill`
    /// items while fewer than `depth` calls are under way (the next call is on its way while the
    /// backend runs the one before), and the backend may carry out calls under way together in
    /// any order: use it only where items submitted concurrently need no order among them (a
    /// submitter's own items still go out together, in order, in one call). Below `spill`, items
    /// wait for a call to end and go out together: under a light load or a CPU-bound one, no more
    /// calls are made than with a depth of 1.
    pub fn with_depth(depth: usize, spill: usize) -> Self {
        Self {
            queues: Mutex::new(HashMap::new()),
            depth: depth.max(1),
            spill: spill.max(1),
        }
    }

    /// Gives the lead of `key`, if the key has a call to spare (and, beside a call under way, at
    /// least `spill` items queued) and no lead is waiting to be taken, to its first waiting
    /// submitter that is still there (whose items head the queue); the items of those gone are
    /// dropped. Removes the queue when nothing is under way or queued.
    fn hand_on(&self, queues: &mut HashMap<K, Queue<T>>, key: &K)
    where
        K: Hash + Eq,
    {
        let Some(queue) = queues.get_mut(key) else {
            return;
        };
        while queue.leading < self.depth
            && !queue.handed
            && !queue.waiters.is_empty()
            && (queue.leading == 0 || queue.items.len() >= self.spill)
        {
            let (count, waiter) = queue.waiters.remove(0);
            if waiter.send(Turn::Lead).is_ok() {
                queue.leading += 1;
                queue.handed = true;
                return;
            }
            queue.items.drain(..count.min(queue.items.len()));
        }
        if queue.leading == 0 && queue.waiters.is_empty() {
            queues.remove(key);
        }
    }
}

/// The error of a failed call, for each of its submitters.
fn shared_error(e: &PublishError) -> PublishError {
    match e {
        PublishError::Closed => PublishError::Closed,
        e => PublishError::Backend(e.to_string().into()),
    }
}

impl<K: Hash + Eq + Clone, T> GroupCommit<K, T> {
    /// An empty group commit, one call of a key at a time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes `items` under `key`, together with whatever else is submitted for `key` while a
    /// call is under way: `call` gets a batch of items and returns one id per item, in order.
    /// Returns the ids of `items`. When a call fails, every submitter of that batch gets its error
    /// (a failed call stored none of them, or, for a backend that sends part of a batch, an
    /// unknown part).
    ///
    /// A submitter leads at most one call: then it hands the lead to the first waiting submitter,
    /// so that under a steady stream of submits no caller keeps publishing for the others.
    pub async fn submit<F, Fut>(&self, key: &K, items: Vec<T>, call: F) -> Published
    where
        F: FnOnce(Vec<T>) -> Fut,
        Fut: Future<Output = Published>,
    {
        let count = items.len();
        if count == 0 {
            return Ok(Vec::new());
        }
        // `Ok`: this submit leads a call of its own items at once; `Err`: it queues.
        let start = {
            let mut queues = self.lock();
            match queues.get_mut(key) {
                // A call to spare, nothing queued, and enough items to start one beside those
                // under way.
                Some(queue)
                    if queue.leading < self.depth
                        && queue.items.is_empty()
                        && (queue.leading == 0 || count >= self.spill) =>
                {
                    queue.leading += 1;
                    Ok(items)
                }
                Some(queue) => {
                    let (waiter, turn) = oneshot::channel();
                    queue.items.extend(items);
                    queue.waiters.push((count, waiter));
                    // The queue may now be long enough for a call of its own.
                    self.hand_on(&mut queues, key);
                    Err(turn)
                }
                None => {
                    queues.insert(
                        key.clone(),
                        Queue {
                            items: Vec::new(),
                            waiters: Vec::new(),
                            leading: 1,
                            handed: false,
                        },
                    );
                    Ok(items)
                }
            }
        };
        let (items, waiters) = match start {
            Ok(items) => (items, Vec::new()),
            Err(turn) => {
                let mut waiting = Waiting {
                    commit: self,
                    key,
                    count,
                    turn,
                };
                match (&mut waiting.turn).await {
                    Ok(Turn::Done(published)) => return published,
                    Ok(Turn::Lead) => {}
                    // The leading task was dropped with our items in its call: they may or may
                    // not be out.
                    Err(_) => return Err(PublishError::Closed),
                }
                // Our items head the queue: take it all.
                let mut queues = self.lock();
                let Some(queue) = queues.get_mut(key) else {
                    return Err(PublishError::Closed);
                };
                queue.handed = false;
                (std::mem::take(&mut queue.items), std::mem::take(&mut queue.waiters))
            }
        };
        self.lead(key, count, items, waiters, call).await
    }

    /// Publishes `items`, whose first `own` are the leader's and the rest those of `waiters`, and
    /// returns the leader's ids; then hands the lead on ([`Leading`]), or removes the queue when
    /// nothing waits.
    async fn lead<F, Fut>(
        &self,
        key: &K,
        own: usize,
        items: Vec<T>,
        waiters: Vec<(usize, oneshot::Sender<Turn>)>,
        call: F,
    ) -> Published
    where
        F: FnOnce(Vec<T>) -> Fut,
        Fut: Future<Output = Published>,
    {
        let duty = Leading { commit: self, key };
        let published = call(items).await;
        let mine = match published {
            Ok(ids) => {
                let mut ids = ids.into_iter();
                let mine = ids.by_ref().take(own).collect();
                for (count, waiter) in waiters {
                    let _ = waiter.send(Turn::Done(Ok(ids.by_ref().take(count).collect())));
                }
                Ok(mine)
            }
            Err(e) => {
                for (_, waiter) in waiters {
                    let _ = waiter.send(Turn::Done(Err(shared_error(&e))));
                }
                Err(e)
            }
        };
        drop(duty);
        mine
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A backend that numbers items in call order, a run of numbers per call, slowly, counts its
    /// calls, records how many were under way at once, and refuses a batch holding `u32::MAX`.
    #[derive(Default)]
    struct Backend {
        next: AtomicU64,
        calls: AtomicUsize,
        running: AtomicUsize,
        most: AtomicUsize,
    }

    impl Backend {
        async fn call(&self, items: Vec<u32>) -> Result<Vec<EventId>, PublishError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            if items.contains(&u32::MAX) {
                return Err(PublishError::Backend("refused".into()));
            }
            // One call's items take one run of numbers, as a script call does, even when calls
            // overlap.
            let first = self.next.fetch_add(items.len() as u64, Ordering::SeqCst) + 1;
            Ok((first..first + items.len() as u64)
                .map(|sequence| EventId::from_parts(1, sequence))
                .collect())
        }
    }

    #[tokio::test]
    async fn concurrent_submits_share_calls_and_each_gets_its_own_ids() {
        let commit = Arc::new(GroupCommit::<&str, u32>::new());
        let backend = Arc::new(Backend::default());
        let tasks: Vec<_> = (0..64u32)
            .map(|i| {
                let (commit, backend) = (commit.clone(), backend.clone());
                tokio::spawn(async move {
                    commit
                        .submit(&"ch", vec![i, i], |items| {
                            let backend = backend.clone();
                            async move { backend.call(items).await }
                        })
                        .await
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            let ids = task.await.unwrap().unwrap();
            assert_eq!(ids.len(), 2);
            // A submitter's items stay together and in order.
            assert_eq!(ids[1].sequence(), ids[0].sequence().map(|s| s + 1));
            all.extend(ids);
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 128, "every item has an id of its own");
        assert!(backend.calls.load(Ordering::SeqCst) < 64, "submits were batched");
        assert!(commit.lock().is_empty(), "an idle key leaves nothing behind");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_depth_bounds_the_calls_under_way_and_every_item_gets_its_id() {
        for (depth, spill) in [(1, 1), (2, 1), (2, 8), (3, 4)] {
            let commit = Arc::new(GroupCommit::<&str, u32>::with_depth(depth, spill));
            let backend = Arc::new(Backend::default());
            let tasks: Vec<_> = (0..64u32)
                .map(|i| {
                    let (commit, backend) = (commit.clone(), backend.clone());
                    tokio::spawn(async move {
                        let mut ids = Vec::new();
                        for round in 0..20u32 {
                            let items = vec![i * 1000 + round; 1 + (round % 3) as usize];
                            let got = commit
                                .submit(&"ch", items, |items| {
                                    let backend = backend.clone();
                                    async move { backend.call(items).await }
                                })
                                .await
                                .unwrap();
                            // A submitter's items stay together and in order, in one call.
                            for pair in got.windows(2) {
                                assert_eq!(pair[1].sequence(), pair[0].sequence().map(|s| s + 1));
                            }
                            ids.extend(got);
                        }
                        ids
                    })
                })
                .collect();
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.unwrap());
            }
            let count = all.len();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), count, "depth {depth}: every item has an id of its own");
            let submitted: usize = (0..20).map(|round| 1 + round % 3).sum::<usize>() * 64;
            assert_eq!(count, submitted, "depth {depth}: every item answered");
            let most = backend.most.load(Ordering::SeqCst);
            assert!(most <= depth, "depth {depth}: {most} calls were under way at once");
            if depth > 1 {
                assert!(most > 1, "depth {depth}: calls overlapped");
            }
            assert!(
                commit.lock().is_empty(),
                "depth {depth}: an idle key leaves nothing behind"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn submitters_that_go_away_at_any_point_never_stall_a_key() {
        for (depth, spill) in [(1, 1), (2, 1), (2, 8), (3, 4)] {
            let commit = Arc::new(GroupCommit::<u8, u32>::with_depth(depth, spill));
            let backend = Arc::new(Backend::default());
            let mut stay = Vec::new();
            let mut go = Vec::new();
            for i in 0..200u32 {
                let (commit, backend) = (commit.clone(), backend.clone());
                let task = tokio::spawn(async move {
                    commit
                        .submit(&1, vec![i], |items| async move { backend.call(items).await })
                        .await
                });
                if i % 3 == 0 {
                    go.push(task)
                } else {
                    stay.push(task)
                }
                if i % 16 == 0 {
                    tokio::time::sleep(Duration::from_micros(500)).await;
                }
                if i % 5 == 0
                    && let Some(task) = go.pop()
                {
                    task.abort();
                }
            }
            for task in go {
                task.abort();
            }
            for task in stay {
                let ids = tokio::time::timeout(Duration::from_secs(10), task)
                    .await
                    .expect("the key never stalls")
                    .unwrap();
                // A submitter whose call's leader went away hears `Closed`; the rest get an id.
                assert!(matches!(ids.as_deref(), Ok([_]) | Err(PublishError::Closed)), "{ids:?}");
            }
            tokio::time::timeout(Duration::from_secs(10), async {
                while !commit.lock().is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("depth {depth}: an idle key leaves nothing behind"));
        }
    }

    #[tokio::test]
    async fn a_failed_call_fails_its_batch_only() {
        let commit = GroupCommit::<u8, u32>::new();
        let backend = Backend::default();
        let call = |items| backend.call(items);
        assert!(matches!(
            commit.submit(&1, vec![u32::MAX], call).await,
            Err(PublishError::Backend(_))
        ));
        assert_eq!(commit.submit(&1, vec![7], call).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_dropped_leader_or_waiter_hands_on_the_lead() {
        let commit = Arc::new(GroupCommit::<u8, u32>::new());
        let backend = Arc::new(Backend::default());
        let never = |_: Vec<u32>| std::future::pending::<Published>();
        let leader = {
            let commit = commit.clone();
            tokio::spawn(async move { commit.submit(&1, vec![1], never).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Queued behind the stuck leader: one that will go away, one that stays.
        let gone = {
            let commit = commit.clone();
            tokio::spawn(async move { commit.submit(&1, vec![2], never).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let stays = {
            let (commit, backend) = (commit.clone(), backend.clone());
            tokio::spawn(async move {
                commit
                    .submit(&1, vec![3, 4], |items| async move { backend.call(items).await })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        gone.abort();
        leader.abort();
        let ids = tokio::time::timeout(Duration::from_secs(5), stays)
            .await
            .expect("the lead was handed on")
            .unwrap()
            .unwrap();
        assert_eq!(ids.len(), 2);
        assert_eq!(
            backend.calls.load(Ordering::SeqCst),
            1,
            "the gone submitter's item was dropped"
        );
        assert!(commit.lock().is_empty());
    }
}
