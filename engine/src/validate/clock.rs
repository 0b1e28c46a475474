//! Calendar arithmetic on the clock the caller passes in (Unix seconds, UTC).
//!
//! Card expiry and the daily and monthly limits need the civil year, month and day.
//! The conversion is Howard Hinnant's `civil_from_days`, exact for every i64 day count
//! that fits a year in i64; no time zone database is involved because limits and
//! expiry are defined in UTC.

const SECONDS_PER_DAY: i64 = 86_400;

/// A UTC calendar date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilDate {
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
}

/// The caller's clock with the calendar facts every payment of a batch needs,
/// computed once per batch (the conversion costs several 64-bit divisions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub unix_s: i64,
    pub date: CivilDate,
    /// `day_index(unix_s)`.
    pub day: i64,
    /// `month_index(unix_s)`.
    pub month: i64,
}

impl Now {
    /// The clock at `unix_s`.
    pub fn at(unix_s: i64) -> Now {
        let date = civil_date(unix_s);
        Now {
            unix_s,
            date,
            day: day_index(unix_s),
            month: date.year * 12 + i64::from(date.month) - 1,
        }
    }
}

/// Days since 1970-01-01 of the instant `unix_s` (floor, so negative instants work).
pub fn day_index(unix_s: i64) -> i64 {
    unix_s.div_euclid(SECONDS_PER_DAY)
}

/// Months since 0000-01 of the instant `unix_s`: a counter that changes exactly when
/// the calendar month does.
pub fn month_index(unix_s: i64) -> i64 {
    let date = civil_date(unix_s);
    date.year * 12 + i64::from(date.month) - 1
}

/// The UTC calendar date of the instant `unix_s`.
pub fn civil_date(unix_s: i64) -> CivilDate {
    let z = day_index(unix_s) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    CivilDate { year, month, day }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(
            civil_date(0),
            CivilDate {
                year: 1970,
                month: 1,
                day: 1
            }
        );
        assert_eq!(
            civil_date(-1),
            CivilDate {
                year: 1969,
                month: 12,
                day: 31
            }
        );
        // 2024-02-29T23:59:59Z, a leap day, and the second after it.
        assert_eq!(
            civil_date(1_709_251_199),
            CivilDate {
                year: 2024,
                month: 2,
                day: 29
            }
        );
        assert_eq!(
            civil_date(1_709_251_200),
            CivilDate {
                year: 2024,
                month: 3,
                day: 1
            }
        );
        // 2026-11-25T18:00:00Z.
        assert_eq!(
            civil_date(1_795_629_600),
            CivilDate {
                year: 2026,
                month: 11,
                day: 25
            }
        );
        assert_eq!(
            civil_date(951_782_400),
            CivilDate {
                year: 2000,
                month: 2,
                day: 29
            }
        );
    }

    #[test]
    fn month_index_changes_at_midnight_of_the_first() {
        let last_second_of_january = 1_706_745_599; // 2024-01-31T23:59:59Z
        assert_eq!(
            month_index(last_second_of_january) + 1,
            month_index(last_second_of_january + 1)
        );
        assert_eq!(
            day_index(last_second_of_january) + 1,
            day_index(last_second_of_january + 1)
        );
        assert_eq!(
            month_index(last_second_of_january),
            month_index(last_second_of_january - 86_400 * 30)
        );
    }

    proptest::proptest! {
        #[test]
        fn days_advance_one_date_at_a_time(day in -1_000_000i64..1_000_000) {
            let today = civil_date(day * SECONDS_PER_DAY);
            let tomorrow = civil_date((day + 1) * SECONDS_PER_DAY);
            let next = if tomorrow.day == 1 {
                if tomorrow.month == 1 {
                    (today.year + 1, 1, 1) == (tomorrow.year, tomorrow.month, tomorrow.day)
                        && today.month == 12 && today.day == 31
                } else {
                    today.year == tomorrow.year && today.month + 1 == tomorrow.month && today.day >= 28
                }
            } else {
                today.year == tomorrow.year && today.month == tomorrow.month && today.day + 1 == tomorrow.day
            };
            proptest::prop_assert!(next, "{today:?} -> {tomorrow:?}");
        }
    }
}
