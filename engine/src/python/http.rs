//! The gateway adapters' HTTP transport: reqwest (hyper, rustls) on a tokio runtime of
//! its own.
//!
//! Why it is here and not in Python: with aiohttp, building, writing, reading and
//! parsing each gateway request held the GIL on the event loop's thread, a third of
//! that thread's time per payment, in the same lock the gRPC server and the store need.
//! Here a whole batch of requests is one call that releases the GIL, and the requests
//! run concurrently on the runtime's threads; Python sees one answer per request.
//!
//! Every request ends in exactly one of three ways, because the router's safety rests
//! on telling them apart (see `quickpay_engine.gateways.client`): answered (a status and
//! a body), unreachable (the connection could not be made, so nothing was sent), or
//! ambiguous (it may have arrived: timeout, dropped connection, unreadable answer).

use std::sync::OnceLock;
use std::time::Duration;

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
const SEND_MANY_MAX: usize = 8_192;
/// The runtime's worker threads: HTTP here is I/O bound, and the machine the engine is
/// sized for has two cores shared with the event loop and the store.
const WORKER_THREADS: usize = 2;
/// A request's timeout is at least this (a zero or negative budget still gets an
/// attempt that fails fast as ambiguous rather than a panic in the timer).
const TIMEOUT_MIN: Duration = Duration::from_millis(1);

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

/// One request: (method, path and query, JSON body or None, timeout in seconds, the
/// name of a response header to return or None).
type Request = (String, String, Option<Vec<u8>>, f64, Option<String>);

/// One request's answer as Python sees it: (outcome, status, body, header, error).
type Answer<'py> = (u8, u16, Bound<'py, PyBytes>, Option<String>, &'static str);

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
}

#[pymethods]
impl HttpPool {
    /// A pool for the gateway at `base_url` (http:// or https://): at most
    /// `idle_per_host_max` idle connections kept, each closed after `keepalive_s` idle.
    #[new]
    #[pyo3(signature = (base_url, *, idle_per_host_max, keepalive_s, connect_timeout_s = 5.0))]
    fn new(
        base_url: &str,
        idle_per_host_max: usize,
        keepalive_s: f64,
        connect_timeout_s: f64,
    ) -> PyResult<HttpPool> {
        let base = reqwest::Url::parse(base_url)
            .map_err(|err| HttpSetupError::new_err(format!("gateway url {base_url:?}: {err}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(HttpSetupError::new_err(format!(
                "gateway url {base_url:?}: expected http:// or https://"
            )));
        }
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(idle_per_host_max)
            .pool_idle_timeout(seconds("keepalive_s", keepalive_s)?)
            .connect_timeout(seconds("connect_timeout_s", connect_timeout_s)?)
            // A gateway that redirects a payment call is misconfigured, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| HttpSetupError::new_err(format!("HTTP client: {err}")))?;
        Ok(HttpPool { client, base })
    }

    /// Sends every request at once and waits, without the GIL, until each has ended.
    ///
    /// Returns, per request, (outcome, status, body, header, error): outcome 0 answered
    /// (status and body are the gateway's), 1 unreachable (nothing was sent), 2
    /// ambiguous (it may have been processed); error names what went wrong, for logs.
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
            let timeout = Duration::try_from_secs_f64(timeout_s)
                .unwrap_or(TIMEOUT_MIN)
                .max(TIMEOUT_MIN);
            let mut builder = self.client.request(method, url).timeout(timeout);
            if let Some(body) = body {
                builder = builder
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
            }
            prepared.push((builder, header));
        }
        let replies = py.detach(|| {
            runtime.block_on(async {
                let handles: Vec<_> = prepared
                    .into_iter()
                    .map(|(builder, header)| runtime.spawn(send(builder, header)))
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

/// One request to its end.
async fn send(builder: reqwest::RequestBuilder, header: Option<String>) -> Reply {
    let response = match builder.send().await {
        Ok(response) => response,
        // A connect error is raised only while connecting: nothing was written.
        Err(err) if err.is_connect() => return Reply::failed(UNREACHABLE, "connect"),
        Err(err) if err.is_timeout() => return Reply::failed(AMBIGUOUS, "timeout"),
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
    match response.bytes().await {
        Ok(body) => Reply {
            outcome: ANSWERED,
            status,
            body: body.to_vec(),
            header,
            error: "",
        },
        Err(err) if err.is_timeout() => Reply::failed(AMBIGUOUS, "timeout"),
        Err(_) => Reply::failed(AMBIGUOUS, "body"),
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
