//! Rules that force a decision whatever the score, read from a text file.
//!
//! One rule a line; `#` starts a comment:
//!
//! ```text
//! # ACTION [REASON] if CONDITION [and CONDITION]...
//! DECLINE SIM_SWAP_RECENT if sim_swap_age_s < 86400 and amount_minor > 50000
//! REVIEW if card_accounts_24h >= 1.6
//! ```
//!
//! ACTION is `DECLINE` or `REVIEW`. REASON is a reason code name (default
//! `RULE_MATCHED`), reported first. A condition is `NAME OP NUMBER` with OP one of
//! `< <= > >= == !=`. NAME is an integer field of the payment, compared with an integer
//! (money stays integer): `amount_minor`, `sim_swap_age_s` (seconds since the SIM swap;
//! the largest integer when never swapped), `account_age_s`, `plan` (1 prepaid, 2
//! postpaid), `purpose`, `method` (the contract's numbers); or a feature name, compared
//! as a float. Every rule that matches applies; the strongest action wins.

use super::features::{Feature, FEATURE_COUNT};
use super::reasons::{Decision, ReasonCode};
use super::{FraudError, FraudInput};

/// At most this many rules per file, and conditions per rule. At the bound: loading
/// fails with the line number. Rules run on every payment, so their count is its cost.
pub const RULES_MAX: usize = 256;
pub const CONDITIONS_MAX: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            _ => return None,
        })
    }

    fn holds<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

/// An integer field of the payment a rule may test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Field {
    AmountMinor,
    SimSwapAgeS,
    AccountAgeS,
    Plan,
    Purpose,
    Method,
}

impl Field {
    fn parse(s: &str) -> Option<Field> {
        Some(match s {
            "amount_minor" => Field::AmountMinor,
            "sim_swap_age_s" => Field::SimSwapAgeS,
            "account_age_s" => Field::AccountAgeS,
            "plan" => Field::Plan,
            "purpose" => Field::Purpose,
            "method" => Field::Method,
            _ => return None,
        })
    }

    fn value(self, input: &FraudInput<'_>, at_s: i64) -> i64 {
        match self {
            Field::AmountMinor => input.amount_minor,
            Field::SimSwapAgeS => input
                .sim_swapped_at_s
                .map_or(i64::MAX, |t| at_s.saturating_sub(t)),
            Field::AccountAgeS => at_s.saturating_sub(input.created_at_s),
            Field::Plan => input.plan as i64,
            Field::Purpose => input.purpose as i64,
            Field::Method => input.method as i64,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Condition {
    Int(Field, Op, i64),
    Float(Feature, Op, f64),
}

/// One parsed rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub action: Decision,
    pub reason: ReasonCode,
    conditions: Vec<Condition>,
}

/// A parsed rules file.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Parses a rules file; a bad line fails the whole load with its number.
    pub fn parse(text: &str) -> Result<Rules, FraudError> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let rule = parse_rule(line)
                .map_err(|why| FraudError::Rules(format!("line {}: {why}", i + 1)))?;
            if rules.len() >= RULES_MAX {
                return Err(FraudError::Rules(format!(
                    "line {}: over the bound of {RULES_MAX} rules",
                    i + 1
                )));
            }
            rules.push(rule);
        }
        Ok(Rules { rules })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The strongest action of the matching rules (`Approve` when none match) and the
    /// reason of the first rule with that action.
    pub fn apply(
        &self,
        input: &FraudInput<'_>,
        at_s: i64,
        row: &[f64; FEATURE_COUNT],
    ) -> (Decision, ReasonCode) {
        let mut best = (Decision::Approve, ReasonCode::None);
        for rule in &self.rules {
            if rule.action > best.0 && rule.matches(input, at_s, row) {
                best = (rule.action, rule.reason);
            }
        }
        best
    }
}

impl Rule {
    fn matches(&self, input: &FraudInput<'_>, at_s: i64, row: &[f64; FEATURE_COUNT]) -> bool {
        self.conditions.iter().all(|c| match *c {
            Condition::Int(field, op, n) => op.holds(field.value(input, at_s), n),
            Condition::Float(feature, op, x) => op.holds(row[feature as usize], x),
        })
    }
}

fn parse_rule(line: &str) -> Result<Rule, String> {
    let (head, body) = line
        .split_once(" if ")
        .ok_or("expected `ACTION [REASON] if CONDITION`")?;
    let mut head = head.split_whitespace();
    let action = match head.next() {
        Some("DECLINE") => Decision::Decline,
        Some("REVIEW") => Decision::Review,
        other => return Err(format!("action must be DECLINE or REVIEW, got {other:?}")),
    };
    let reason = match head.next() {
        None => ReasonCode::RuleMatched,
        Some(name) => ReasonCode::from_name(name)
            .filter(|&code| code != ReasonCode::None)
            .ok_or_else(|| format!("unknown reason code {name:?}"))?,
    };
    if let Some(extra) = head.next() {
        return Err(format!("unexpected {extra:?} before `if`"));
    }
    let conditions = body
        .split(" and ")
        .map(parse_condition)
        .collect::<Result<Vec<_>, _>>()?;
    if conditions.len() > CONDITIONS_MAX {
        return Err(format!("over the bound of {CONDITIONS_MAX} conditions"));
    }
    Ok(Rule {
        action,
        reason,
        conditions,
    })
}

fn parse_condition(text: &str) -> Result<Condition, String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let &[name, op, number] = parts.as_slice() else {
        return Err(format!("condition {text:?} is not `NAME OP NUMBER`"));
    };
    let op = Op::parse(op).ok_or_else(|| format!("unknown operator {op:?}"))?;
    if let Some(field) = Field::parse(name) {
        let n = number
            .replace('_', "")
            .parse::<i64>()
            .map_err(|_| format!("{name} compares with an integer, got {number:?}"))?;
        return Ok(Condition::Int(field, op, n));
    }
    let feature =
        Feature::from_name(name).ok_or_else(|| format!("unknown field or feature {name:?}"))?;
    let x = number
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| format!("{name} compares with a number, got {number:?}"))?;
    Ok(Condition::Float(feature, op, x))
}
