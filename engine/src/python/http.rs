//! The gateway adapters' HTTP transport: hyper-util's pooled HTTP/1.1 client (hyper,
//! rustls) on a tokio runtime of its own.
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
//!
//! The stack is the one reqwest built for this pool before (hyper-util's legacy client
//! and pool, hyper-rustls with ring and the webpki roots, ALPN http/1.1, TCP_NODELAY,
//! TCP keepalive and user timeout, no proxy, no redirects followed, the connect timeout
//! around TCP and TLS), used directly: the gateway's URL is parsed once per pool, a
//! `sale_many` call's Uri once per call, and every request's headers are one
//! `HeaderMap` built with the pool (those reqwest sent: content-type for a body,
//! accept, host).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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

/// One request of `send_many`: (method, path and query, JSON body or None, timeout in
/// seconds, the name of a response header to return or None).
type Call = (String, String, Option<Vec<u8>>, f64, Option<String>);

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

/// A request's body (a sale's JSON, or none).
pub(super) type Body = Full<Bytes>;
/// The pooled client: HTTP/1.1 over TCP, or TLS for https.
pub(super) type Client = hyper_util::client::legacy::Client<Timed, Body>;

/// A keep-alive connection pool to one gateway.
#[pyclass(frozen, module = "quickpay_engine._engine")]
pub(crate) struct HttpPool {
    pub(super) client: Arc<Client>,
    pub(super) base: url::Url,
    // Every request's headers, built once: with a JSON body, and without one.
    pub(super) json_headers: HeaderMap,
    bare_headers: HeaderMap,
    // Requests past this many in flight wait for a permit, inside their timeout.
    pub(super) permits: Arc<Semaphore>,
    // The gateway's sale slots (`sale_many`, src/python/sale.rs): sales past this many
    // in flight wait for one, whichever call they came in.
    pub(super) sales: Arc<Semaphore>,
}

impl HttpPool {
    /// A request to `uri` with the pool's headers: a JSON body's, or none.
    pub(super) fn request(&self, method: Method, uri: Uri, body: Option<Bytes>) -> Request<Body> {
        let mut request = match body {
            Some(body) => post(&self.json_headers, uri, body),
            None => post(&self.bare_headers, uri, Bytes::new()),
        };
        *request.method_mut() = method;
        request
    }
}

/// A POST of `body` to `uri` with `headers` (the pool's, cloned).
pub(super) fn post(headers: &HeaderMap, uri: Uri, body: Bytes) -> Request<Body> {
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers.clone();
    request
}

/// Each task's result, in order; one that panicked gives `panicked()` in its place.
pub(super) async fn joined<T>(
    handles: Vec<tokio::task::JoinHandle<T>>,
    panicked: impl Fn() -> T,
) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap_or_else(|_| panicked()));
    }
    out
}

/// The Uri of a URL already checked to be absolute http(s) (url's serialization is
/// a valid Uri but for characters Uri refuses, which is then a setting error).
pub(super) fn uri_of(url: &url::Url) -> Result<Uri, String> {
    url.as_str()
        .parse::<Uri>()
        .map_err(|err| format!("url {:?}: {err}", url.as_str()))
}

/// The connector with the connect timeout around the whole connection, TCP and TLS (as
/// reqwest's was): a connection not made in time is a connect error, so its request
/// was never sent.
#[derive(Clone)]
pub(crate) struct Timed {
    inner: HttpsConnector<HttpConnector>,
    timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Timed {
    type Response = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let timeout = self.timeout;
        Box::pin(async move {
            tokio::time::timeout(timeout, connecting)
                .await
                .unwrap_or_else(|_| Err("connect timeout".into()))
        })
    }
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
        let base = url::Url::parse(base_url)
            .map_err(|err| HttpSetupError::new_err(format!("gateway url {base_url:?}: {err}")))?;
        if !matches!(base.scheme(), "http" | "https") || !base.has_host() {
            return Err(HttpSetupError::new_err(format!(
                "gateway url {base_url:?}: expected http:// or https://"
            )));
        }
        let host = match base.port() {
            Some(port) => format!("{}:{port}", base.host_str().unwrap_or_default()),
            None => base.host_str().unwrap_or_default().to_owned(),
        };
        let host = HeaderValue::from_str(&host)
            .map_err(|err| HttpSetupError::new_err(format!("gateway url {base_url:?}: {err}")))?;
        let keepalive = seconds("keepalive_s", keepalive_s)?;
        let connect_timeout = seconds("connect_timeout_s", connect_timeout_s)?;
        let mut http = HttpConnector::new();
        // Proxies are a setting of their own, never taken from the environment: this
        // connector knows none.
        http.enforce_http(false);
        http.set_nodelay(true);
        // A peer gone silent is found by TCP itself, as reqwest's defaults had it: keepalive
        // probes after 15 s idle, every 15 s, 3 of them, and unacknowledged data given up
        // after 30 s.
        http.set_keepalive(Some(Duration::from_secs(15)));
        http.set_keepalive_interval(Some(Duration::from_secs(15)));
        http.set_keepalive_retries(Some(3));
        http.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|err| HttpSetupError::new_err(format!("TLS: {err}")))?
        .with_root_certificates(rustls::RootCertStore::from_iter(
            webpki_roots::TLS_SERVER_ROOTS.iter().cloned(),
        ))
        .with_no_client_auth();
        let mut tls = tls;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = Timed {
            inner: HttpsConnector::from((http, tls)),
            timeout: connect_timeout,
        };
        // A gateway that redirects a payment call is misconfigured: a 3xx is answered
        // as it came, never followed (this client follows none).
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(keepalive)
            .pool_max_idle_per_host(connections_max)
            .build(connector);
        let mut bare_headers = HeaderMap::with_capacity(2);
        bare_headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        bare_headers.insert(HOST, host.clone());
        let mut json_headers = HeaderMap::with_capacity(3);
        json_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        json_headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        json_headers.insert(HOST, host);
        Ok(HttpPool {
            client: Arc::new(client),
            base,
            json_headers,
            bare_headers,
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
    fn send_many<'py>(&self, py: Python<'py>, requests: Vec<Call>) -> PyResult<Vec<Answer<'py>>> {
        if requests.len() > SEND_MANY_MAX {
            return Err(BatchTooLarge::new_err(format!(
                "send_many of {} requests is over the bound of {SEND_MANY_MAX}",
                requests.len()
            )));
        }
        let runtime = runtime()?;
        let mut prepared = Vec::with_capacity(requests.len());
        for (method, path, body, timeout_s, header) in requests {
            let method = Method::from_bytes(method.as_bytes())
                .map_err(|_| HttpSetupError::new_err(format!("HTTP method {method:?}")))?;
            let url = self
                .base
                .join(&path)
                .map_err(|err| HttpSetupError::new_err(format!("path {path:?}: {err}")))?;
            let uri = uri_of(&url).map_err(HttpSetupError::new_err)?;
            // A path naming another host (`//host/...`) is sent there, with its Host.
            let elsewhere = (url.scheme(), url.host_str(), url.port())
                != (self.base.scheme(), self.base.host_str(), self.base.port());
            if !(0.0..=TIMEOUT_MAX_S).contains(&timeout_s) {
                return Err(HttpSetupError::new_err(format!(
                    "timeout_s {timeout_s}: expected 0 to {TIMEOUT_MAX_S}"
                )));
            }
            let timeout = Duration::from_secs_f64(timeout_s);
            let mut request = self.request(method, uri, body.map(Bytes::from));
            if elsewhere {
                request.headers_mut().remove(HOST);
            }
            prepared.push((request, timeout, header));
        }
        let replies = py.detach(|| {
            runtime.block_on(async {
                let handles: Vec<_> = prepared
                    .into_iter()
                    .map(|(request, timeout, header)| {
                        let permits = Arc::clone(&self.permits);
                        let client = Arc::clone(&self.client);
                        runtime.spawn(bounded(permits, client, request, timeout, header))
                    })
                    .collect();
                // A task that panicked leaves its request's fate unknown.
                joined(handles, || Reply::failed(AMBIGUOUS, "panic")).await
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
    client: Arc<Client>,
    request: Request<Body>,
    timeout: Duration,
    header: Option<String>,
) -> Reply {
    let start = tokio::time::Instant::now();
    match tokio::time::timeout(timeout, permits.acquire_owned()).await {
        Ok(Ok(_permit)) => {
            let left = timeout.saturating_sub(start.elapsed());
            tokio::time::timeout(left, send(&client, request, header))
                .await
                .unwrap_or_else(|_| Reply::failed(AMBIGUOUS, "timeout"))
        }
        _ => Reply::failed(UNREACHABLE, "busy"),
    }
}

/// One request to its end.
async fn send(client: &Client, request: Request<Body>, header: Option<String>) -> Reply {
    let mut response = match client.request(request).await {
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
    let mut body = Vec::new();
    loop {
        match response.body_mut().frame().await {
            Some(Ok(frame)) => {
                let Ok(chunk) = frame.into_data() else {
                    continue; // trailers: not part of the answer
                };
                if body.len() + chunk.len() > BODY_BYTES_MAX {
                    return Reply::failed(AMBIGUOUS, "body too large");
                }
                body.extend_from_slice(&chunk);
            }
            None => break,
            Some(Err(_)) => return Reply::failed(AMBIGUOUS, "body"),
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
