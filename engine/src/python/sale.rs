//! A batch's sales at one gateway in one call: the bodies built, sent, and the answers
//! read by the core with the GIL released; Python sees columns (see
//! `quickpay_engine.gateways.router`, which keeps the failover policy, the breakers and
//! the deadlines, and `crate::gateway` for the wire format).

use std::sync::Arc;
use std::time::Duration;

use hyper::Uri;
use pyo3::prelude::*;
use tokio::sync::Semaphore;

use super::completions::Completions;
use super::http::{
    bounded, runtime, uri_of, Body, Client, HttpPool, HttpSetupError, Reply, AMBIGUOUS,
    SEND_MANY_MAX,
};
use super::BatchTooLarge;
use crate::gateway::{read_answer, write_sale_body, Answer, Instrument, Payment};

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

#[pymethods]
impl HttpPool {
    /// Sends a batch's sales to this gateway at once, on the HTTP runtime, and sets
    /// `future` to the answers' columns through `done` (whose eventfd wakes the event
    /// loop) once each has ended: no thread waits for them. At most `sales_max` (the
    /// pool's setting) are in flight at a time across every call, the rest wait for a
    /// slot.
    ///
    /// `columns` (the client's `SaleRows`, read by field name), one row per sale:
    /// merchant references, amounts in minor units, currencies, method kinds ("card",
    /// "wallet", "bank_account", "carrier_balance") and the instrument's fields (those of another kind are ignored), then each
    /// sale's timeout and its end: the sale waits for a slot at most
    /// min(timeout, end) seconds (else NOT_SENT "busy"), is not started with less
    /// than 5 ms to its end (NOT_SENT "late"), and runs at most min(timeout, time to
    /// its end).
    ///
    /// The columns (outcome, status, state, gateway_reference, decline_reason,
    /// captured_minor, refunded_minor, currency, error, message): outcome 0 a payment
    /// (its fields set), 1 not sent (error "connect", "busy" or "late"), 2 ambiguous
    /// (error says why, for logs), 3 refused by a 4xx (error its code, message its
    /// text). Columns of unequal length, an unknown kind, a bad timeout or more than
    /// SEND_MANY_MAX rows are refused, raised by this call, before any sale is sent.
    fn sale_many_into(
        &self,
        py: Python<'_>,
        done: &Completions,
        future: Py<PyAny>,
        path: &str,
        columns: SaleColumns,
    ) -> PyResult<()> {
        let uri = self.sale_uri(path, &columns)?;
        let runtime = runtime()?;
        let prepared = py
            .detach(|| self.prepare(&uri, &columns))
            .map_err(HttpSetupError::new_err)?;
        let selling = self.sell_all(runtime, prepared);
        let queue = done.queue();
        runtime.spawn(async move {
            let columns = into_columns(selling.await);
            queue.complete(
                future,
                Box::new(move |py| Ok(columns.into_pyobject(py)?.into_any().unbind())),
            );
        });
        Ok(())
    }
}

impl HttpPool {
    /// The sales' Uri for `path`, once the columns are checked (lengths, bound).
    fn sale_uri(&self, path: &str, columns: &SaleColumns) -> PyResult<Uri> {
        let n = columns.references.len();
        if n > SEND_MANY_MAX {
            return Err(BatchTooLarge::new_err(format!(
                "sale_many of {n} sales is over the bound of {SEND_MANY_MAX}"
            )));
        }
        let c = columns;
        let lengths = [
            c.amounts_minor.len(),
            c.currencies.len(),
            c.kinds.len(),
            c.pans.len(),
            c.expiry_months.len(),
            c.expiry_years.len(),
            c.providers.len(),
            c.wallet_ids.len(),
            c.ibans.len(),
            c.timeouts_s.len(),
            c.ends_s.len(),
        ];
        if lengths.iter().any(|&len| len != n) {
            return Err(HttpSetupError::new_err(format!(
                "sale_many: columns of unequal length ({n} references, {lengths:?})"
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

    /// Each sale's request (bodies in one buffer, each a shared slice of it), timeout
    /// and end; a column that cannot be used refuses the whole call.
    fn prepare(
        &self,
        uri: &Uri,
        c: &SaleColumns,
    ) -> Result<Vec<(hyper::Request<Body>, Duration, Duration)>, String> {
        let n = c.references.len();
        let mut bodies = Vec::with_capacity(n * 192);
        let mut parts = Vec::with_capacity(n);
        for i in 0..n {
            let method = match c.kinds[i].as_str() {
                "card" => Instrument::Card {
                    pan: &c.pans[i],
                    expiry_month: c.expiry_months[i],
                    expiry_year: c.expiry_years[i],
                },
                "wallet" => Instrument::Wallet {
                    provider: &c.providers[i],
                    wallet_id: &c.wallet_ids[i],
                },
                "bank_account" => Instrument::BankAccount { iban: &c.ibans[i] },
                "carrier_balance" => Instrument::CarrierBalance,
                other => return Err(format!("sale_many: method kind {other:?}")),
            };
            let timeout = duration("timeouts_s", c.timeouts_s[i])?;
            // An end already passed is a sale that is not sent ("late").
            let end = Duration::try_from_secs_f64(c.ends_s[i].max(0.0))
                .map_err(|_| format!("ends_s {}", c.ends_s[i]))?;
            let start = bodies.len();
            write_sale_body(
                &mut bodies,
                &c.references[i],
                c.amounts_minor[i],
                &c.currencies[i],
                method,
            );
            parts.push((start..bodies.len(), timeout, end));
        }
        let bodies = bytes::Bytes::from(bodies);
        Ok(parts
            .into_iter()
            .map(|(range, timeout, end)| {
                let body = Some(bodies.slice(range));
                let request = self.request(hyper::Method::POST, uri.clone(), body);
                (request, timeout, end)
            })
            .collect())
    }

    /// Starts every sale on the runtime at once; the future gives their ends in order.
    fn sell_all(
        &self,
        runtime: &'static tokio::runtime::Runtime,
        prepared: Vec<(hyper::Request<Body>, Duration, Duration)>,
    ) -> impl std::future::Future<Output = Vec<Sold>> + Send + 'static {
        let handles: Vec<_> = prepared
            .into_iter()
            .map(|(request, timeout, end)| {
                let sales = Arc::clone(&self.sales);
                let permits = Arc::clone(&self.permits);
                let client = Arc::clone(&self.client);
                runtime.spawn(sell(sales, permits, client, request, timeout, end))
            })
            .collect();
        async move {
            let mut sold = Vec::with_capacity(handles.len());
            for handle in handles {
                // A task that panicked leaves its sale's fate unknown.
                sold.push(
                    handle
                        .await
                        .unwrap_or_else(|_| Sold::failed(UNKNOWN, "panic")),
                );
            }
            sold
        }
    }
}

/// The columns `sale_many_into` takes, owned: read by name from the client's `SaleRows`
/// (quickpay_engine/gateways/client.py), whose fields these are.
#[derive(FromPyObject)]
struct SaleColumns {
    references: Vec<String>,
    amounts_minor: Vec<i64>,
    currencies: Vec<String>,
    kinds: Vec<String>,
    pans: Vec<String>,
    expiry_months: Vec<i64>,
    expiry_years: Vec<i64>,
    providers: Vec<String>,
    wallet_ids: Vec<String>,
    ibans: Vec<String>,
    timeouts_s: Vec<f64>,
    ends_s: Vec<f64>,
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
    end: Duration,
) -> Sold {
    let start = tokio::time::Instant::now();
    let _slot = match tokio::time::timeout(timeout.min(end), sales.acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        _ => return Sold::failed(NOT_SENT, "busy"),
    };
    let left = end.saturating_sub(start.elapsed());
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
