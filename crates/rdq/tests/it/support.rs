//! Test jobs that run until the test says so.
//!
//! A [`Gates`] job records that it started, then waits for the test to
//! [`finish`](Gates::finish) it with a result. If its future is dropped first
//! (cancel, timeout), that is recorded too. Tests run on a current-thread
//! runtime with the clock paused, and [`settle`] lets every ready task run.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdq::DispatchQueue;
use tokio::sync::oneshot;

pub(crate) type Out = Result<u64, String>;
pub(crate) type Queue = DispatchQueue<u64, u64, String>;
pub(crate) type Finished = rdq::Job<u64, u64, String>;

#[derive(Default)]
struct Inner {
    started: Vec<u64>,
    dropped: Vec<u64>,
    waiting: HashMap<u64, oneshot::Sender<Out>>,
}

#[derive(Clone, Default)]
pub(crate) struct Gates(Arc<Mutex<Inner>>);

/// Records that a job's future was dropped before it finished.
struct DropFlag {
    key: u64,
    gates: Gates,
    armed: bool,
}

impl Drop for DropFlag {
    fn drop(&mut self) {
        if self.armed {
            self.gates.0.lock().unwrap().dropped.push(self.key);
        }
    }
}

impl Gates {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The job function: arg `k` starts, waits for `finish(k, ..)`.
    #[allow(clippy::type_complexity)] // the boxed future is the point
    pub(crate) fn job(
        &self,
    ) -> impl Fn(u64) -> Pin<Box<dyn Future<Output = Out> + Send>> + Send + Sync + 'static {
        let gates = self.clone();
        move |key| {
            let gates = gates.clone();
            let rx = {
                let mut inner = gates.0.lock().unwrap();
                inner.started.push(key);
                let (tx, rx) = oneshot::channel();
                inner.waiting.insert(key, tx);
                rx
            };
            Box::pin(async move {
                let mut flag = DropFlag {
                    key,
                    gates,
                    armed: true,
                };
                let out = rx.await.unwrap_or_else(|_| Err("gate closed".into()));
                flag.armed = false;
                out
            })
        }
    }

    /// A queue of this job function, width `width`, on the current runtime.
    pub(crate) fn queue(&self, width: usize) -> Queue {
        DispatchQueue::builder(self.job()).width(width).build()
    }

    /// Lets job `key` finish with `out`. Panics if it is not running.
    pub(crate) fn finish(&self, key: u64, out: Out) {
        let tx = self
            .0
            .lock()
            .unwrap()
            .waiting
            .remove(&key)
            .unwrap_or_else(|| panic!("job {key} is not waiting"));
        let _ = tx.send(out);
    }

    /// Keys in the order their jobs started.
    pub(crate) fn started(&self) -> Vec<u64> {
        self.0.lock().unwrap().started.clone()
    }

    /// Keys whose futures were dropped before finishing.
    pub(crate) fn dropped(&self) -> Vec<u64> {
        self.0.lock().unwrap().dropped.clone()
    }
}

/// Lets every task that can run, run. Needs a paused clock: the runtime
/// advances time only once nothing else is ready.
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_micros(1)).await;
}

/// The ids of a snapshot.
///
/// Job ids are unique in the process, so a queue's first job is not id 1 when
/// other tests made queues first: tests put args 1, 2, 3, … in put order and
/// name jobs by arg.
pub(crate) fn ids(infos: &[rdq::JobInfo<u64>]) -> Vec<u64> {
    infos.iter().map(|i| i.arg).collect()
}

/// Polls a future once; `Some` if it was ready.
pub(crate) fn now_or_never<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    match Pin::new(fut).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
