//! The gateway simulator's server (`quickpay gateway-sim`): one simulated acquirer,
//! answering HTTP from Rust so that a load benchmark of the engine measures the engine
//! and not its gateways.
//!
//! Threads: one runs a current-thread tokio runtime (hyper's connections, the fault
//! model's sleeps and hangs, the request tasks); one owns the SQLite books and commits
//! what the requests ask in groups (`books`). Python starts it (flags, the fault model's
//! checks, the fingerprint key), waits for a signal or its stdin to close, and stops it;
//! it is called back only for the fault model's PUT and the settlement report.

mod books;
mod conn;
mod faults;
mod http;
mod method;

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, KeyInit};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use tokio::sync::oneshot;

use books::Books;
use conn::{Conn, Reset};
use faults::{FaultModel, Roller};
use http::Simulator;

/// On stop, requests still held by a fault get this long before they are dropped, as
/// they would be if the acquirer went down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// After a failed accept (out of file descriptors), wait this long before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// A running simulator; `stop()` ends it.
#[pyclass(module = "quickpay_engine._engine")]
pub(crate) struct GatewaySim {
    port: u16,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

#[pymethods]
impl GatewaySim {
    /// Opens the books at `ledger_path` and serves gateway `name` on `host`:`port`
    /// (port 0 picks a free one, see `port`). `faults_json` is `FaultModel.to_dict()`
    /// as JSON, `key` the fingerprint secret, `hooks` the Python side (see `http`).
    /// A port that cannot be bound or books that cannot be opened raise OSError.
    #[new]
    #[allow(clippy::too_many_arguments)] // the Python constructor's own parameters
    #[pyo3(signature = (name, ledger_path, key, faults_json, host, port, hooks))]
    fn new(
        py: Python<'_>,
        name: String,
        ledger_path: PathBuf,
        key: Vec<u8>,
        faults_json: String,
        host: &str,
        port: u16,
        hooks: Py<PyAny>,
    ) -> PyResult<GatewaySim> {
        let model: FaultModel = serde_json::from_str(&faults_json)
            .map_err(|err| PyValueError::new_err(format!("fault model: {err}")))?;
        let address = (host, port)
            .to_socket_addrs()
            .map_err(|err| PyOSError::new_err(format!("{host}:{port}: {err}")))?
            .next()
            .ok_or_else(|| PyOSError::new_err(format!("{host}:{port}: no address")))?;
        // std's bind sets SO_REUSEADDR, so a restarted simulator gets its old port back.
        let listener = std::net::TcpListener::bind(address)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|err| PyOSError::new_err(format!("bind {address}: {err}")))?;
        let bound = listener
            .local_addr()
            .map_err(|err| PyOSError::new_err(err.to_string()))?
            .port();
        let (books, books_thread) = py
            .detach(|| Books::open(&ledger_path, &name))
            .map_err(|err| PyOSError::new_err(format!("books {}: {err}", ledger_path.display())))?;
        let sim = Arc::new(Simulator {
            name,
            books,
            roller: Mutex::new(Roller::new(model)),
            faults_json: Mutex::new(Bytes::from(faults_json)),
            fingerprint: Hmac::new_from_slice(&key)
                .map_err(|err| PyValueError::new_err(format!("fingerprint key: {err}")))?,
            hooks,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| PyOSError::new_err(format!("simulator runtime: {err}")))?;
        let (stop, stopped) = oneshot::channel();
        let server = std::thread::Builder::new()
            .name("quickpay-sim".into())
            .spawn(move || {
                runtime.block_on(serve(listener, Arc::clone(&sim), stopped));
                // Tasks still held by a fault are dropped with the runtime.
                drop(runtime);
                sim.books.stop();
            })
            .map_err(|err| PyOSError::new_err(format!("simulator thread: {err}")))?;
        Ok(GatewaySim {
            port: bound,
            stop: Mutex::new(Some(stop)),
            threads: Mutex::new(vec![server, books_thread]),
        })
    }

    /// The bound port.
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// Stops accepting, gives requests in flight a second, then closes the books.
    /// Idempotent.
    fn stop(&self, py: Python<'_>) {
        let stop = self
            .stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
            .collect();
        py.detach(|| {
            for thread in threads {
                // A panicked thread has already said why on stderr.
                let _ = thread.join();
            }
        });
    }
}

/// Accepts connections until `stopped`, then drains them for at most the grace.
async fn serve(
    listener: std::net::TcpListener,
    sim: Arc<Simulator>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("{}: cannot listen: {err}", sim.name);
            return;
        }
    };
    let graceful = GracefulShutdown::new();
    let http = hyper::server::conn::http1::Builder::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(err) => {
                        eprintln!("{}: accept failed: {err}", sim.name);
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let sim = Arc::clone(&sim);
                // A request drawing a reset fault arms it; the connection then ends in RST.
                let reset = Reset::default();
                let io = TokioIo::new(Conn::new(stream, reset.clone()));
                let service = service_fn(move |request| {
                    http::handle(Arc::clone(&sim), reset.clone(), request)
                });
                let connection = graceful.watch(http.serve_connection(io, service));
                tokio::spawn(async move {
                    // A connection ends with an error when a response is withheld, the
                    // connection reset or the client goes away; none is the simulator's
                    // problem.
                    let _ = connection.await;
                });
            }
            _ = &mut stopped => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}
