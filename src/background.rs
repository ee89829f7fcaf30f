//! A low-priority runtime for bulk work that runs next to live traffic (producing a
//! snapshot onto local disk), so request handlers keep their latency while it runs.
//!
//! On Linux the nice value is a per-thread attribute, so the threads of this runtime (its
//! workers and its blocking pool, and threads they start, which inherit it) run at a lower
//! priority than the API's runtime: when both want the two cores, upserts win, and the bulk
//! work gets whatever is left. Alone on the machine it runs at full speed.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// Nice value of the background threads (0 is normal, 19 the lowest).
pub(crate) const NICE: i32 = 10;

fn runtime() -> Option<&'static Runtime> {
    static RT: OnceLock<Option<Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("background")
            .enable_all()
            // `who = 0` is the calling thread; best effort (the work still runs if refused).
            .on_thread_start(|| {
                let _ = rustix::process::setpriority_process(None, NICE);
            })
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
