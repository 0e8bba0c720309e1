//! A background task owned by the store that started it (as mini-redis's
//! `DbDropGuard` owns its purger): stopped by one signal, its [`Closer`],
//! joined by [`OwnedTask::stop`], and told to stop when dropped, so a store
//! dropped without a shutdown leaves nothing running.

use std::future::Future;
use std::sync::Mutex;

use tokio::task::JoinHandle;

use super::closer::Closer;

pub struct OwnedTask {
    name: &'static str,
    closer: Closer,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl OwnedTask {
    /// Spawns `work`, which must end soon after its closer closes.
    pub fn spawn<F, Fut>(name: &'static str, work: F) -> Self
    where
        F: FnOnce(Closer) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let closer = Closer::new();
        let handle = tokio::spawn(work(closer.clone()));
        Self {
            name,
            closer,
            handle: Mutex::new(Some(handle)),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the task is still running (not stopped, not ended, not
    /// panicked).
    pub fn is_running(&self) -> bool {
        self.handle
            .lock()
            .is_ok_and(|h| h.as_ref().is_some_and(|h| !h.is_finished()))
    }

    /// Tells the task to stop and waits until it has ended.
    pub async fn stop(&self) {
        self.closer.close();
        let handle = self.handle.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            if let Err(e) = handle.await {
                tracing::error!(error = %e, task = self.name, "a background task panicked");
            }
        }
    }
}

impl Drop for OwnedTask {
    fn drop(&mut self) {
        self.closer.close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    /// A task that runs until its closer closes, then says so.
    fn until_closed() -> (OwnedTask, oneshot::Receiver<()>) {
        let (ended, end) = oneshot::channel();
        let task = OwnedTask::spawn("test", |closer| async move {
            closer.closed().await;
            let _ = ended.send(());
        });
        (task, end)
    }

    #[tokio::test]
    async fn a_task_runs_until_stopped_and_stop_joins_it() {
        let (task, mut end) = until_closed();
        assert!(task.is_running());
        assert!(end.try_recv().is_err(), "it ended before being stopped");
        task.stop().await;
        assert!(!task.is_running());
        assert_eq!(
            end.try_recv(),
            Ok(()),
            "stop returned before the task ended"
        );
        // Stopping again is harmless.
        task.stop().await;
    }

    #[tokio::test]
    async fn a_dropped_task_is_told_to_stop() {
        let (task, end) = until_closed();
        drop(task);
        tokio::time::timeout(Duration::from_secs(10), end)
            .await
            .expect("a dropped task kept running")
            .expect("the task ended without saying so");
    }

    #[tokio::test]
    async fn a_task_that_ended_is_not_running() {
        let (done, finished) = oneshot::channel();
        let task = OwnedTask::spawn("short", |_| async move {
            let _ = done.send(());
        });
        finished.await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while task.is_running() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("an ended task is still listed as running");
    }
}
