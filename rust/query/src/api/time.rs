//! Times as RFC 3339 text (`2023-11-14T22:13:20.5Z`), read and written, in nanoseconds since the
//! Unix epoch.

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_since_epoch(year: i64, month: usize, day: i64) -> i64 {
    const BEFORE_MONTH: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    // Leap years from year 1 up to, not including, `year`.
    let leap_years_before = |year: i64| {
        let last = year - 1;
        last.div_euclid(4) - last.div_euclid(100) + last.div_euclid(400)
    };
    let leap_day = i64::from(month > 2 && is_leap(year));
    (year - 1970) * 365 + leap_years_before(year) - leap_years_before(1970)
        + BEFORE_MONTH[month - 1]
        + leap_day
        + day
        - 1
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: usize) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// An RFC 3339 time, `2006-01-02T15:04:05.999999999+07:00` (as Go's `time.RFC3339Nano` reads it),
/// in nanoseconds since the epoch. A space stands for the `+` of the offset: Grafana does not
/// escape the times it sends, so their `+` arrives as a space.
pub fn rfc3339(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let number = |from: usize, to: usize| -> Option<i64> {
        let digits = text.get(from..to)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let separators_ok = bytes.len() >= 20
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && matches!(bytes[10], b'T' | b't')
        && bytes[13] == b':'
        && bytes[16] == b':';
    if !separators_ok {
        return None;
    }
    let year = number(0, 4)?;
    let month = usize::try_from(number(5, 7)?).ok()?;
    let day = number(8, 10)?;
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0;
    if let Some(fraction) = rest.strip_prefix(['.', ',']) {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Beyond nanoseconds, digits are dropped, as Go does.
        let kept = &fraction[..digits.min(9)];
        nanos = kept.parse::<i64>().ok()? * 10_i64.pow(9 - kept.len() as u32);
        rest = &fraction[digits..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b' ' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (
                number(text.len() - 5, text.len() - 3)?,
                number(text.len() - 2, text.len())?,
            );
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return None,
    };
    let seconds =
        days_since_epoch(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    seconds.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// The date of a day counted from 1970-01-01 (negative before), in the proleptic Gregorian
/// calendar: the inverse of [`days_since_epoch`] (H. Hinnant's `civil_from_days`).
fn date_of_day(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March, so that the leap day is the last day of the year.
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Nanoseconds since the epoch as RFC 3339 in UTC, as Go's `time.RFC3339Nano` writes it: the
/// fraction only when there is one, without trailing zeros (`2023-11-14T22:13:20.5Z`).
pub fn format_rfc3339(unix_nano: i64) -> String {
    let seconds = unix_nano.div_euclid(1_000_000_000);
    let nanos = unix_nano.rem_euclid(1_000_000_000);
    let (year, month, day) = date_of_day(seconds.div_euclid(86_400));
    let of_day = seconds.rem_euclid(86_400);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    );
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;
    /// 2023-11-14T22:13:20Z.
    const T0: i64 = 1_700_000_000 * SECOND;

    #[test]
    fn days_are_counted_across_months_and_leap_years() {
        assert_eq!(days_since_epoch(1970, 1, 1), 0);
        let mut day = days_since_epoch(1600, 1, 1);
        for year in 1600..2400 {
            for month in 1..=12 {
                assert_eq!(days_since_epoch(year, month, 1), day, "{year}-{month}");
                day += days_in_month(year, month);
            }
        }
        assert_eq!(days_since_epoch(2000, 3, 1), 11_017);
        assert_eq!(days_since_epoch(1969, 12, 31), -1);
    }

    #[test]
    fn rfc3339_times_are_read_as_go_reads_them() {
        for (text, expected) in [
            ("2023-11-14T22:13:20Z", T0),
            ("2023-11-14t22:13:20z", T0),
            ("2023-11-14T23:43:20+01:30", T0),
            // Grafana's unescaped `+`, decoded as a space.
            ("2023-11-14T23:13:20 01:00", T0),
            ("2023-11-14T21:13:20-01:00", T0),
            ("2023-11-14T22:13:20.5Z", T0 + SECOND / 2),
            ("2023-11-14T22:13:20.000000001Z", T0 + 1),
            // Digits beyond the nanosecond are dropped.
            ("2023-11-14T22:13:20.1234567899Z", T0 + 123_456_789),
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:59:59.5Z", -SECOND / 2),
            ("2024-02-29T00:00:00Z", 1_709_164_800 * SECOND),
        ] {
            assert_eq!(rfc3339(text), Some(expected), "{text}");
        }
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-11-14 22:13:20Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+0100",
            "2023-11-14T22:13:20+01:00:00",
            "2023-11-14T22:13Z",
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:60:00Z",
            "2023-11-14T22:13:60Z",
            "2023-11-14T22:13:20+24:00",
            "+023-11-14T22:13:20Z",
            "1700000000",
            // Beyond what nanoseconds since the epoch hold in 64 bits.
            "9999-12-31T23:59:59Z",
        ] {
            assert_eq!(rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_are_written_as_go_writes_them_and_read_back() {
        for (nanos, text) in [
            (T0, "2023-11-14T22:13:20Z"),
            (T0 + SECOND / 2, "2023-11-14T22:13:20.5Z"),
            (T0 + 1, "2023-11-14T22:13:20.000000001Z"),
            (0, "1970-01-01T00:00:00Z"),
            (-SECOND / 2, "1969-12-31T23:59:59.5Z"),
            (1_709_164_800 * SECOND, "2024-02-29T00:00:00Z"),
            (951_782_400 * SECOND, "2000-02-29T00:00:00Z"),
        ] {
            assert_eq!(format_rfc3339(nanos), text, "{nanos}");
        }
        // Every day from 1678 to 2261, at a time of day that moves, reads back as written.
        let first = days_since_epoch(1678, 1, 1) * 86_400 * SECOND;
        let mut nanos = first;
        while nanos < days_since_epoch(2262, 1, 1) * 86_400 * SECOND {
            let text = format_rfc3339(nanos);
            assert_eq!(rfc3339(&text), Some(nanos), "{text}");
            nanos += 86_400 * SECOND + 3_607_000_000_123;
        }
        assert_eq!(format_rfc3339(i64::MIN), "1677-09-21T00:12:43.145224192Z");
        assert_eq!(format_rfc3339(i64::MAX), "2262-04-11T23:47:16.854775807Z");
    }
}
