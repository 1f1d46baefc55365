//! Named tasks with one cancellation token and a shutdown deadline.
//!
//! Shutdown is a protocol: cancel, wait up to the deadline, then abort and name
//! whatever did not stop in time.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Tasks {
    token: CancellationToken,
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl Tasks {
    pub fn new() -> Self {
        Self {
            token: CancellationToken::new(),
            running: Vec::new(),
        }
    }

    /// The token every task watches to know when to stop.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Starts `fut` under `name`. A task that ends on its own (error or panic)
    /// is logged by name; a panic does not take the daemon down.
    pub fn spawn<F>(&mut self, name: &'static str, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        log::debug!(task = name; "task started");
        let token = self.token.clone();
        let inner = tokio::spawn(fut);
        let handle = tokio::spawn(async move {
            match inner.await {
                Ok(()) if token.is_cancelled() => log::debug!(task = name; "task stopped"),
                Ok(()) => log::warn!(task = name; "task ended before shutdown"),
                Err(e) if e.is_panic() => log::error!(task = name; "task panicked"),
                Err(_) => log::debug!(task = name; "task aborted"),
            }
        });
        self.running.push((name, handle));
    }

    /// Cancels every task and waits up to `deadline` for them; returns the
    /// names of those that had to be aborted.
    pub async fn shutdown(self, deadline: Duration) -> Vec<&'static str> {
        self.token.cancel();
        let until = tokio::time::Instant::now() + deadline;
        let mut late = Vec::new();
        for (name, mut handle) in self.running {
            if tokio::time::timeout_at(until, &mut handle).await.is_err() {
                log::warn!(task = name; "task did not stop within {deadline:?}; aborting it");
                handle.abort();
                late.push(name);
            }
        }
        late
    }
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cooperative_tasks_stop_and_stuck_ones_are_named() {
        let mut tasks = Tasks::new();
        let t = tasks.token();
        tasks.spawn("polite", async move { t.cancelled().await });
        tasks.spawn("stuck", std::future::pending());
        let late = tasks.shutdown(Duration::from_millis(100)).await;
        assert_eq!(late, vec!["stuck"]);
    }
}
