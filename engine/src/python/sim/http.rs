//! The simulator's HTTP/JSON acquirer API, served by hyper on the simulator's runtime.
//!
//! ```text
//! GET  /health                                   readiness: {"status": "ok", "gateway"}
//! POST /v1/payments/sale                         authorize and capture
//! POST /v1/payments/authorize                    authorize only
//! POST /v1/payments/{merchant_reference}/capture {"amount_minor"?}
//! POST /v1/payments/{merchant_reference}/void    cancel; an unknown reference is
//!                                                tombstoned (technical cancel)
//! POST /v1/payments/{merchant_reference}/refunds {"refund_reference", "amount_minor",
//!                                                 "currency"}
//! GET  /v1/payments/{merchant_reference}         status lookup (404 NOT_FOUND)
//! GET  /v1/reports/settlement?business_day=YYYY-MM-DD[&inject=KIND:N,...&inject_seed=S]
//!                                                the day's settlement CSV; what was
//!                                                injected is in X-Quickpay-Injected
//! GET|PUT /sim/faults                            the fault model (a test and demo hook,
//!                                                not part of the acquirer API)
//! ```
//!
//! Sale and authorize take {"merchant_reference", "amount_minor", "currency", "method"}
//! where method is {"kind": "card", "pan", "expiry_month", "expiry_year"} |
//! {"kind": "wallet", "provider", "wallet_id"} | {"kind": "bank_account", "iban"} |
//! {"kind": "carrier_balance"}. Errors are {"error": {"code", "message"}}; a message
//! never repeats a request value, so no card number reaches a log through an error.
//!
//! Sandbox cards, as real acquirers offer them: 4000000000000002 is declined
//! DO_NOT_HONOUR, 4000000000009995 INSUFFICIENT_FUNDS, 4000000000000069 EXPIRED_CARD,
//! 4100000000000019 SUSPECTED_FRAUD; a number failing the Luhn check is
//! INVALID_CARD_NUMBER.
//!
//! The two rare calls that are not on the sale path, the fault model's PUT (checked by
//! `FaultModel`) and the settlement report (built by `gateways.sim.report`), are
//! Python's, called with the GIL on a blocking thread; every other request is answered
//! here without Python.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::Hmac;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde_json::{Map, Value};
use sha2::Sha256;

use super::books::{year_month, Books, Job, Refusal, SaleIn};
use super::conn::Reset;
use super::faults::{Draw, Fault, FaultModel, Op, Roller};
use super::method::{integer, summarize, text};

/// Request bodies above this size are refused (413); a sale is well under 1 KiB.
const BODY_BYTES_MAX: usize = 16 * 1024;
/// References are 1 to this many printable characters.
const REFERENCE_CHARS_MAX: usize = 64;

/// A malformed request; the message names the field, never its value.
#[derive(Debug)]
pub(crate) struct BadRequest(pub(crate) String);

/// The response withheld by the lost-response or a reset fault: hyper closes the
/// connection (the reset faults have armed its `Reset` first).
#[derive(Debug)]
pub(super) struct Withheld;

impl std::fmt::Display for Withheld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("response withheld by the fault model")
    }
}

impl std::error::Error for Withheld {}

type Reply = Response<Full<Bytes>>;
/// What goes on the wire: a whole body, or the slow-body fault's trickle.
pub(super) type Served = Response<Either<Full<Bytes>, Trickle>>;

/// One gateway's state: its books, its fault dice, its fingerprint key, its Python
/// hooks (an object with `faults(body) -> str` and `report(query) -> (csv, injected,
/// filename)`, each raising ValueError for a bad request).
pub(super) struct Simulator {
    pub(super) name: String,
    pub(super) books: Books,
    pub(super) roller: Mutex<Roller>,
    /// The model as JSON, as GET /sim/faults answers it.
    pub(super) faults_json: Mutex<Bytes>,
    /// HMAC-SHA256 keyed with the fingerprint secret, cloned per use.
    pub(super) fingerprint: Hmac<Sha256>,
    pub(super) hooks: Py<PyAny>,
}

impl Simulator {
    fn draw(&self, op: Op, reference: &str) -> Draw {
        self.roller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .draw(op, reference)
    }

    fn hang(&self) -> Duration {
        let roller = self
            .roller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Duration::from_millis(roller.model.hang_ms)
    }
}

/// Answers one request. An `Err` closes the connection without an answer, with a
/// reset (RST) when the request drew one (it has armed `reset`).
pub(super) async fn handle(
    sim: Arc<Simulator>,
    reset: Reset,
    request: Request<Incoming>,
) -> Result<Served, Withheld> {
    match answer(sim, request).await {
        Answer::Reply(reply) => Ok(reply.map(Either::Left)),
        Answer::Slow { body, over } => {
            let mut reply = Response::new(Either::Right(Trickle::new(Bytes::from(body), over)));
            reply
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(reply)
        }
        Answer::Withheld => Err(Withheld),
        Answer::Reset => {
            reset.arm();
            Err(Withheld)
        }
    }
}

async fn answer(sim: Arc<Simulator>, request: Request<Incoming>) -> Answer {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let body = match Limited::new(request.into_body(), BODY_BYTES_MAX)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Answer::Reply(error(413, "BODY_TOO_LARGE", "the body is over 16 KiB"));
        }
        // The client went away mid-body: nothing to answer.
        Err(_) => return Answer::Withheld,
    };
    let route = match (&method, segments.as_slice()) {
        (&Method::GET, ["health"]) => {
            let health = serde_json::json!({"status": "ok", "gateway": sim.name});
            return Answer::Reply(json(
                200,
                serde_json::to_vec(&health).expect("health serializes"),
            ));
        }
        (&Method::POST, ["v1", "payments", "sale"]) => Route::Sale { capture: true },
        (&Method::POST, ["v1", "payments", "authorize"]) => Route::Sale { capture: false },
        (&Method::POST, ["v1", "payments", r, "capture"]) => Route::Capture(decode(r)),
        (&Method::POST, ["v1", "payments", r, "void"]) => Route::Void(decode(r)),
        (&Method::POST, ["v1", "payments", r, "refunds"]) => Route::Refund(decode(r)),
        (&Method::GET, ["v1", "payments", r]) => Route::Lookup(decode(r)),
        (&Method::GET, ["v1", "reports", "settlement"]) => Route::Report,
        (&Method::GET, ["sim", "faults"]) => {
            let model = sim
                .faults_json
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            return Answer::Reply(json(200, model.to_vec()));
        }
        (&Method::PUT, ["sim", "faults"]) => Route::PutFaults,
        (_, ["health" | "v1" | "sim", ..]) if known_path(&segments) => {
            return Answer::Reply(error(405, "METHOD_NOT_ALLOWED", "method not allowed here"));
        }
        _ => return Answer::Reply(error(404, "NOT_FOUND", "no such endpoint")),
    };
    respond(sim, route, body, query, path).await
}

enum Route {
    Sale { capture: bool },
    Capture(Result<String, BadRequest>),
    Void(Result<String, BadRequest>),
    Refund(Result<String, BadRequest>),
    Lookup(Result<String, BadRequest>),
    Report,
    PutFaults,
}

async fn respond(
    sim: Arc<Simulator>,
    route: Route,
    body: Bytes,
    query: String,
    path: String,
) -> Answer {
    let outcome = match route {
        Route::Sale { capture } => sale(&sim, &body, capture, &path).await,
        Route::Capture(reference) => {
            let parsed = reference.and_then(|r| capture(r, &body));
            booked(&sim, Op::Capture, parsed, &path).await
        }
        Route::Void(reference) => read_only(&sim, reference, Op::Void).await,
        Route::Refund(reference) => {
            let parsed = reference.and_then(|r| refund(r, &body));
            booked(&sim, Op::Refund, parsed, &path).await
        }
        Route::Lookup(reference) => read_only(&sim, reference, Op::Lookup).await,
        Route::Report => return Answer::Reply(report(&sim, query).await),
        Route::PutFaults => return Answer::Reply(put_faults(&sim, body).await),
    };
    match outcome {
        Ok(answer) => answer,
        Err(Failure::Bad(BadRequest(message))) => {
            Answer::Reply(error(400, "INVALID_REQUEST", &message))
        }
        Err(Failure::Refused(r)) => Answer::Reply(error(r.status, r.code, &r.message)),
    }
}

/// How a request is answered, if it is.
enum Answer {
    Reply(Reply),
    /// 200 with this JSON body, trickled so that it takes `over` to arrive.
    Slow {
        body: Vec<u8>,
        over: Duration,
    },
    /// No answer: the connection closed (FIN).
    Withheld,
    /// No answer: the connection reset (RST).
    Reset,
}

enum Failure {
    Bad(BadRequest),
    Refused(Refusal),
}

impl From<BadRequest> for Failure {
    fn from(bad: BadRequest) -> Failure {
        Failure::Bad(bad)
    }
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Failure {
        Failure::Refused(refusal)
    }
}

async fn sale(
    sim: &Arc<Simulator>,
    body: &[u8],
    capture: bool,
    path: &str,
) -> Result<Answer, Failure> {
    let body = object(body)?;
    let reference = reference(text(&body, "merchant_reference")?)?;
    let amount_minor = integer(&body, "amount_minor")?;
    let currency = text(&body, "currency")?;
    if amount_minor <= 0 {
        return Err(BadRequest("amount_minor must be positive".into()).into());
    }
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(BadRequest("currency must be an ISO 4217 alpha code".into()).into());
    }
    let Some(method) = body.get("method").and_then(Value::as_object) else {
        return Err(BadRequest("method must be an object".into()).into());
    };
    let (summary, forced) = summarize(method, &sim.fingerprint, year_month(now_us()))?;
    let op = if capture { Op::Sale } else { Op::Authorize };
    let draw = sim.draw(op, &reference);
    let decline = forced
        .map(str::to_owned)
        .or(draw.decline.clone())
        .unwrap_or_default();
    let job = Job::Sale(SaleIn {
        merchant_reference: reference,
        amount_minor,
        currency: currency.to_owned(),
        method: summary,
        decline,
        capture,
    });
    with_faults(sim, draw, job, path).await
}

/// A capture of the payment `reference`: all it holds unless the body names an amount.
/// With the key its fault is drawn by (`booked`).
fn capture(reference: String, body: &[u8]) -> Result<(String, Job), BadRequest> {
    let body = if body.is_empty() {
        Map::new()
    } else {
        object(body)?
    };
    let amount_minor = match body.get("amount_minor") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_i64()
                .ok_or_else(|| BadRequest("amount_minor must be an integer".into()))?,
        ),
    };
    let job = Job::Capture {
        reference: reference.clone(),
        amount_minor,
    };
    Ok((reference, job))
}

/// A refund of the payment `reference`, keyed by its own reference.
fn refund(reference: String, body: &[u8]) -> Result<(String, Job), BadRequest> {
    let body = object(body)?;
    let refund_reference = self::reference(text(&body, "refund_reference")?)?;
    let job = Job::Refund {
        reference,
        refund_reference: refund_reference.clone(),
        amount_minor: integer(&body, "amount_minor")?,
        currency: text(&body, "currency")?.to_owned(),
    };
    Ok((refund_reference, job))
}

/// Books a parsed request with the latency and fault drawn for `op` and its key.
async fn booked(
    sim: &Arc<Simulator>,
    op: Op,
    parsed: Result<(String, Job), BadRequest>,
    path: &str,
) -> Result<Answer, Failure> {
    let (key, job) = parsed?;
    let draw = sim.draw(op, &key);
    with_faults(sim, draw, job, path).await
}

/// Void and lookup: latency only, never a transport fault, so an unknown outcome can
/// always be resolved.
async fn read_only(
    sim: &Arc<Simulator>,
    reference: Result<String, BadRequest>,
    op: Op,
) -> Result<Answer, Failure> {
    let reference = reference?;
    let draw = sim.draw(op, &reference);
    let job = match op {
        Op::Void => Job::Void { reference },
        _ => Job::Lookup { reference },
    };
    if draw.latency.is_zero() {
        return book(sim, job).await;
    }
    detached(sim, draw, job, String::new()).await
}

/// Books the request and applies its drawn fault. With no latency and no fault it runs
/// here: once the job is queued the books apply it, whether or not the client waits.
/// Otherwise it runs as a task of its own, so that a request held by the timeout fault
/// is still processed after the client hangs up, as at a real acquirer.
async fn with_faults(
    sim: &Arc<Simulator>,
    draw: Draw,
    job: Job,
    path: &str,
) -> Result<Answer, Failure> {
    if draw.latency.is_zero() && draw.fault == Fault::None {
        return book(sim, job).await;
    }
    detached(sim, draw, job, path.to_owned()).await
}

async fn detached(
    sim: &Arc<Simulator>,
    draw: Draw,
    job: Job,
    path: String,
) -> Result<Answer, Failure> {
    let sim = Arc::clone(sim);
    let worker = tokio::spawn(async move { faulted(&sim, &draw, job, &path).await });
    match worker.await {
        Ok(answer) => answer,
        Err(_) => Ok(Answer::Reply(task_failed("request"))),
    }
}

async fn book(sim: &Simulator, job: Job) -> Result<Answer, Failure> {
    let booked = sim.books.submit(job, now_us()).await?;
    Ok(Answer::Reply(json(200, booked.body)))
}

/// Applies the drawn latency and transport fault around booking the request. The
/// faults after booking (lost response, slow body, reset after) spare a replayed
/// request: a request booked before is always answered, so a retry can learn its fate.
async fn faulted(sim: &Simulator, draw: &Draw, job: Job, path: &str) -> Result<Answer, Failure> {
    sleep(draw.latency).await;
    match draw.fault {
        Fault::ResetBefore => {
            eprintln!("{}: injected reset before processing on {path}", sim.name);
            return Ok(Answer::Reset);
        }
        Fault::ServerError => {
            eprintln!("{}: injected server error on {path}", sim.name);
            return Ok(Answer::Reply(error(
                503,
                "SERVER_ERROR",
                "injected server error; nothing was processed",
            )));
        }
        Fault::Timeout => {
            // Held past any client deadline, then processed late, as an overloaded
            // acquirer does: the caller must look it up before doing anything else.
            eprintln!("{}: injected timeout on {path}", sim.name);
            sleep(sim.hang()).await;
        }
        Fault::None | Fault::LostResponse | Fault::SlowBody | Fault::ResetAfter => {}
    }
    let booked = sim.books.submit(job, now_us()).await?;
    if booked.replayed {
        return Ok(Answer::Reply(json(200, booked.body)));
    }
    match draw.fault {
        Fault::LostResponse => {
            eprintln!("{}: injected lost response on {path}", sim.name);
            sleep(sim.hang()).await;
            Ok(Answer::Withheld)
        }
        Fault::SlowBody => {
            eprintln!("{}: injected slow body on {path}", sim.name);
            Ok(Answer::Slow {
                body: booked.body,
                over: sim.hang(),
            })
        }
        Fault::ResetAfter => {
            eprintln!("{}: injected reset after processing on {path}", sim.name);
            Ok(Answer::Reset)
        }
        _ => Ok(Answer::Reply(json(200, booked.body))),
    }
}

/// The slow-body fault's body: half of it at once (with the status line and the
/// headers, Content-Length the whole body's), then the rest a byte at a time, evenly
/// over the given time. A caller that waits long enough gets the whole answer; one
/// whose deadline passes first has had bytes arriving all along, so only a deadline on
/// the whole exchange (not one on each read) ends its wait.
pub(super) struct Trickle {
    rest: Bytes,
    step: Duration,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Trickle {
    fn new(body: Bytes, over: Duration) -> Trickle {
        let trickled = u32::try_from(body.len() - body.len() / 2).unwrap_or(u32::MAX);
        Trickle {
            step: over / trickled.max(1),
            rest: body,
            pause: None,
        }
    }
}

impl Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            return Poll::Ready(None);
        }
        let n = match this.pause.as_mut() {
            None => {
                this.pause = Some(Box::pin(tokio::time::sleep(this.step)));
                (this.rest.len() / 2).max(1)
            }
            Some(pause) => {
                ready!(pause.as_mut().poll(cx));
                let next = pause.deadline() + this.step;
                pause.as_mut().reset(next);
                1
            }
        };
        Poll::Ready(Some(Ok(Frame::data(this.rest.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// The settlement report, built by Python from the books (a rare call).
async fn report(sim: &Arc<Simulator>, query: String) -> Reply {
    let built = call_hook(sim, "report", move |_py, hooks| {
        hooks
            .call_method1("report", (query,))
            .and_then(|out| out.extract::<(String, String, String)>())
    })
    .await;
    let (csv, injected, filename) = match built {
        Ok(built) => built,
        Err(refused) => return refused,
    };
    let mut reply = Response::new(Full::new(Bytes::from(csv)));
    let headers = reply.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    let disposition = format!("attachment; filename=\"{filename}\"");
    for (name, value) in [
        ("x-quickpay-injected", injected),
        ("content-disposition", disposition),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    reply
}

/// Replaces the fault model, as checked by Python's `FaultModel` (a rare call).
async fn put_faults(sim: &Arc<Simulator>, body: Bytes) -> Reply {
    let checked = call_hook(sim, "fault model", move |py, hooks| {
        hooks
            .call_method1("faults", (PyBytes::new(py, &body),))
            .and_then(|out| out.extract::<String>())
    })
    .await;
    let text = match checked {
        Ok(text) => text,
        Err(refused) => return refused,
    };
    let model: FaultModel = match serde_json::from_str(&text) {
        Ok(model) => model,
        Err(err) => return error(400, "INVALID_REQUEST", &format!("fault model: {err}")),
    };
    *sim.roller
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Roller::new(model);
    let text = Bytes::from(text);
    *sim.faults_json
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = text.clone();
    json(200, text.to_vec())
}

/// Runs `call` on the Python hooks, on a blocking thread (the hooks take the GIL); a
/// failure, the hook's or its task's, comes back as the reply that says it.
async fn call_hook<T: Send + 'static>(
    sim: &Arc<Simulator>,
    what: &str,
    call: impl FnOnce(Python<'_>, &Bound<'_, PyAny>) -> PyResult<T> + Send + 'static,
) -> Result<T, Reply> {
    let sim = Arc::clone(sim);
    let done = tokio::task::spawn_blocking(move || {
        Python::attach(|py| call(py, sim.hooks.bind(py)).map_err(|err| hook_error(py, &err)))
    })
    .await;
    match done {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(failed)) => Err(failed.reply()),
        Err(_) => Err(task_failed(what)),
    }
}

/// The answer of a request whose task panicked or was cancelled.
fn task_failed(what: &str) -> Reply {
    error(500, "INTERNAL", &format!("the {what}'s task failed"))
}

/// A Python hook's failure, as its answer will say it.
struct HookError {
    status: u16,
    code: &'static str,
    message: String,
}

impl HookError {
    fn reply(&self) -> Reply {
        error(self.status, self.code, &self.message)
    }
}

/// A hook's ValueError is the caller's mistake (400, its message); anything else ours.
fn hook_error(py: Python<'_>, err: &PyErr) -> HookError {
    if err.is_instance_of::<PyValueError>(py) {
        return HookError {
            status: 400,
            code: "INVALID_REQUEST",
            message: err.value(py).to_string(),
        };
    }
    eprintln!("simulator hook failed: {err}");
    HookError {
        status: 500,
        code: "INTERNAL",
        message: "the simulator's hook failed".into(),
    }
}

/// The request body as a JSON object.
fn object(body: &[u8]) -> Result<Map<String, Value>, BadRequest> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(BadRequest("body must be a JSON object".into())),
    }
}

/// A path segment, percent-decoded, as a reference.
fn decode(segment: &str) -> Result<String, BadRequest> {
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| BadRequest("references must be UTF-8".into()))?;
    reference(&decoded)
}

/// A checked reference: 1 to 64 printable characters.
fn reference(text: &str) -> Result<String, BadRequest> {
    let chars = text.chars().count();
    if chars == 0 || chars > REFERENCE_CHARS_MAX || !text.chars().all(printable) {
        return Err(BadRequest(format!(
            "references must be 1 to {REFERENCE_CHARS_MAX} printable characters"
        )));
    }
    Ok(text.to_owned())
}

/// Printable as Python's str.isprintable() has it for what references hold: no control
/// characters, no whitespace but the space, no invisible format characters.
fn printable(c: char) -> bool {
    let format = matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{feff}');
    !(c.is_control() || (c.is_whitespace() && c != ' ') || format)
}

fn known_path(segments: &[&str]) -> bool {
    matches!(
        segments,
        ["health"]
            | ["v1", "payments", "sale" | "authorize"]
            | ["v1", "payments", _]
            | ["v1", "payments", _, "capture" | "void" | "refunds"]
            | ["v1", "reports", "settlement"]
            | ["sim", "faults"]
    )
}

fn json(status: u16, body: Vec<u8>) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    json(
        status,
        serde_json::to_vec(&body).expect("an error serializes"),
    )
}

async fn sleep(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

fn now_us() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}
