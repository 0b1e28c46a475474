//! The engine's subscriber table: who may pay, for which line, in which currency.
//!
//! Loaded from the store at start and kept current by every settlement. The billing
//! system owns this data; the engine holds a copy so that account authentication costs
//! a hash lookup, not a database round trip.

use std::collections::HashMap;

use crate::money::Currency;

/// At most this many subscribers per engine process (one partition of the carrier's
/// base). At the bound: `SubscriberTable::upsert` returns `TableFull` and the load fails.
pub const SUBSCRIBERS_MAX: usize = 20_000_000;

/// Prepaid lines buy credit; postpaid lines owe a bill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Plan {
    Prepaid = 1,
    Postpaid = 2,
}

/// The line's state in the carrier's provisioning system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    Active = 1,
    Suspended = 2,
    Barred = 3,
    Closed = 4,
}

impl Plan {
    /// From the stable number used across the Python boundary.
    pub fn from_u8(n: u8) -> Option<Plan> {
        match n {
            1 => Some(Plan::Prepaid),
            2 => Some(Plan::Postpaid),
            _ => None,
        }
    }
}

impl Status {
    /// From the stable number used across the Python boundary.
    pub fn from_u8(n: u8) -> Option<Status> {
        match n {
            1 => Some(Status::Active),
            2 => Some(Status::Suspended),
            3 => Some(Status::Barred),
            4 => Some(Status::Closed),
            _ => None,
        }
    }
}

/// One subscriber account as the engine sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriber {
    pub account_id: String,
    pub msisdn: String,
    pub plan: Plan,
    pub status: Status,
    pub currency: Currency,
    /// Prepaid credit, or the postpaid amount owed as a positive number.
    pub balance_minor: i64,
    /// ISO 3166 alpha-2 country of the subscriber, ASCII uppercase.
    pub country: [u8; 2],
    /// When the SIM was last swapped, Unix seconds; `None` if never.
    pub sim_swapped_at_s: Option<i64>,
    /// When the account was opened, Unix seconds.
    pub created_at_s: i64,
}

/// Why a subscriber could not be added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableError {
    TableFull { max: usize },
}

/// Subscribers by account id.
#[derive(Default, Debug)]
pub struct SubscriberTable {
    by_account: HashMap<String, Subscriber>,
}

impl SubscriberTable {
    pub fn new() -> SubscriberTable {
        SubscriberTable::default()
    }

    /// Inserts or replaces a subscriber (the billing system's copy wins).
    pub fn upsert(&mut self, subscriber: Subscriber) -> Result<(), TableError> {
        if self.by_account.len() >= SUBSCRIBERS_MAX
            && !self.by_account.contains_key(&subscriber.account_id)
        {
            return Err(TableError::TableFull { max: SUBSCRIBERS_MAX });
        }
        self.by_account.insert(subscriber.account_id.clone(), subscriber);
        Ok(())
    }

    pub fn get(&self, account_id: &str) -> Option<&Subscriber> {
        self.by_account.get(account_id)
    }

    /// Records a settled balance and service state. Unknown accounts are a caller bug:
    /// a settlement can only follow a successful validation of that account.
    pub fn set_state(&mut self, account_id: &str, balance_minor: i64, status: Status) {
        let subscriber = self
            .by_account
            .get_mut(account_id)
            .expect("settled an account the engine does not know");
        subscriber.balance_minor = balance_minor;
        subscriber.status = status;
    }

    pub fn len(&self) -> usize {
        self.by_account.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_account.is_empty()
    }
}
