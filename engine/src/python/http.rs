//! The gateway adapters' HTTP transport: reqwest (hyper, rustls) on a tokio runtime of
//! its own.
//!
//! Why it is here and not in Python: with aiohttp, building, writing, reading and
//! parsing each gateway request held the GIL on the event loop's thread, a third of
//! that thread's time per payment, in the same lock the gRPC server and the store need.
//! Here the event loop hands over a turn's requests in one `submit` call that only
//! starts them; they run on the runtime's threads, and each answer is queued the moment
//! its request ends. One thread per pool waits on that queue with the GIL released
//! (`answers`) and hands what it finds to the event loop, so a slow request never holds
//! back the answers of the others.
//!
//! Every request ends in exactly one of three ways, because the router's safety rests
//! on telling them apart (see `quickpay_engine.gateways.client`): answered (a status and
//! a body), unreachable (the connection could not be made, so nothing was sent), or
//! ambiguous (it may have arrived: timeout, dropped connection, unreadable answer).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

use pyo3::create_exception;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::{BatchTooLarge, EngineError};

create_exception!(
    _engine,
    HttpSetupError,
    EngineError,
    "A gateway URL or HTTP client setting that cannot be used."
);

/// `submit` takes at most this many requests; more is refused before any is sent (the
/// router sends at most 4,096 sales in one batch, plus a few lookups).
const SUBMIT_MAX: usize = 8_192;
/// `answers` returns at most this many at once; the rest wait for the next call.
const ANSWERS_MAX: usize = 4_096;
/// A gateway's answer is read up to this size; a longer one leaves the request's fate
/// unknown (a day's settlement report of 100,000 captures is about 20 MB).
const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The runtime's worker threads: HTTP here is I/O bound, and the machine the engine is
/// sized for has two cores shared with the event loop and the store.
const WORKER_THREADS: usize = 2;
/// A request's timeout is at most this; more is refused as a setting error.
const TIMEOUT_MAX_S: f64 = 3_600.0;

/// How one request ended (the first element of each answer).
const ANSWERED: u8 = 0;
const UNREACHABLE: u8 = 1;
const AMBIGUOUS: u8 = 2;

/// The runtime all pools share, started on first use and kept for the process.
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("quickpay-http")
        .enable_all()
        .build()
        .map_err(|err| HttpSetupError::new_err(format!("HTTP runtime: {err}")))?;
    // Two threads racing here both built one; the loser's is dropped unused.
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// One request: (id, method, path and query, JSON body or None, timeout in seconds,
/// the name of a response header to return or None).
type Request = (u64, String, String, Option<Vec<u8>>, f64, Option<String>);

/// One request's answer as Python sees it: (id, outcome, status, body, header, error).
type Answer<'py> = (
    u64,
    u8,
    u16,
    Bound<'py, PyBytes>,
    Option<String>,
    &'static str,
);

/// How a request ended, before conversion to Python.
struct Reply {
    outcome: u8,
    status: u16,
    body: Vec<u8>,
    header: Option<String>,
    error: &'static str,
}

impl Reply {
    fn failed(outcome: u8, error: &'static str) -> Reply {
        Reply {
            outcome,
            status: 0,
            body: Vec::new(),
            header: None,
            error,
        }
    }
}

/// A keep-alive connection pool to one gateway.
#[pyclass(frozen, module = "quickpay_engine._engine")]
pub(crate) struct HttpPool {
    client: reqwest::Client,
    base: reqwest::Url,
    // Requests past this many in flight wait for a permit, inside their timeout.
    permits: Arc<Semaphore>,
    done: mpsc::UnboundedSender<(u64, Reply)>,
    // The one receiver; `answers` holds it while it waits (one waiting thread per pool).
    answered: Mutex<mpsc::UnboundedReceiver<(u64, Reply)>>,
}

#[pymethods]
impl HttpPool {
    /// A pool for the gateway at `base_url` (http:// or https://): at most
    /// `connections_max` requests in flight (the rest wait for one to end, inside their
    /// own timeout), idle connections closed after `keepalive_s`.
    #[new]
    #[pyo3(signature = (base_url, *, connections_max, keepalive_s, connect_timeout_s = 5.0))]
    fn new(
        base_url: &str,
        connections_max: usize,
        keepalive_s: f64,
        connect_timeout_s: f64,
    ) -> PyResult<HttpPool> {
        if connections_max == 0 {
            return Err(HttpSetupError::new_err(
                "connections_max must be at least 1",
            ));
        }
        let base = reqwest::Url::parse(base_url)
            .map_err(|err| HttpSetupError::new_err(format!("gateway url {base_url:?}: {err}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(HttpSetupError::new_err(format!(
                "gateway url {base_url:?}: expected http:// or https://"
            )));
        }
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections_max)
            // Proxies are a setting of their own, never taken from the environment.
            .no_proxy()
            .pool_idle_timeout(seconds("keepalive_s", keepalive_s)?)
            .connect_timeout(seconds("connect_timeout_s", connect_timeout_s)?)
            // A gateway that redirects a payment call is misconfigured, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| HttpSetupError::new_err(format!("HTTP client: {err}")))?;
        let (done, answered) = mpsc::unbounded_channel();
        Ok(HttpPool {
            client,
            base,
            permits: Arc::new(Semaphore::new(connections_max)),
            done,
            answered: Mutex::new(answered),
        })
    }

    /// Starts every request and returns at once; each answer is queued for `answers`
    /// when its request ends. A method, path or timeout that cannot be used is refused
    /// (`HttpSetupError`) before any request starts.
    fn submit(&self, requests: Vec<Request>) -> PyResult<()> {
        if requests.len() > SUBMIT_MAX {
            return Err(BatchTooLarge::new_err(format!(
                "submit of {} requests is over the bound of {SUBMIT_MAX}",
                requests.len()
            )));
        }
        let runtime = runtime()?;
        let mut prepared = Vec::with_capacity(requests.len());
        for (id, method, path, body, timeout_s, header) in requests {
            let method = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|_| HttpSetupError::new_err(format!("HTTP method {method:?}")))?;
            let url = self
                .base
                .join(&path)
                .map_err(|err| HttpSetupError::new_err(format!("path {path:?}: {err}")))?;
            if !(0.0..=TIMEOUT_MAX_S).contains(&timeout_s) {
                return Err(HttpSetupError::new_err(format!(
                    "timeout_s {timeout_s}: expected 0 to {TIMEOUT_MAX_S}"
                )));
            }
            let timeout = Duration::from_secs_f64(timeout_s);
            let mut builder = self.client.request(method, url);
            if let Some(body) = body {
                builder = builder
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
            }
            prepared.push((id, builder, timeout, header));
        }
        for (id, builder, timeout, header) in prepared {
            let permits = Arc::clone(&self.permits);
            let done = self.done.clone();
            runtime.spawn(async move {
                let start = tokio::time::Instant::now();
                // Nothing is sent until a permit is held: a request that found none in
                // its time never left (unreachable, "busy"), so no lookup is needed.
                let permit = tokio::time::timeout(timeout, permits.acquire_owned()).await;
                let reply = match permit {
                    Ok(Ok(_permit)) => {
                        let left = timeout.saturating_sub(start.elapsed());
                        tokio::time::timeout(left, send(builder, header))
                            .await
                            .unwrap_or_else(|_| Reply::failed(AMBIGUOUS, "timeout"))
                    }
                    _ => Reply::failed(UNREACHABLE, "busy"),
                };
                // The receiver is gone only when the pool is: nobody is waiting.
                let _ = done.send((id, reply));
            });
        }
        Ok(())
    }

    /// The answers of requests that have ended, each once: waits without the GIL up to
    /// `wait_s` for the first, then takes what else is ready (at most 4,096). Empty
    /// when none ended in time. One thread at a time waits; another waits behind it.
    fn answers<'py>(&self, py: Python<'py>, wait_s: f64) -> PyResult<Vec<Answer<'py>>> {
        let wait = seconds("wait_s", wait_s)?;
        let runtime = runtime()?;
        let replies = py.detach(|| {
            let mut answered = self.answered.lock().expect("answers lock");
            let mut replies = Vec::new();
            if let Ok(Some(first)) =
                runtime.block_on(async { tokio::time::timeout(wait, answered.recv()).await })
            {
                replies.push(first);
                while replies.len() < ANSWERS_MAX {
                    match answered.try_recv() {
                        Ok(reply) => replies.push(reply),
                        Err(_) => break,
                    }
                }
            }
            replies
        });
        Ok(replies
            .into_iter()
            .map(|(id, r)| {
                let body = PyBytes::new(py, &r.body);
                (id, r.outcome, r.status, body, r.header, r.error)
            })
            .collect())
    }
}

/// One request to its end.
async fn send(builder: reqwest::RequestBuilder, header: Option<String>) -> Reply {
    let response = match builder.send().await {
        Ok(response) => response,
        // A connect error is raised only while connecting: nothing was written.
        Err(err) if err.is_connect() => return Reply::failed(UNREACHABLE, "connect"),
        Err(_) => return Reply::failed(AMBIGUOUS, "request"),
    };
    let status = response.status().as_u16();
    let header = header.and_then(|name| {
        response
            .headers()
            .get(name.as_str())
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    });
    let mut response = response;
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= BODY_BYTES_MAX => {
                body.extend_from_slice(&chunk)
            }
            Ok(Some(_)) => return Reply::failed(AMBIGUOUS, "body too large"),
            Ok(None) => break,
            Err(_) => return Reply::failed(AMBIGUOUS, "body"),
        }
    }
    Reply {
        outcome: ANSWERED,
        status,
        body,
        header,
        error: "",
    }
}

/// A duration setting in seconds, refused when negative or not a number.
fn seconds(name: &str, value: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| HttpSetupError::new_err(format!("{name} {value}: expected seconds >= 0")))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<HttpPool>()?;
    m.add("HttpSetupError", py.get_type::<HttpSetupError>())?;
    m.add("SUBMIT_MAX", SUBMIT_MAX)?;
    Ok(())
}
