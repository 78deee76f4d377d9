//! Dates and timestamps as days/seconds since 1970-01-01 (UTC), formatted
//! the way PostgreSQL's text input expects them.

use std::fmt;

/// Seconds in a day.
pub(crate) const DAY_SECS: i64 = 86_400;

/// A calendar date, counted in days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Date(pub(crate) i64);

impl Date {
    /// The date `year-month-day` (proleptic Gregorian calendar).
    pub(crate) const fn ymd(year: i64, month: i64, day: i64) -> Date {
        // Howard Hinnant's days_from_civil.
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Date(era * 146_097 + doe - 719_468)
    }

    /// (year, month, day) of this date.
    pub(crate) const fn civil(self) -> (i64, i64, i64) {
        // Howard Hinnant's civil_from_days.
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
        (year, month, day)
    }

    /// The start of this day as a timestamp.
    pub(crate) const fn midnight(self) -> Timestamp {
        Timestamp(self.0 * DAY_SECS)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.civil();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

/// A UTC timestamp, counted in seconds since 1970-01-01 00:00:00.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timestamp(pub(crate) i64);

impl Timestamp {
    /// The date this timestamp falls on.
    pub(crate) const fn date(self) -> Date {
        Date(self.0.div_euclid(DAY_SECS))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.rem_euclid(DAY_SECS);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        write!(f, "{} {h:02}:{m:02}:{s:02}+00", self.date())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_format() {
        assert_eq!(Date::ymd(1970, 1, 1), Date(0));
        assert_eq!(Date::ymd(2024, 2, 29).to_string(), "2024-02-29");
        assert_eq!(Date::ymd(1940, 12, 31).civil(), (1940, 12, 31));
        assert_eq!(Date(Date::ymd(2000, 3, 1).0 - 1).to_string(), "2000-02-29");
    }

    #[test]
    fn timestamps_format_in_utc() {
        let t = Timestamp(Date::ymd(2019, 3, 4).0 * DAY_SECS + 12 * 3600 + 34 * 60 + 56);
        assert_eq!(t.to_string(), "2019-03-04 12:34:56+00");
    }
}
