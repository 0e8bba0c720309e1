//! Polling for a condition another process will bring about (a lease to
//! expire, a flush to finish, a fence to lift): one loop for all of them.

use std::future::Future;
use std::time::{Duration, Instant};

use super::StoreError;

/// What one look found.
pub enum Poll<T> {
    /// Done, with this.
    Ready(T),
    /// Not yet: look again.
    Pending,
}

/// Runs `attempt` every `every` until it is ready, for at most `within`
/// (it always runs once); `Ok(None)` when time ran out. An error ends it.
pub async fn retry_until<T, F, Fut>(
    within: Duration,
    every: Duration,
    mut attempt: F,
) -> Result<Option<T>, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Poll<T>, StoreError>>,
{
    let started = Instant::now();
    loop {
        if let Poll::Ready(value) = attempt().await? {
            return Ok(Some(value));
        }
        if started.elapsed() >= within {
            return Ok(None);
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn it_polls_until_ready_and_gives_up_in_time() {
        let looks = AtomicUsize::new(0);
        let ready = retry_until(Duration::from_secs(5), Duration::from_millis(1), || async {
            let n = looks.fetch_add(1, Ordering::Relaxed);
            Ok(if n == 3 {
                Poll::Ready(n)
            } else {
                Poll::Pending
            })
        })
        .await
        .unwrap();
        assert_eq!(ready, Some(3));

        let started = Instant::now();
        let never: Option<()> = retry_until(
            Duration::from_millis(30),
            Duration::from_millis(5),
            || async { Ok(Poll::Pending) },
        )
        .await
        .unwrap();
        assert_eq!(never, None);
        assert!(started.elapsed() >= Duration::from_millis(30));

        let failed: Result<Option<()>, _> =
            retry_until(Duration::from_secs(5), Duration::from_millis(1), || async {
                Err(StoreError::bug("broken"))
            })
            .await;
        assert!(failed.is_err());
    }
}
