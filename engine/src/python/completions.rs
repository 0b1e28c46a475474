//! Core threads that hand results to the event loop without taking the GIL.
//!
//! A stage of the settlement saga (a ledger step, for one) used to run on a Python
//! worker thread: the thread took the GIL to start, released it for the blocking call,
//! took it again to finish, and woke the event loop through `call_soon_threadsafe`.
//! With batches of a dozen payments, those hand-overs (futex waits and wake-ups
//! between the event loop and four or five worker threads) cost more server CPU than
//! the steps themselves (benches/RESULTS.md, "Core threads complete into the event loop").
//!
//! Here a step's arguments are converted on the event loop's thread, the step runs on
//! a `Workers` thread that never touches Python, and its result goes into a
//! `Completions` queue. The queue's eventfd becomes readable when the first result
//! lands in an empty queue; the event loop watches it (`loop.add_reader`) and `drain`
//! sets every waiting future at once, with the GIL it already holds.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;

/// Turns a step's Rust result into the future's Python result, on the event loop.
pub(crate) type Finish = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

struct Done {
    future: Py<PyAny>,
    finish: Finish,
}

/// The shared end of a `Completions`: what a worker holds to hand a result back.
pub(crate) struct Queue {
    fd: OwnedFd,
    done: Mutex<Vec<Done>>,
}

impl Queue {
    /// Queues `future`'s result; wakes the event loop when the queue was empty (one
    /// write per drain, however many results land before it).
    pub(crate) fn complete(&self, future: Py<PyAny>, finish: Finish) {
        let was_empty = {
            let mut done = self.done.lock().expect("completion queue lock");
            let was_empty = done.is_empty();
            done.push(Done { future, finish });
            was_empty
        };
        if was_empty {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to an eventfd this queue owns.
            // EAGAIN (the counter at its maximum) still leaves it readable: nothing lost.
            unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                );
            }
        }
    }
}

/// The event loop's end of the queue: `fileno()` for `loop.add_reader`, `drain()` as
/// its callback.
#[pyclass(frozen, module = "quickpay_engine._engine")]
pub(crate) struct Completions {
    queue: Arc<Queue>,
}

impl Completions {
    pub(crate) fn queue(&self) -> Arc<Queue> {
        Arc::clone(&self.queue)
    }
}

#[pymethods]
impl Completions {
    #[new]
    fn new() -> PyResult<Self> {
        // SAFETY: eventfd takes no pointers; a negative result is an error, checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            let err = std::io::Error::last_os_error();
            return Err(PyOSError::new_err(format!("eventfd: {err}")));
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Completions {
            queue: Arc::new(Queue {
                fd,
                done: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The eventfd the event loop watches: readable while results wait.
    fn fileno(&self) -> RawFd {
        self.queue.fd.as_raw_fd()
    }

    /// Sets the result (or exception) of every future whose step has ended, in the
    /// order the steps ended; a future already done (cancelled by its caller) is left
    /// as it is. Returns how many were set.
    fn drain(&self, py: Python<'_>) -> PyResult<usize> {
        let mut counter = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer of 8; EAGAIN (nothing
        // signalled) is expected when a result arrived between a read and a take.
        unsafe {
            libc::read(
                self.queue.fd.as_raw_fd(),
                counter.as_mut_ptr().cast(),
                counter.len(),
            );
        }
        let done = std::mem::take(&mut *self.queue.done.lock().expect("completion queue lock"));
        let mut set = 0;
        // Every future taken is set, whatever happens to one of them: an error setting
        // one is raised once all the others are set, never leaving them waiting.
        let mut first_error = None;
        for Done { future, finish } in done {
            let future = future.bind(py);
            let outcome = future
                .call_method0(intern!(py, "done"))
                .and_then(|done| done.is_truthy())
                .and_then(|done| {
                    if done {
                        return Ok(false);
                    }
                    match finish(py) {
                        Ok(value) => future.call_method1(intern!(py, "set_result"), (value,)),
                        Err(err) => {
                            future.call_method1(intern!(py, "set_exception"), (err.value(py),))
                        }
                    }
                    .map(|_| true)
                });
            match outcome {
                Ok(true) => set += 1,
                Ok(false) => {}
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(set), Err)
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of named threads that run jobs with no Python: in the order given, except
/// that a job given by `spawn_first` goes ahead of every `spawn` job still waiting.
/// Started on first use, so a process that only opens the ledger to read it (or forks
/// before serving) has none, and joined by `close` after the jobs queued before it.
pub(crate) struct Workers {
    name: &'static str,
    threads: usize,
    state: Mutex<Option<Running>>,
}

#[derive(Default)]
struct Lanes {
    first: VecDeque<Job>,
    rest: VecDeque<Job>,
    closed: bool,
}

#[derive(Default)]
struct Jobs {
    lanes: Mutex<Lanes>,
    ready: Condvar,
}

impl Jobs {
    /// The next job, or None once closed and drained.
    fn next(&self) -> Option<Job> {
        let mut lanes = self.lanes.lock().expect("job queue lock");
        loop {
            if let Some(job) = lanes.first.pop_front().or_else(|| lanes.rest.pop_front()) {
                return Some(job);
            }
            if lanes.closed {
                return None;
            }
            lanes = self.ready.wait(lanes).expect("job queue lock");
        }
    }

    /// No more jobs: the threads end once the queued ones are done.
    fn close(&self) {
        self.lanes.lock().expect("job queue lock").closed = true;
        self.ready.notify_all();
    }
}

struct Running {
    jobs: Arc<Jobs>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    pub(crate) const fn new(name: &'static str, threads: usize) -> Workers {
        Workers {
            name,
            threads,
            state: Mutex::new(None),
        }
    }

    /// Runs `job` on one of the threads, after the jobs given before it.
    pub(crate) fn spawn(&self, job: Job) -> std::io::Result<()> {
        self.give(job, false)
    }

    /// Runs `job` on one of the threads, ahead of every `spawn` job still waiting (after
    /// the jobs under way and earlier `spawn_first` jobs).
    pub(crate) fn spawn_first(&self, job: Job) -> std::io::Result<()> {
        self.give(job, true)
    }

    fn give(&self, job: Job, first: bool) -> std::io::Result<()> {
        let mut state = self.state.lock().expect("workers lock");
        if state.is_none() {
            let jobs = Arc::new(Jobs::default());
            let mut handles = Vec::with_capacity(self.threads);
            for i in 0..self.threads {
                let jobs = Arc::clone(&jobs);
                handles.push(
                    std::thread::Builder::new()
                        .name(format!("{}_{i}", self.name))
                        .spawn(move || {
                            while let Some(job) = jobs.next() {
                                job();
                            }
                        })?,
                );
            }
            *state = Some(Running { jobs, handles });
        }
        let running = state.as_ref().expect("started above");
        {
            let mut lanes = running.jobs.lanes.lock().expect("job queue lock");
            if first {
                lanes.first.push_back(job);
            } else {
                lanes.rest.push_back(job);
            }
        }
        running.jobs.ready.notify_one();
        Ok(())
    }

    /// Lets the queued jobs finish, then joins the threads. Call without the GIL: a
    /// job never needs it, but the caller may be waited on by one that does.
    pub(crate) fn close(&self) {
        let running = self.state.lock().expect("workers lock").take();
        if let Some(Running { jobs, handles }) = running {
            jobs.close();
            for handle in handles {
                let _ = handle.join();
            }
        }
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Completions>()?;
    Ok(())
}

impl Drop for Workers {
    /// Without `close`: the threads end once the jobs queued are done (not joined), as
    /// they would once their channel closed.
    fn drop(&mut self) {
        let running = self.state.get_mut().map_or(None, Option::take);
        if let Some(Running { jobs, .. }) = running {
            jobs.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_job_goes_ahead_of_the_waiting_ones_not_the_one_under_way() {
        let workers = Workers::new("test_lanes", 1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let (started, wait_started) = std::sync::mpsc::channel();
        let (release, wait_release) = std::sync::mpsc::channel::<()>();
        let log = |name: &'static str| {
            let order = Arc::clone(&order);
            Box::new(move || order.lock().unwrap().push(name)) as Job
        };
        let under_way = log("under way");
        workers
            .spawn(Box::new(move || {
                started.send(()).unwrap();
                wait_release.recv().unwrap();
                under_way();
            }))
            .unwrap();
        wait_started.recv().unwrap();
        workers.spawn(log("rest 1")).unwrap();
        workers.spawn_first(log("first 1")).unwrap();
        workers.spawn(log("rest 2")).unwrap();
        workers.spawn_first(log("first 2")).unwrap();
        release.send(()).unwrap();
        workers.close();
        assert_eq!(
            *order.lock().unwrap(),
            ["under way", "first 1", "first 2", "rest 1", "rest 2"]
        );
    }

    #[test]
    fn dropped_without_close_the_threads_end_after_their_jobs() {
        let (ran, seen) = std::sync::mpsc::channel();
        let workers = Workers::new("test_drop", 2);
        workers
            .spawn(Box::new(move || ran.send(()).unwrap()))
            .unwrap();
        let handles: Vec<_> = {
            let mut state = workers.state.lock().unwrap();
            let running = state.as_mut().unwrap();
            std::mem::take(&mut running.handles)
        };
        drop(workers);
        for handle in handles {
            handle.join().unwrap();
        }
        seen.recv().unwrap();
    }
}
