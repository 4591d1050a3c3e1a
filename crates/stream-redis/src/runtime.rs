//! Running Redis futures when the caller has no tokio runtime.

use std::future::Future;

use futures_util::FutureExt;
use futures_util::future::Either;
use tokio::runtime::Handle;
use tokio::task::JoinError;

/// Runs `fut` here when the caller is inside a tokio runtime, else on `handle` (the runtime the
/// backend was built on), waiting for it through its join handle (spawned at once).
///
/// The redis client's I/O and timeouts need a tokio runtime, but stream-core's blocking forms (a
/// `BlockingEmitter`, a `StreamLease` dropped on a plain thread) poll futures with a plain
/// executor on a thread that has none. The fallback costs one task spawn. The error is the join
/// error: the runtime has shut down, or `fut` panicked.
pub fn on_runtime<T, F>(handle: &Handle, fut: F) -> impl Future<Output = Result<T, JoinError>> + use<T, F>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    // Not an `async fn`: that would hold `fut` twice (as its argument and as the future it
    // awaits), and every Redis call's future would be twice the size.
    if Handle::try_current().is_ok() {
        Either::Left(fut.map(Ok))
    } else {
        Either::Right(handle.spawn(fut))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_thread_runs_on_the_given_runtime() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        let on_tokio = std::thread::spawn(move || {
            futures_executor::block_on(on_runtime(&handle, async { Handle::try_current().is_ok() }))
        })
        .join()
        .unwrap();
        assert!(on_tokio.unwrap());
    }
}
