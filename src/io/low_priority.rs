//! A low-priority runtime for bulk work that runs next to live traffic (producing a
//! snapshot onto local disk), so request handlers keep their latency while it runs.
//!
//! On Linux the scheduling policy and the nice value are per-thread attributes, so the
//! threads of this runtime (its workers and its blocking pool, and threads they start,
//! which inherit both) run below the API's runtime. They ask for `SCHED_IDLE`: the kernel
//! then lets any normal thread that wakes up (an upsert, a query) preempt them at once,
//! where a nice value only lowers their share and leaves them their time slice first. If
//! `SCHED_IDLE` is refused they keep nice 10. Alone on the machine the work runs at full
//! speed; on CPUs that are busy with requests it gets only a small share (`SCHED_IDLE`
//! weighs as nice 19 does, roughly), so a snapshot taken under full load takes longer.

use std::future::Future;
use std::sync::OnceLock;

use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// Nice value of the background threads (0 is normal, 19 the lowest), kept as the
/// fallback when `SCHED_IDLE` is not available.
pub(crate) const NICE: i32 = 10;

/// Lowers the calling thread's priority; best effort (the work still runs if refused).
fn lower_this_thread() {
    // Sets the policy (and nice 0, which `SCHED_IDLE` ignores), then the fallback nice.
    let _ = thread_priority::unix::set_thread_priority_and_policy(
        thread_priority::unix::thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    );
    // `who = None` is the calling thread.
    let _ = rustix::process::setpriority_process(None, NICE);
}

fn runtime() -> Option<&'static Runtime> {
    static RT: OnceLock<Option<Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("background")
            .enable_all()
            .on_thread_start(lower_this_thread)
            .build()
            .map_err(|e| tracing::warn!(error = %e, "no background runtime; bulk work runs at normal priority"))
            .ok()
    })
    .as_ref()
}

/// Runs `fut` on the background runtime (or, if it could not be built, on the current one).
pub(crate) fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match runtime() {
        Some(rt) => rt.spawn(fut),
        None => tokio::spawn(fut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheduling policy (field 41 of `/proc/thread-self/stat`; 5 is `SCHED_IDLE`)
    /// and the nice value (field 19) of the calling thread.
    fn policy_and_nice() -> (String, String) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("read stat");
        // The command name (field 2) may hold spaces; count fields after its `)`.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        (fields[41 - 3].to_string(), fields[19 - 3].to_string())
    }

    #[tokio::test]
    async fn work_and_the_threads_it_starts_run_at_idle_priority() {
        let here = policy_and_nice();
        let (worker, child) = spawn(async {
            let worker = policy_and_nice();
            let child = std::thread::spawn(policy_and_nice).join().expect("join");
            (worker, child)
        })
        .await
        .expect("task");
        // The test's own thread is untouched; background threads and their children are
        // SCHED_IDLE (5) with the fallback nice value.
        assert_eq!(here.0, "0");
        assert_eq!(worker, ("5".to_string(), NICE.to_string()));
        assert_eq!(child, worker);
        let blocking = spawn(async { tokio::task::spawn_blocking(policy_and_nice).await })
            .await
            .expect("task")
            .expect("blocking");
        assert_eq!(blocking, worker);
    }
}
