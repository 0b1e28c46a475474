//! The gateway adapters' HTTP transport: reqwest (hyper, rustls) on a tokio runtime of
//! its own.
//!
//! Why it is here and not in Python: with aiohttp, building, writing, reading and
//! parsing each gateway request held the GIL on the event loop's thread, a third of
//! that thread's time per payment, in the same lock the gRPC server and the store need.
//! Here a turn's requests are one `send_many` call that releases the GIL while they
//! run concurrently on the runtime's threads; Python sees one answer per request.
//!
//! Every request ends in exactly one of three ways, because the router's safety rests
//! on telling them apart (see `quickpay_engine.gateways.client`): answered (a status and
//! a body), unreachable (the connection could not be made, so nothing was sent), or
//! ambiguous (it may have arrived: timeout, dropped connection, unreadable answer).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;

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

/// `send_many` takes at most this many requests; more is refused before any is sent
/// (the router sends at most 4,096 sales in one batch, plus a few lookups).
pub(super) const SEND_MANY_MAX: usize = 8_192;
/// A gateway's answer is read up to this size; a longer one leaves the request's fate
/// unknown (a day's settlement report of 100,000 captures is about 20 MB).
const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// The runtime's worker threads: HTTP here is I/O bound, and the machine the engine is
/// sized for has two cores shared with the event loop and the store.
const WORKER_THREADS: usize = 2;
/// A request's timeout is at most this; more is refused as a setting error.
pub(super) const TIMEOUT_MAX_S: f64 = 3_600.0;

/// How one request ended (the first element of each answer).
pub(super) const ANSWERED: u8 = 0;
const UNREACHABLE: u8 = 1;
pub(super) const AMBIGUOUS: u8 = 2;

/// The runtime all pools share, started on first use and kept for the process.
pub(super) fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
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

/// One request: (method, path and query, JSON body or None, timeout in seconds, the
/// name of a response header to return or None).
type Request = (String, String, Option<Vec<u8>>, f64, Option<String>);

/// One request's answer as Python sees it: (outcome, status, body, header, error).
type Answer<'py> = (u8, u16, Bound<'py, PyBytes>, Option<String>, &'static str);

/// How a request ended, before conversion to Python.
pub(super) struct Reply {
    pub(super) outcome: u8,
    pub(super) status: u16,
    pub(super) body: Vec<u8>,
    header: Option<String>,
    pub(super) error: &'static str,
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
    pub(super) client: reqwest::Client,
    pub(super) base: reqwest::Url,
    // Requests past this many in flight wait for a permit, inside their timeout.
    pub(super) permits: Arc<Semaphore>,
    // The gateway's sale slots (`sale_many`, src/python/sale.rs): sales past this many
    // in flight wait for one, whichever call they came in.
    pub(super) sales: Arc<Semaphore>,
}

#[pymethods]
impl HttpPool {
    /// A pool for the gateway at `base_url` (http:// or https://): at most
    /// `connections_max` requests in flight (the rest wait for one to end, inside their
    /// own timeout), of which at most `sales_max` sales (`sale_many`; default
    /// `connections_max`), idle connections closed after `keepalive_s`.
    #[new]
    #[pyo3(signature = (
        base_url, *, connections_max, keepalive_s, connect_timeout_s = 5.0, sales_max = None,
    ))]
    fn new(
        base_url: &str,
        connections_max: usize,
        keepalive_s: f64,
        connect_timeout_s: f64,
        sales_max: Option<usize>,
    ) -> PyResult<HttpPool> {
        if connections_max == 0 {
            return Err(HttpSetupError::new_err(
                "connections_max must be at least 1",
            ));
        }
        let sales_max = sales_max.unwrap_or(connections_max);
        if sales_max == 0 {
            return Err(HttpSetupError::new_err("sales_max must be at least 1"));
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
        Ok(HttpPool {
            client,
            base,
            permits: Arc::new(Semaphore::new(connections_max)),
            sales: Arc::new(Semaphore::new(sales_max)),
        })
    }

    /// Sends every request at once and waits, without the GIL, until each has ended.
    ///
    /// Returns, per request, (outcome, status, body, header, error): outcome 0 answered
    /// (status and body are the gateway's), 1 unreachable (nothing was sent: no
    /// connection, or no free one before the timeout, error "busy"), 2 ambiguous (it
    /// may have been processed); error names what went wrong, for logs. A method, path
    /// or timeout that cannot be used is refused (`HttpSetupError`) before any is sent.
    fn send_many<'py>(
        &self,
        py: Python<'py>,
        requests: Vec<Request>,
    ) -> PyResult<Vec<Answer<'py>>> {
        if requests.len() > SEND_MANY_MAX {
            return Err(BatchTooLarge::new_err(format!(
                "send_many of {} requests is over the bound of {SEND_MANY_MAX}",
                requests.len()
            )));
        }
        let runtime = runtime()?;
        let mut prepared = Vec::with_capacity(requests.len());
        for (method, path, body, timeout_s, header) in requests {
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
            prepared.push((builder, timeout, header));
        }
        let replies = py.detach(|| {
            runtime.block_on(async {
                let handles: Vec<_> = prepared
                    .into_iter()
                    .map(|(builder, timeout, header)| {
                        let permits = Arc::clone(&self.permits);
                        runtime.spawn(bounded(permits, builder, timeout, header))
                    })
                    .collect();
                let mut replies = Vec::with_capacity(handles.len());
                for handle in handles {
                    // A task that panicked leaves its request's fate unknown.
                    replies.push(
                        handle
                            .await
                            .unwrap_or_else(|_| Reply::failed(AMBIGUOUS, "panic")),
                    );
                }
                replies
            })
        });
        Ok(replies
            .into_iter()
            .map(|r| {
                let body = PyBytes::new(py, &r.body);
                (r.outcome, r.status, body, r.header, r.error)
            })
            .collect())
    }
}

/// One request within its timeout, once a connection permit is held: nothing is sent
/// before that, so one that found no permit in its time never left (unreachable, busy).
pub(super) async fn bounded(
    permits: Arc<Semaphore>,
    builder: reqwest::RequestBuilder,
    timeout: Duration,
    header: Option<String>,
) -> Reply {
    let start = tokio::time::Instant::now();
    match tokio::time::timeout(timeout, permits.acquire_owned()).await {
        Ok(Ok(_permit)) => {
            let left = timeout.saturating_sub(start.elapsed());
            tokio::time::timeout(left, send(builder, header))
                .await
                .unwrap_or_else(|_| Reply::failed(AMBIGUOUS, "timeout"))
        }
        _ => Reply::failed(UNREACHABLE, "busy"),
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
    m.add("SEND_MANY_MAX", SEND_MANY_MAX)?;
    Ok(())
}
