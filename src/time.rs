//! UTC calendar arithmetic and the timestamp text forms found in Defender exports.
//!
//! Kusto datetimes are UTC with 100 ns ticks (`2023-10-18T23:59:59.9999999Z`); the job keeps
//! microseconds since the Unix epoch, which is exact for day binning and every export seen.
//! Written by hand (Howard Hinnant's civil-date algorithms) because it is all the job needs
//! from a date library.

use std::fmt;

/// Microseconds in one UTC day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// A UTC calendar day, as days since 1970-01-01 (negative before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub i32);

impl Day {
    /// The day a timestamp (microseconds since the epoch) falls in: `bin(Timestamp, 1d)`.
    pub fn of_micros(micros: i64) -> Day {
        Day(micros.div_euclid(MICROS_PER_DAY) as i32)
    }

    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Day> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Day(days_from_civil(year, month, day)))
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Option<Day> {
        let b = text.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let year = digits(&b[0..4])? as i32;
        let month = digits(&b[5..7])?;
        let day = digits(&b[8..10])?;
        Day::from_ymd(year, month, day)
    }

    pub fn ymd(self) -> (i32, u32, u32) {
        civil_from_days(self.0)
    }

    /// Midnight UTC at the start of this day, in microseconds.
    pub fn start_micros(self) -> i64 {
        self.0 as i64 * MICROS_PER_DAY
    }

    pub fn next(self) -> Day {
        Day(self.0 + 1)
    }

    pub fn prev(self) -> Day {
        Day(self.0 - 1)
    }

    /// Every day from `self` to `last`, both included.
    pub fn through(self, last: Day) -> impl Iterator<Item = Day> {
        (self.0..=last.0).map(Day)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i32 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i32;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
pub fn civil_from_days(days: i32) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i32::from(m <= 2);
    (y, m, d)
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v: u32 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

/// The first microsecond of 0001-01-01 and the first after 9999-12-31: Kusto's datetime range.
/// Times outside it exist in no Defender table, and their days could not be written as
/// `YYYY-MM-DD`.
pub const MIN_MICROS: i64 = -719_162 * MICROS_PER_DAY;
pub const END_MICROS: i64 = 2_932_897 * MICROS_PER_DAY;

/// The decimal digits of `n`, written into `digits`: for the writers that build numbers by hand
/// on every row, where the formatting machinery costs more than the number.
pub fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[at..];
        }
    }
}

/// Whether a time lies in Kusto's datetime range.
pub fn in_datetime_range(micros: i64) -> bool {
    (MIN_MICROS..END_MICROS).contains(&micros)
}

/// Parses the ISO 8601 forms Defender, Log Analytics and the portal CSV write:
/// `2023-10-18T23:59:59.9999999Z`, `2023-10-18T23:59:59Z`, `2023-10-18 23:59:59.123`,
/// `2023-10-18T23:59:59+02:00`. No zone means UTC (Kusto datetimes are always UTC).
/// Fractions beyond microseconds are truncated, which never moves a value across a day.
/// Returns microseconds since the epoch.
pub fn parse_timestamp_micros(text: &str) -> Option<i64> {
    let b = text.trim().as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])? as i32;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let date = Day::from_ymd(year, month, day)?;
    let mut rest = &b[19..];
    let mut micros: i64 = 0;
    if let Some((&b'.', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        for (i, &c) in frac[..n].iter().enumerate() {
            if i < 6 {
                micros = micros * 10 + i64::from(c - b'0');
            }
        }
        for _ in n..6 {
            micros *= 10;
        }
        rest = &frac[n..];
    }
    let offset_seconds: i64 = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), hh1, hh2, b':', mm1, mm2] => {
            let h = digits(&[*hh1, *hh2])? as i64;
            let m = digits(&[*mm1, *mm2])? as i64;
            let s = (h * 3600 + m * 60) * if *sign == b'-' { -1 } else { 1 };
            s
        }
        _ => return None,
    };
    let seconds = i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second) - offset_seconds;
    Some(date.start_micros() + seconds * 1_000_000 + micros).filter(|&t| in_datetime_range(t))
}

/// Formats microseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn format_micros(micros: i64) -> String {
    let day = Day::of_micros(micros);
    let within = micros - day.start_micros();
    let secs = within / 1_000_000;
    let frac = within % 1_000_000;
    format!("{day}T{:02}:{:02}:{:02}.{frac:06}Z", secs / 3600, (secs / 60) % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_over_four_centuries() {
        for d in -200_000..200_000 {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(Day::parse("1970-01-01"), Some(Day(0)));
        assert_eq!(Day::parse("2024-02-29").unwrap().to_string(), "2024-02-29");
        assert_eq!(Day::parse("2023-02-29"), None);
        assert_eq!(Day::parse("2023-13-01"), None);
        assert_eq!(Day::parse("2023-1-01"), None);
    }

    #[test]
    fn timestamps_in_export_forms() {
        let day = Day::parse("2023-10-18").unwrap().start_micros();
        let cases: &[(&str, Option<i64>)] = &[
            ("2023-10-18T00:00:00Z", Some(day)),
            ("2023-10-18T23:59:59.9999999Z", Some(day + 86_399_999_999)),
            ("2023-10-18 00:00:01.5", Some(day + 1_500_000)),
            ("2023-10-18T00:00:00.000000001Z", Some(day)),
            ("2023-10-18T02:00:00+02:00", Some(day)),
            ("2023-10-17T22:00:00-02:00", Some(day)),
            ("2023-10-18T00:00:00", Some(day)),
            ("2023-10-18", None),
            ("2023-10-18T24:00:00Z", None),
            ("2023-10-18T00:00:00.Z", None),
            ("2023-10-18T00:00:00.1234567890Z", None),
            ("not a time", None),
            ("", None),
            ("2023-10-18T00:00:00ZZ", None),
            ("1969-07-20T20:17:40Z", Some(-14_182_940_000_000)),
            ("2300-01-01T00:00:00Z", Some(10_413_792_000_000_000)),
            ("0001-01-01T00:00:00Z", Some(MIN_MICROS)),
            ("0000-12-31T23:59:59Z", None),
            ("0001-01-01T00:30:00+01:00", None),
            ("9999-12-31T23:59:59.999999Z", Some(END_MICROS - 1)),
            ("9999-12-31T23:00:00-02:00", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_timestamp_micros(text), *want, "{text}");
        }
    }

    #[test]
    fn datetime_range_bounds() {
        assert_eq!(MIN_MICROS, Day::from_ymd(1, 1, 1).unwrap().start_micros());
        assert_eq!(END_MICROS, Day::from_ymd(9999, 12, 31).unwrap().next().start_micros());
        assert!(!in_datetime_range(i64::MIN) && !in_datetime_range(i64::MAX));
    }

    #[test]
    fn bin_floors_to_the_utc_day_before_the_epoch_too() {
        assert_eq!(Day::of_micros(-1), Day(-1));
        assert_eq!(Day::of_micros(0), Day(0));
        assert_eq!(Day::of_micros(MICROS_PER_DAY - 1), Day(0));
        assert_eq!(format_micros(1_500_000), "1970-01-01T00:00:01.500000Z");
    }
}
