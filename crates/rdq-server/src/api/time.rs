//! RFC 3339 times as the API reads them: every time the OpenAPI format
//! `date-time` allows, years 0000 to 9999, so that the document and the
//! server agree on what a time is.

use std::time::{Duration, SystemTime};

/// Parses an RFC 3339 date-time: `2030-01-02T03:04:05Z`, with an optional
/// fraction of a second and a `Z` or `±hh:mm` offset (`t`, `z`, and a space
/// for `T`, are accepted too; a leap second `:60` counts as the next
/// second). Any year from 0000 to 9999.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let bad = |what: &str| {
        format!("{text:?} is not an RFC 3339 time ({what}); write e.g. 2030-01-02T03:04:05Z")
    };
    let b = text.as_bytes();
    let digits = |from: usize, n: usize| -> Result<i64, String> {
        let part = b.get(from..from + n).ok_or_else(|| bad("too short"))?;
        part.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit()
                .then(|| acc * 10 + i64::from(c - b'0'))
                .ok_or_else(|| bad("a digit expected"))
        })
    };
    let expect = |at: usize, allowed: &[u8]| -> Result<(), String> {
        match b.get(at) {
            Some(c) if allowed.contains(c) => Ok(()),
            _ => Err(bad("wrong separator")),
        }
    };
    let year = digits(0, 4)?;
    expect(4, b"-")?;
    let month = digits(5, 2)?;
    expect(7, b"-")?;
    let day = digits(8, 2)?;
    expect(10, b"Tt ")?;
    let hour = digits(11, 2)?;
    expect(13, b":")?;
    let minute = digits(14, 2)?;
    expect(16, b":")?;
    let second = digits(17, 2)?;
    let mut at = 19;
    let mut nanos = 0u32;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 9 {
                nanos = nanos * 10 + u32::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return Err(bad("digits expected after the point"));
        }
        for _ in (at - start)..9 {
            nanos *= 10;
        }
    }
    let offset = match b.get(at) {
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            let sign = if *sign == b'-' { -1 } else { 1 };
            let (h, m) = (digits(at + 1, 2)?, digits(at + 4, 2)?);
            expect(at + 3, b":")?;
            if h > 23 || m > 59 {
                return Err(bad("offset out of range"));
            }
            at += 6;
            sign * (h * 3600 + m * 60)
        }
        _ => return Err(bad("a Z or ±hh:mm offset expected")),
    };
    if at != b.len() {
        return Err(bad("extra characters after the time"));
    }
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad("a field is out of range"));
    }
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let since_epoch = Duration::new(seconds.unsigned_abs(), 0);
    let whole = if seconds >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(since_epoch)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(since_epoch)
    };
    whole
        .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
        .ok_or_else(|| bad("out of this system's range"))
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to this date of the proleptic Gregorian calendar
/// (negative before it), counting in 400-year cycles of 146,097 days from a
/// year that starts in March, so that a leap day ends its year.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let cycle = year.div_euclid(400);
    let year_of_cycle = year - cycle * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_cycle = year_of_cycle * 365 + year_of_cycle / 4 - year_of_cycle / 100 + day_of_year;
    cycle * 146_097 + day_of_cycle - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> i64 {
        match parse_rfc3339(text)
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
        {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    }

    #[test]
    fn times_of_every_year_and_form_parse() {
        assert_eq!(secs("1970-01-01T00:00:00Z"), 0);
        assert_eq!(secs("2030-01-02T03:04:05Z"), 1_893_553_445);
        assert_eq!(secs("2030-01-02t03:04:05z"), 1_893_553_445);
        assert_eq!(secs("2030-01-02 03:04:05+01:00"), 1_893_553_445 - 3600);
        assert_eq!(secs("2030-01-02T03:04:05-00:30"), 1_893_553_445 + 1800);
        assert_eq!(secs("1969-12-31T23:59:59Z"), -1);
        assert_eq!(secs("2000-02-29T00:00:00Z"), 951_782_400);
        assert_eq!(secs("0000-01-01T00:00:00Z"), -62_167_219_200);
        assert_eq!(secs("0550-05-07T22:14:23Z"), -44_799_875_137);
        assert_eq!(secs("9999-12-31T23:59:59Z"), 253_402_300_799);
        assert_eq!(secs("2016-12-31T23:59:60Z"), 1_483_228_800);
        let t = parse_rfc3339("2030-01-02T03:04:05.123456789Z").unwrap();
        let frac = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        assert_eq!(frac, 123_456_789);
        let t = parse_rfc3339("2030-01-02T03:04:05.5Z").unwrap();
        let frac = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        assert_eq!(frac, 500_000_000);
    }

    #[test]
    fn anything_else_is_refused_with_an_example() {
        for bad in [
            "",
            "tomorrow",
            "2030-01-02",
            "2030-01-02T03:04:05",
            "2030-13-02T03:04:05Z",
            "2030-02-29T03:04:05Z",
            "2030-01-02T24:00:00Z",
            "2030-01-02T03:04:05.Z",
            "2030-01-02T03:04:05+24:00",
            "2030-01-02T03:04:05Zjunk",
            "+2030-01-02T03:04:05Z",
            "２０３０-01-02T03:04:05Z",
        ] {
            let e = parse_rfc3339(bad).expect_err(bad);
            assert!(e.contains("2030-01-02T03:04:05Z"), "{bad}: {e}");
        }
    }
}
