//! A batch's sales at one gateway in one call: the bodies written from the requests'
//! own strings, then sent and their answers read by the core on its HTTP runtime, with
//! the GIL released; Python sees columns (see
//! `quickpay_engine.gateways.router`, which keeps the failover policy, the breakers and
//! the deadlines, and `crate::gateway` for the wire format).

use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderMap;
use hyper::Uri;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::completions::Completions;
use super::http::{
    bounded, joined, post, runtime, uri_of, Body, Client, HttpPool, HttpSetupError, Reply,
    AMBIGUOUS, SEND_MANY_MAX,
};
use super::{check_len, BatchTooLarge, CoreError};
use crate::gateway::{read_answer, write_sale_body, Answer, Instrument, Payment};
use crate::validate::MethodKind;

/// How one sale ended, as Python reads it (the first column of the answer).
const PAID: u8 = 0; // a 2xx with a payment: its fields are in the other columns
const NOT_SENT: u8 = 1; // never left: no connection, or no free sale slot in time
const UNKNOWN: u8 = 2; // it may have been processed
const REFUSED: u8 = 3; // a 4xx: the error column holds its code, the message its text

/// A request still running after the time left this short is not started: it could not
/// finish (the router's BUDGET_MIN_S).
const SEND_MIN: Duration = Duration::from_millis(5);

/// The answer's columns: (outcome, status, state, gateway_reference, decline_reason,
/// captured_minor, refunded_minor, currency, error, message).
type Columns = (
    Vec<u8>,
    Vec<u16>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<i64>,
    Vec<i64>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
);

/// One sale's end, before it becomes a row of the columns.
struct Sold {
    outcome: u8,
    status: u16,
    payment: Payment,
    error: String,
    message: String,
}

impl Sold {
    fn failed(outcome: u8, error: &str) -> Sold {
        Sold {
            outcome,
            status: 0,
            payment: Payment::default(),
            error: error.to_owned(),
            message: String::new(),
        }
    }
}

/// One sale of a `Sales`: the request's own Python objects, read only when its body is
/// written (no copy before).
pub(crate) struct Sale {
    pub(crate) reference: Py<PyString>,
    pub(crate) amount_minor: i64,
    pub(crate) currency: Py<PyString>,
    // `MethodKind`'s number (the core's `Method`), and the member itself.
    pub(crate) kind: u8,
    pub(crate) kind_member: Py<PyAny>,
    pub(crate) pan: Py<PyString>,
    pub(crate) expiry_month: i64,
    pub(crate) expiry_year: i64,
    pub(crate) provider: Py<PyString>,
    pub(crate) wallet_id: Py<PyString>,
    pub(crate) iban: Py<PyString>,
    // Absolute, on the caller's clock (the router's: the event loop's).
    pub(crate) deadline: f64,
}

impl Sale {
    fn clone_ref(&self, py: Python<'_>) -> Sale {
        Sale {
            reference: self.reference.clone_ref(py),
            amount_minor: self.amount_minor,
            currency: self.currency.clone_ref(py),
            kind: self.kind,
            kind_member: self.kind_member.clone_ref(py),
            pan: self.pan.clone_ref(py),
            expiry_month: self.expiry_month,
            expiry_year: self.expiry_year,
            provider: self.provider.clone_ref(py),
            wallet_id: self.wallet_id.clone_ref(py),
            iban: self.iban.clone_ref(py),
            deadline: self.deadline,
        }
    }
}

/// A batch of sales, one row per payment, held by the core from the requests it read
/// (`Requests.sales`) or from columns (`Sales(...)`, the fields of `columns()` in
/// order). The router routes and sends it by row numbers: no list per field, and no
/// Python step per sale, between the requests and the bodies on the wire.
#[pyclass(frozen, module = "quickpay_engine._engine")]
pub(crate) struct Sales {
    sales: Vec<Sale>,
}

impl Sales {
    pub(crate) fn new(sales: Vec<Sale>) -> Sales {
        Sales { sales }
    }

    fn at(&self, row: usize) -> Result<&Sale, CoreError> {
        self.sales.get(row).ok_or(CoreError::RowOutOfRange {
            row: i64::try_from(row).unwrap_or(i64::MAX),
            len: self.sales.len(),
        })
    }
}

/// A route group: the `MethodKind` member, the currency and the rows.
type Route<'py> = (Bound<'py, PyAny>, Bound<'py, PyString>, Vec<usize>);

/// A column's text values, each checked to be a `str`.
type Texts<'py> = Vec<Bound<'py, PyString>>;

#[pymethods]
impl Sales {
    /// From columns of equal length: payment ids (the merchant references), amounts in
    /// minor units, currencies, `MethodKind` members, the instrument's fields (those of
    /// another kind are ignored: empty or 0) and each sale's absolute deadline.
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        payment_ids: Texts<'_>,
        amounts_minor: Vec<i64>,
        currencies: Texts<'_>,
        kinds: Vec<Bound<'_, PyAny>>,
        pans: Texts<'_>,
        expiry_months: Vec<i64>,
        expiry_years: Vec<i64>,
        providers: Texts<'_>,
        wallet_ids: Texts<'_>,
        ibans: Texts<'_>,
        deadlines: Vec<f64>,
    ) -> PyResult<Sales> {
        let n = payment_ids.len();
        for (column, len) in [
            ("amounts_minor", amounts_minor.len()),
            ("currencies", currencies.len()),
            ("kinds", kinds.len()),
            ("pans", pans.len()),
            ("expiry_months", expiry_months.len()),
            ("expiry_years", expiry_years.len()),
            ("providers", providers.len()),
            ("wallet_ids", wallet_ids.len()),
            ("ibans", ibans.len()),
            ("deadlines", deadlines.len()),
        ] {
            check_len(column, len, n)?;
        }
        let mut sales = Vec::with_capacity(n);
        for i in 0..n {
            let kind = &kinds[i];
            sales.push(Sale {
                reference: payment_ids[i].clone().unbind(),
                amount_minor: amounts_minor[i],
                currency: currencies[i].clone().unbind(),
                kind: kind.extract()?,
                kind_member: kind.clone().unbind(),
                pan: pans[i].clone().unbind(),
                expiry_month: expiry_months[i],
                expiry_year: expiry_years[i],
                provider: providers[i].clone().unbind(),
                wallet_id: wallet_ids[i].clone().unbind(),
                iban: ibans[i].clone().unbind(),
                deadline: deadlines[i],
            });
        }
        Ok(Sales { sales })
    }

    fn __len__(&self) -> usize {
        self.sales.len()
    }

    /// The columns, in the constructor's order (a new list each; for tests and tools).
    fn columns<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyList>>> {
        let s = &self.sales;
        let texts =
            |f: fn(&Sale) -> &Py<PyString>| PyList::new(py, s.iter().map(|x| f(x).bind(py)));
        Ok(vec![
            texts(|x| &x.reference)?,
            PyList::new(py, s.iter().map(|x| x.amount_minor))?,
            texts(|x| &x.currency)?,
            PyList::new(py, s.iter().map(|x| x.kind_member.bind(py)))?,
            texts(|x| &x.pan)?,
            PyList::new(py, s.iter().map(|x| x.expiry_month))?,
            PyList::new(py, s.iter().map(|x| x.expiry_year))?,
            texts(|x| &x.provider)?,
            texts(|x| &x.wallet_id)?,
            texts(|x| &x.iban)?,
            PyList::new(py, s.iter().map(|x| x.deadline))?,
        ])
    }

    /// Row `row`, in the constructor's order (for the rare sale sent on its own).
    fn row<'py>(&self, py: Python<'py>, row: usize) -> PyResult<Bound<'py, PyTuple>> {
        let x = self.at(row)?;
        (
            x.reference.bind(py),
            x.amount_minor,
            x.currency.bind(py),
            x.kind_member.bind(py),
            x.pan.bind(py),
            x.expiry_month,
            x.expiry_year,
            x.provider.bind(py),
            x.wallet_id.bind(py),
            x.iban.bind(py),
            x.deadline,
        )
            .into_pyobject(py)
    }

    /// Row `row`'s payment id (its merchant reference).
    fn payment_id<'py>(&self, py: Python<'py>, row: usize) -> PyResult<Bound<'py, PyString>> {
        Ok(self.at(row)?.reference.bind(py).clone())
    }

    /// Row `row`'s currency.
    fn currency<'py>(&self, py: Python<'py>, row: usize) -> PyResult<Bound<'py, PyString>> {
        Ok(self.at(row)?.currency.bind(py).clone())
    }

    /// Row `row`'s deadline.
    fn deadline(&self, row: usize) -> PyResult<f64> {
        Ok(self.at(row)?.deadline)
    }

    /// Rows `start` to `end` (clamped), as a batch of their own.
    fn slice(&self, py: Python<'_>, start: usize, end: usize) -> Sales {
        let end = end.min(self.sales.len());
        let start = start.min(end);
        Sales {
            sales: self.sales[start..end]
                .iter()
                .map(|x| x.clone_ref(py))
                .collect(),
        }
    }

    /// The rows by method and currency, in the order each pair first appears:
    /// `(kind member, currency, rows)` (a route is looked up once a pair).
    fn routes<'py>(&self, py: Python<'py>) -> PyResult<Vec<Route<'py>>> {
        // Currencies compared as Python compares them (a Python-built request may hold
        // a lone surrogate, which has no UTF-8 form); a batch has a handful of groups.
        let mut groups: Vec<(u8, &Bound<'py, PyString>, usize, Vec<usize>)> = Vec::new();
        for (row, x) in self.sales.iter().enumerate() {
            let currency = x.currency.bind(py);
            let mut found = None;
            for (k, (kind, c, _, _)) in groups.iter().enumerate() {
                if *kind == x.kind && (c.is(currency) || PyAnyMethods::eq(c.as_any(), currency)?) {
                    found = Some(k);
                    break;
                }
            }
            match found {
                Some(k) => groups[k].3.push(row),
                None => groups.push((x.kind, currency, row, vec![row])),
            }
        }
        Ok(groups
            .into_iter()
            .map(|(_, _, first, rows)| {
                let x = &self.sales[first];
                (
                    x.kind_member.bind(py).clone(),
                    x.currency.bind(py).clone(),
                    rows,
                )
            })
            .collect())
    }

    /// `rows` split by deadline: those with at least `budget_min` left at `now`, and
    /// those with less (the router's BUDGET_MIN_S: too late to start a request).
    fn due(
        &self,
        rows: Vec<usize>,
        now: f64,
        budget_min: f64,
    ) -> PyResult<(Vec<usize>, Vec<usize>)> {
        let mut live = Vec::with_capacity(rows.len());
        let mut late = Vec::new();
        for row in rows {
            if self.at(row)?.deadline - now < budget_min {
                late.push(row);
            } else {
                live.push(row);
            }
        }
        Ok((live, late))
    }
}

#[pymethods]
impl HttpPool {
    /// Sends `rows` of `sales` to this gateway at once, on the HTTP runtime, and sets
    /// `future` to the answers' columns (in the order of `rows`) through `done` (whose
    /// eventfd wakes the event loop) once each has ended: no thread waits for them. At
    /// most `sales_max` (the pool's setting) are in flight at a time across every call,
    /// the rest wait for a slot.
    ///
    /// Each sale's `timeouts_s` (one per row) and its end: its deadline's budget at
    /// `now` (the deadlines' clock), less what the router keeps to resolve an unknown
    /// outcome, min(`keep_s`, budget / 2). The sale waits for a slot at most
    /// min(timeout, end) seconds (else NOT_SENT "busy"), is not started with less than
    /// 5 ms to its end (NOT_SENT "late"), and runs at most min(timeout, time to its
    /// end); the end is counted from this call. The body of each is written here, from
    /// the requests' own strings.
    ///
    /// The columns (outcome, status, state, gateway_reference, decline_reason,
    /// captured_minor, refunded_minor, currency, error, message): outcome 0 a payment
    /// (its fields set), 1 not sent (error "connect", "busy" or "late"), 2 ambiguous
    /// (error says why, for logs), 3 refused by a 4xx (error its code, message its
    /// text). Refused, raised by this call before any sale is sent: a row out of range,
    /// an unknown kind, a bad timeout or a text with no UTF-8 form (`HttpSetupError`),
    /// `timeouts_s` not one per row (`InvalidBatch`), more than SEND_MANY_MAX rows
    /// (`BatchTooLarge`).
    #[allow(clippy::too_many_arguments)]
    fn sale_many_into(
        &self,
        py: Python<'_>,
        done: &Completions,
        future: Py<PyAny>,
        path: &str,
        sales: &Sales,
        rows: Vec<usize>,
        timeouts_s: Vec<f64>,
        now: f64,
        keep_s: f64,
    ) -> PyResult<()> {
        let uri = self.sale_uri(path, rows.len())?;
        check_len("timeouts_s", timeouts_s.len(), rows.len())?;
        let runtime = runtime()?;
        let bodies =
            prepare(py, sales, &rows, &timeouts_s, now, keep_s).map_err(HttpSetupError::new_err)?;
        // One task on the runtime builds the requests and starts a task per sale there:
        // the event loop's thread only wrote the bodies (a spawn from outside the
        // runtime wakes one of its threads each time).
        let seller = Seller {
            uri,
            headers: self.json_headers.clone(),
            sales: Arc::clone(&self.sales),
            permits: Arc::clone(&self.permits),
            client: Arc::clone(&self.client),
        };
        let queue = done.queue();
        runtime.spawn(async move {
            let columns = into_columns(seller.sell_all(bodies).await);
            queue.complete(
                future,
                Box::new(move |py| Ok(columns.into_pyobject(py)?.into_any().unbind())),
            );
        });
        Ok(())
    }
}

impl HttpPool {
    /// The sales' Uri for `path`, once their count is checked against the bound.
    fn sale_uri(&self, path: &str, n: usize) -> PyResult<Uri> {
        if n > SEND_MANY_MAX {
            return Err(BatchTooLarge::new_err(format!(
                "sale_many of {n} sales is over the bound of {SEND_MANY_MAX}"
            )));
        }
        let url = self
            .base
            .join(path)
            .map_err(|err| HttpSetupError::new_err(format!("path {path:?}: {err}")))?;
        if (url.scheme(), url.host_str(), url.port())
            != (self.base.scheme(), self.base.host_str(), self.base.port())
        {
            return Err(HttpSetupError::new_err(format!(
                "path {path:?}: names another host than the gateway's"
            )));
        }
        // The sales' Uri, parsed once for the call (each request holds a shared copy).
        uri_of(&url).map_err(HttpSetupError::new_err)
    }
}

/// A call's sales as written on the event loop's thread: the bodies in one buffer and,
/// per sale, its slice of it, its timeout and when it must have ended (counted from the
/// call, not from when its task starts).
struct Bodies {
    buffer: bytes::Bytes,
    parts: Vec<(std::ops::Range<usize>, Duration, Instant)>,
}

/// Each sale's body (in one buffer), timeout and end; a row that cannot be sent refuses
/// the whole call.
fn prepare(
    py: Python<'_>,
    sales: &Sales,
    rows: &[usize],
    timeouts_s: &[f64],
    now: f64,
    keep_s: f64,
) -> Result<Bodies, String> {
    let called = Instant::now();
    let mut bodies = Vec::with_capacity(rows.len() * 192);
    let mut parts = Vec::with_capacity(rows.len());
    for (&row, &timeout_s) in rows.iter().zip(timeouts_s) {
        let x = sales
            .at(row)
            .map_err(|_| format!("sale_many: row {row} out of range"))?;
        let method = match MethodKind::from_u8(x.kind) {
            MethodKind::Card => Instrument::Card {
                pan: text(py, &x.pan)?,
                expiry_month: x.expiry_month,
                expiry_year: x.expiry_year,
            },
            MethodKind::Wallet => Instrument::Wallet {
                provider: text(py, &x.provider)?,
                wallet_id: text(py, &x.wallet_id)?,
            },
            MethodKind::BankAccount => Instrument::BankAccount {
                iban: text(py, &x.iban)?,
            },
            MethodKind::CarrierBalance => Instrument::CarrierBalance,
            MethodKind::Missing => {
                return Err(format!("sale_many: method kind {}", x.kind));
            }
        };
        let timeout = duration("timeouts_s", timeout_s)?;
        let budget = x.deadline - now;
        let end_s = budget - keep_s.min(budget / 2.0);
        // An end already passed (or not a number) is a sale that is not sent ("late");
        // one past the longest timeout changes nothing, since a sale runs at most its
        // timeout, and is kept there (an infinite deadline).
        let end_s = if end_s.is_nan() {
            0.0
        } else {
            end_s.clamp(0.0, super::http::TIMEOUT_MAX_S)
        };
        let end = called + Duration::from_secs_f64(end_s);
        let start = bodies.len();
        write_sale_body(
            &mut bodies,
            text(py, &x.reference)?,
            x.amount_minor,
            text(py, &x.currency)?,
            method,
        );
        parts.push((start..bodies.len(), timeout, end));
    }
    Ok(Bodies {
        buffer: bytes::Bytes::from(bodies),
        parts,
    })
}

/// What a call's task on the runtime needs of the pool to send its sales.
struct Seller {
    uri: Uri,
    headers: HeaderMap,
    sales: Arc<Semaphore>,
    permits: Arc<Semaphore>,
    client: Arc<Client>,
}

impl Seller {
    /// Starts a task per sale (on the runtime: this runs there) and gives their ends in
    /// order.
    async fn sell_all(self, bodies: Bodies) -> Vec<Sold> {
        let handles: Vec<_> = bodies
            .parts
            .into_iter()
            .map(|(range, timeout, end)| {
                let body = bodies.buffer.slice(range);
                let request = post(&self.headers, self.uri.clone(), body);
                tokio::spawn(sell(
                    Arc::clone(&self.sales),
                    Arc::clone(&self.permits),
                    Arc::clone(&self.client),
                    request,
                    timeout,
                    end,
                ))
            })
            .collect();
        // A task that panicked leaves its sale's fate unknown.
        joined(handles, || Sold::failed(UNKNOWN, "panic")).await
    }
}

fn into_columns(sold: Vec<Sold>) -> Columns {
    let mut columns: Columns = Default::default();
    for s in sold {
        columns.0.push(s.outcome);
        columns.1.push(s.status);
        columns.2.push(s.payment.state);
        columns.3.push(s.payment.gateway_reference);
        columns.4.push(s.payment.decline_reason);
        columns.5.push(s.payment.captured_minor);
        columns.6.push(s.payment.refunded_minor);
        columns.7.push(s.payment.currency);
        columns.8.push(s.error);
        columns.9.push(s.message);
    }
    columns
}

/// One sale: a sale slot first (waiting for one is not the gateway's slowness, and a
/// sale that found none in time never left), then the request within what is left,
/// then its answer read.
async fn sell(
    sales: Arc<Semaphore>,
    permits: Arc<Semaphore>,
    client: Arc<Client>,
    request: hyper::Request<Body>,
    timeout: Duration,
    end: Instant,
) -> Sold {
    let start = Instant::now();
    let _slot =
        match tokio::time::timeout_at((start + timeout).min(end), sales.acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            _ => return Sold::failed(NOT_SENT, "busy"),
        };
    let left = end.saturating_duration_since(Instant::now());
    if left < SEND_MIN {
        return Sold::failed(NOT_SENT, "late");
    }
    let reply: Reply = bounded(permits, client, request, timeout.min(left), None).await;
    if reply.outcome != super::http::ANSWERED {
        let outcome = if reply.outcome == AMBIGUOUS {
            UNKNOWN
        } else {
            NOT_SENT
        };
        return Sold::failed(outcome, reply.error);
    }
    match read_answer(reply.status, &reply.body) {
        Answer::Payment(payment) => Sold {
            outcome: PAID,
            status: reply.status,
            payment,
            error: String::new(),
            message: String::new(),
        },
        Answer::Refused { code, message } => Sold {
            outcome: REFUSED,
            status: reply.status,
            payment: Payment::default(),
            error: code,
            message,
        },
        Answer::Ambiguous(why) => Sold {
            outcome: UNKNOWN,
            status: reply.status,
            payment: Payment::default(),
            error: why,
            message: String::new(),
        },
    }
}

/// A request's text as the body writes it, borrowed from its `str` (held by the
/// `Sales`); a lone surrogate (only a Python-built request holds one) cannot be sent.
fn text<'a>(py: Python<'a>, value: &'a Py<PyString>) -> Result<&'a str, String> {
    value
        .bind(py)
        .to_str()
        .map_err(|err| format!("sale_many: {err}"))
}

/// A timeout in seconds, refused when negative, not a number or over the bound.
fn duration(name: &str, value: f64) -> Result<Duration, String> {
    if !(0.0..=super::http::TIMEOUT_MAX_S).contains(&value) {
        return Err(format!(
            "{name} {value}: expected 0 to {}",
            super::http::TIMEOUT_MAX_S
        ));
    }
    Ok(Duration::from_secs_f64(value))
}
