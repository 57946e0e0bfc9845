//! Background tasks otpd cannot do without (the offline sync, the fleet's audit writer) run for
//! as long as otpd does. tokio catches a task's panic and lets the runtime go on, which would
//! leave otpd up with the task's work silently undone: a panic instead ends otpd, non-zero, for
//! its supervisor to restart it (design invariant: recover, or exit for the supervisor).

#![forbid(unsafe_code)]

use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Where such a task's end is said.
pub type Log = Arc<dyn Fn(&str) + Send + Sync>;

/// Waits for `task`, which is never to return: if it ends by a panic, says so (`what` names the
/// task) and fires `fatal`, on which otpd exits.
pub async fn exit_on_panic(what: &str, task: JoinHandle<()>, log: Log, fatal: Arc<Notify>) {
    if let Err(ended) = task.await
        && ended.is_panic()
    {
        log(&format!("{what} failed; exiting so otpd is restarted"));
        fatal.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[test]
    fn a_task_that_panics_makes_otpd_exit() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let log: Log = {
            let lines = lines.clone();
            Arc::new(move |line: &str| lines.lock().unwrap().push(line.to_owned()))
        };
        let fatal = Arc::new(Notify::new());
        runtime.block_on(async {
            let task = tokio::spawn(async { panic!("a round failed") });
            exit_on_panic("the task", task, log, fatal.clone()).await;
            // Fired: a waiter now returns at once.
            tokio::time::timeout(Duration::from_secs(5), fatal.notified())
                .await
                .expect("fatal fired");
        });
        assert_eq!(
            *lines.lock().unwrap(),
            ["the task failed; exiting so otpd is restarted"]
        );
    }
}
