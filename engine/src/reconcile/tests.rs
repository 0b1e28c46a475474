use super::report::{major_to_minor, Decimals};
use super::*;

const HEADER: &str =
    "gateway_reference,merchant_reference,amount_minor,currency,type,status,captured_at\n";
/// 2026-11-24T00:00:00Z in microseconds.
const DAY_START_US: i64 = 1_795_478_400_000_000;
const DAY_US: i64 = 86_400_000_000;
const HOUR_US: i64 = 3_600_000_000;

fn window(tolerance_s: i64) -> Window {
    Window {
        gateway: "acq-a".into(),
        business_day: "2026-11-24".into(),
        start_us: DAY_START_US,
        end_us: DAY_START_US + DAY_US,
        tolerance_us: tolerance_s * 1_000_000,
    }
}

fn capture(k: usize, at_us: i64) -> Capture {
    Capture {
        payment_id: format!("pay_{k}"),
        gateway_reference: format!("gw-{k}"),
        amount_minor: 100 + k as i64,
        currency: "KES".into(),
        settled_at_us: at_us,
        refunded: false,
    }
}

fn row(k: usize, at_us: i64) -> Row {
    Row {
        line: k as u64 + 2,
        gateway_reference: format!("gw-{k}"),
        merchant_reference: format!("pay_{k}"),
        amount_minor: 100 + k as i64,
        currency: "KES".into(),
        kind: RowKind::Capture,
        status: RowStatus::Settled,
        captured_at_us: at_us + 50_000,
    }
}

fn clean_day(n: usize) -> (Vec<Row>, Vec<Capture>) {
    let at = |k: usize| DAY_START_US + HOUR_US + k as i64 * 60_000_000;
    (
        (0..n).map(|k| row(k, at(k))).collect(),
        (0..n).map(|k| capture(k, at(k))).collect(),
    )
}

fn found(outcome: &Outcome) -> Vec<(&'static str, &str)> {
    outcome
        .discrepancies
        .iter()
        .map(|d| (d.category.name(), d.payment_id.as_str()))
        .collect()
}

#[test]
fn reads_the_simulators_export_and_names_the_line_of_each_bad_row() {
    let text = format!(
        "{HEADER}gw-1,pay_1,1250,EUR,CAPTURE,SETTLED,2026-11-24T10:00:00Z\n\n \
         gw-2 , pay_2 ,7,KES,REFUND,VOIDED,2026-11-24 10:00:00.123456789+01:00\n"
    );
    let rows = read_rows(&text, &Mapping::default()).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0],
        Row {
            line: 2,
            gateway_reference: "gw-1".into(),
            merchant_reference: "pay_1".into(),
            amount_minor: 1250,
            currency: "EUR".into(),
            kind: RowKind::Capture,
            status: RowStatus::Settled,
            captured_at_us: DAY_START_US + 10 * HOUR_US,
        }
    );
    // Trimmed, a blank line skipped but counted, the offset applied, nanoseconds floored.
    assert_eq!(
        (
            rows[1].line,
            rows[1].gateway_reference.as_str(),
            rows[1].captured_at_us
        ),
        (4, "gw-2", DAY_START_US + 9 * HOUR_US + 123_456)
    );
    for (line, message) in [
        (
            "gw-1,pay_1,12.50,EUR,CAPTURE,SETTLED,2026-11-24T10:00:00Z",
            "line 2: amount '12.50' is not a whole number of minor units",
        ),
        (
            "gw-1,pay_1,1250,EUR,CHARGEBACK,SETTLED,2026-11-24T10:00:00Z",
            "line 2: type 'CHARGEBACK' is not one of ('CAPTURE', 'REFUND')",
        ),
        (
            "gw-1,pay_1,1250,EUR,CAPTURE,PENDING,2026-11-24T10:00:00Z",
            "line 2: status 'PENDING' is not one of ('SETTLED', 'VOIDED')",
        ),
        (
            "gw-1,pay_1,1250,EUR,CAPTURE,SETTLED,2026-11-24 10:00",
            "line 2: captured_at '2026-11-24 10:00' must be RFC 3339 with a time zone",
        ),
        (
            "gw-1,pay_1,1250,EUR,CAPTURE,SETTLED,2026-11-24T10:00:00",
            "line 2: captured_at '2026-11-24T10:00:00' must be RFC 3339 with a time zone",
        ),
        ("gw-1,pay_1,1250", "line 2: expected 7 fields"),
    ] {
        let err = read_rows(&format!("{HEADER}{line}\n"), &Mapping::default()).unwrap_err();
        assert_eq!(err.to_string(), message);
    }
    let err = read_rows("", &Mapping::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1: empty report, expected a header row"
    );
    let err = read_rows("a,b\n", &Mapping::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 1: header lacks a column the mapping names ('gateway_reference' is not in list)"
    );
}

#[test]
fn another_gateways_columns_words_and_major_amounts() {
    let mut columns = FIELDS.map(String::from);
    columns[2] = "Gross".into();
    columns[4] = "Record Type".into();
    let mapping = Mapping {
        columns,
        amount_unit: AmountUnit::Major,
        values: [("Settled", "CAPTURE"), ("Cancelled", "VOIDED")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .into(),
    };
    let text =
        "captured_at,Record Type,gateway_reference,merchant_reference,Gross,currency,status\n\
        2026-11-24T10:00:00Z,Settled,X1,pay_1,12.50,EUR,Settled\n\
        2026-11-24T10:00:00Z,Settled,\"X,2\",pay_2,100,JPY,Cancelled\n";
    let rows = read_rows(text, &mapping).unwrap();
    let summary: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.gateway_reference.as_str(),
                r.amount_minor,
                r.kind,
                r.status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("X1", 1250, RowKind::Capture, RowStatus::Settled),
            ("X,2", 100, RowKind::Capture, RowStatus::Voided),
        ]
    );
    let bad = text.replace("100,JPY", "1.5,JPY");
    let err = read_rows(&bad, &mapping).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 3: amount '1.5' has more decimals than JPY"
    );
    let bad = text.replace("100,JPY", "100,XYZ");
    let err = read_rows(&bad, &mapping).unwrap_err();
    assert_eq!(err.to_string(), "line 3: currency 'XYZ' is not ISO 4217");
}

#[test]
fn decimal_amounts_scale_exactly_and_never_round() {
    for (text, exponent, minor) in [
        ("12.50", 2, 1250),
        ("12.5", 2, 1250),
        ("1.500", 2, 150),
        ("-3.25", 2, -325),
        ("+7", 0, 7),
        (".5", 1, 5),
        ("5.", 0, 5),
        ("1.5e1", 0, 15),
        ("15E-1", 1, 15),
        ("0e999999", 2, 0),
        ("0.000", 2, 0),
        ("92233720368547758.07", 2, i64::MAX),
    ] {
        assert_eq!(major_to_minor(text, exponent), Ok(minor), "{text}");
    }
    for (text, exponent, err) in [
        ("1.005", 2, Decimals::TooMany),
        ("1.5", 0, Decimals::TooMany),
        ("1e-3", 2, Decimals::TooMany),
        ("", 2, Decimals::NotANumber),
        (".", 2, Decimals::NotANumber),
        ("1.2.3", 2, Decimals::NotANumber),
        ("12,50", 2, Decimals::NotANumber),
        ("NaN", 2, Decimals::NotANumber),
        ("1e", 2, Decimals::NotANumber),
        ("92233720368547758.08", 2, Decimals::NotANumber),
        ("1e30", 2, Decimals::NotANumber),
    ] {
        assert_eq!(major_to_minor(text, exponent), Err(err), "{text}");
    }
}

#[test]
fn a_clean_day_matches_whole_and_each_injected_discrepancy_is_found_once() {
    let (rows, captures) = clean_day(30);
    let clean = reconcile(&window(900), &rows, &captures);
    assert_eq!((clean.records, clean.matched), (30, 30));
    assert!(clean.discrepancies.is_empty());

    let mut rows = rows;
    rows[1].amount_minor += 7;
    rows[2].currency = "USD".into();
    rows[3].status = RowStatus::Voided;
    rows.push(Row {
        line: 40,
        ..rows[4].clone()
    });
    rows[5].captured_at_us = DAY_START_US - 5 * HOUR_US;
    rows.remove(6);
    rows.push(Row {
        gateway_reference: "gw-phantom".into(),
        merchant_reference: "pay_phantom".into(),
        ..rows[0].clone()
    });
    rows.push(Row {
        gateway_reference: "gw-second-capture".into(),
        line: 41,
        ..rows[7].clone()
    });
    let outcome = reconcile(&window(900), &rows, &captures);
    assert_eq!(
        found(&outcome),
        vec![
            ("AMOUNT_MISMATCH", "pay_1"),
            ("CURRENCY_MISMATCH", "pay_2"),
            ("STATUS_MISMATCH", "pay_3"),
            ("OUTSIDE_WINDOW", "pay_5"),
            ("DUPLICATE_AT_GATEWAY", "pay_4"),
            ("MISSING_IN_BILLING", "pay_phantom"),
            ("DUPLICATE_AT_GATEWAY", "pay_8"),
            ("MISSING_AT_GATEWAY", "pay_6"),
        ]
    );
    assert_eq!((outcome.records, outcome.matched), (32, 30 - 5));
    let duplicate = &outcome.discrepancies[4];
    assert_eq!(
        duplicate.detail,
        "gateway reference reported again at line 40"
    );
    assert_eq!(
        outcome.discrepancies[6].detail,
        "payment captured again as gw-second-capture at line 41"
    );
    let mismatch = &outcome.discrepancies[0];
    assert_eq!(
        (mismatch.gateway_amount_minor, mismatch.billing_amount_minor),
        (Some(108), Some(101))
    );
    // The ids are the Python matcher's (sha256 of the same key), so persisted
    // investigations survive the move: this one was computed by it.
    assert_eq!(mismatch.id, "dsc_bbe4b717a2e7a3bf77015f47");
    // A refunded capture reported voided is not a status mismatch.
    let mut refunded = captures.clone();
    refunded[3].refunded = true;
    let again = reconcile(&window(900), &rows, &refunded);
    assert!(!found(&again).contains(&("STATUS_MISMATCH", "pay_3")));
    // Refund rows are counted and matched, never judged.
    let refunds: Vec<Row> = rows
        .iter()
        .map(|r| Row {
            kind: RowKind::Refund,
            ..r.clone()
        })
        .collect();
    let outcome = reconcile(&window(900), &refunds, &[]);
    assert_eq!((outcome.records, outcome.matched), (32, 32));
}

#[test]
fn a_voided_capture_billing_never_settled_agrees_with_billing() {
    // The engine gives a capture back when its database commit cannot land (the
    // payment FAILED, BILLING_UNAVAILABLE): the gateway reports it VOIDED and billing
    // holds nothing, and nothing moved on either side.
    let (mut rows, captures) = clean_day(3);
    rows.push(Row {
        gateway_reference: "gw-given-back".into(),
        merchant_reference: "pay_given_back".into(),
        status: RowStatus::Voided,
        line: 40,
        ..rows[0].clone()
    });
    let outcome = reconcile(&window(900), &rows, &captures);
    assert_eq!((outcome.records, outcome.matched), (4, 4));
    assert!(outcome.discrepancies.is_empty());
    // The near miss: the same row SETTLED is money billing never saw.
    rows[3].status = RowStatus::Settled;
    let outcome = reconcile(&window(900), &rows, &captures);
    assert_eq!(
        found(&outcome),
        vec![("MISSING_IN_BILLING", "pay_given_back")]
    );
}

#[test]
fn the_cut_off_tolerance_decides_who_reports_a_capture_near_midnight() {
    let late = capture(90, DAY_START_US + DAY_US - 60_000_000); // 23:59 on the day
    let eve = capture(91, DAY_START_US - 60_000_000); // 23:59 the day before
    let (rows, mut captures) = clean_day(3);
    captures.push(late);
    captures.push(eve);
    let wide = reconcile(&window(900), &rows, &captures);
    assert_eq!(found(&wide), vec![("MISSING_AT_GATEWAY", "pay_91")]);
    let narrow = reconcile(&window(30), &rows, &captures);
    assert_eq!(found(&narrow), vec![("MISSING_AT_GATEWAY", "pay_90")]);
    // A row more than the tolerance away from billing's time is outside the window.
    let mut shifted = rows.clone();
    shifted[0].captured_at_us += 31_000_000;
    let outcome = reconcile(&window(30), &shifted, &captures[..3]);
    assert_eq!(found(&outcome), vec![("OUTSIDE_WINDOW", "pay_0")]);
    let outcome = reconcile(&window(900), &shifted, &captures[..3]);
    assert!(outcome.discrepancies.is_empty());
}

#[test]
fn line_numbers_count_blank_lines_crlf_and_quoted_newlines_as_pythons_csv_does() {
    let good = "gw-1,pay_1,1,EUR,CAPTURE,SETTLED,2026-11-24T10:00:00Z";
    let bad = "gw-1,pay_1,x,EUR,CAPTURE,SETTLED,2026-11-24T10:00:00Z";
    let header = HEADER.trim_end();
    for (text, line) in [
        (format!("{header}\r\n{good}\r\n\r\n{bad}\r\n"), 4),
        (format!("{header}\r{good}\r{bad}"), 3),
        (
            format!("{header}\n\"gw\n-1\",pay_1,1,EUR,CAPTURE,SETTLED,2026-11-24T10:00:00Z\n{bad}"),
            4,
        ),
        (format!("{header}\n{bad}\n{good}\n"), 2),
    ] {
        let err = read_rows(&text, &Mapping::default()).unwrap_err();
        assert_eq!(err.line, line, "{text:?}");
    }
}
