//! One stop signal for a store's background work (as agatedb's `Closer`):
//! threads sleep on it with a timeout, tasks await it, and a thread that
//! waits on an async channel can wait on both.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// Cloned into every worker; closing any clone closes them all, for good.
#[derive(Clone, Default)]
pub struct Closer(Arc<Inner>);

#[derive(Default)]
struct Inner {
    closed: Mutex<bool>,
    /// Wakes threads in [`Closer::wait_timeout`].
    threads: Condvar,
    /// Wakes futures in [`Closer::closed`].
    tasks: Notify,
}

impl Closer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn close(&self) {
        *self.lock() = true;
        self.0.threads.notify_all();
        self.0.tasks.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        *self.lock()
    }

    /// Sleeps for `timeout`, or less if the closer closes; true when it has.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let (closed, _) = self
            .0
            .threads
            .wait_timeout_while(self.lock(), timeout, |closed| !*closed)
            .unwrap_or_else(PoisonError::into_inner);
        *closed
    }

    /// Completes once the closer is closed.
    pub async fn closed(&self) {
        let mut notified = pin!(self.0.tasks.notified());
        // Registered before the check, so a close in between still wakes it.
        notified.as_mut().enable();
        if self.is_closed() {
            return;
        }
        notified.await;
    }

    /// Blocks this thread until `work` completes (`Some` of its output) or
    /// the closer closes (`None`), whichever comes first; `work` wins a tie.
    pub fn block_until<F: Future>(&self, work: F) -> Option<F::Output> {
        futures_executor::block_on(async {
            tokio::select! {
                biased;
                output = work => Some(output),
                () = self.closed() => None,
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        // A bool cannot be left half-written: a panic elsewhere while the
        // lock was held changes nothing about it.
        self.0.closed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::thread;
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_sleeping_thread_wakes_when_closed() {
        let closer = Closer::new();
        assert!(!closer.wait_timeout(Duration::from_millis(1)));
        let sleeper = thread::spawn({
            let closer = closer.clone();
            move || {
                let started = Instant::now();
                (
                    closer.wait_timeout(Duration::from_secs(60)),
                    started.elapsed(),
                )
            }
        });
        thread::sleep(Duration::from_millis(20));
        closer.close();
        let (closed, slept) = sleeper.join().unwrap();
        assert!(closed);
        assert!(slept < Duration::from_secs(10), "slept {slept:?}");
        // Closed for good: later waits return at once.
        assert!(closer.wait_timeout(Duration::from_secs(60)));
    }

    #[test]
    fn a_thread_waits_for_work_or_the_close() {
        let closer = Closer::new();
        let (send, mut receive) = tokio::sync::mpsc::channel::<u32>(1);
        send.try_send(7).unwrap();
        assert_eq!(closer.block_until(receive.recv()), Some(Some(7)));
        let waiter = thread::spawn({
            let closer = closer.clone();
            move || closer.block_until(receive.recv())
        });
        thread::sleep(Duration::from_millis(20));
        closer.close();
        assert_eq!(waiter.join().unwrap(), None);
        drop(send);
    }

    #[tokio::test]
    async fn a_task_wakes_when_closed() {
        let closer = Closer::new();
        let task = tokio::spawn({
            let closer = closer.clone();
            async move { closer.closed().await }
        });
        tokio::task::yield_now().await;
        closer.close();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the task woke")
            .unwrap();
    }
}
