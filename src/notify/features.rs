//! The values of subscription features: `startAt`/`endAt` (xsd:dateTime) and
//! `rate` (xsd:duration).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An xsd:dateTime with a time zone, as Unix milliseconds.
pub fn parse_date_time(text: &str) -> Result<i64, String> {
    let t = OffsetDateTime::parse(text.trim(), &Rfc3339).map_err(|_| {
        format!("{text:?} is not a date and time with a time zone, such as 2026-01-31T12:00:00Z")
    })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Unix milliseconds as xsd:dateTime (UTC, millisecond precision).
pub fn format_date_time(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let text = t.format(&Rfc3339).unwrap_or_default();
    // Rfc3339 writes as many fraction digits as needed; keep milliseconds.
    match text.split_once('.') {
        Some((whole, rest)) => {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            format!("{whole}.{:0<3}Z", &digits[..digits.len().min(3)])
        }
        None => text.replace('Z', ".000Z"),
    }
}

/// An xsd:duration without years or months (they have no fixed length), as
/// milliseconds: `PT1S`, `PT0.5S`, `PT2M`, `P1DT12H`.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{text:?} is not a duration such as PT1S or PT0.5S (days, hours, minutes and seconds only)"
        )
    };
    let rest = text.trim().strip_prefix('P').ok_or_else(bad)?;
    if rest.is_empty() {
        return Err(bad());
    }
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, t),
        Some(_) => return Err(bad()),
        None => (rest, ""),
    };
    let mut ms = 0f64;
    let mut take = |part: &str, units: &[(char, f64)]| -> Result<(), String> {
        let mut number = String::new();
        let mut next_unit = 0;
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let i = units[next_unit..]
                .iter()
                .position(|(u, _)| *u == c)
                .ok_or_else(bad)?
                + next_unit;
            let value: f64 = number.parse().map_err(|_| bad())?;
            ms += value * units[i].1;
            number.clear();
            next_unit = i + 1;
        }
        if number.is_empty() {
            Ok(())
        } else {
            Err(bad())
        }
    };
    take(date, &[('D', 86_400_000.0)])?;
    take(time, &[('H', 3_600_000.0), ('M', 60_000.0), ('S', 1_000.0)])?;
    if !ms.is_finite() || ms > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(ms.round() as i64)
}

/// Milliseconds as xsd:duration in seconds (`PT1.5S`).
pub fn format_duration(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("PT{}S", ms / 1000)
    } else {
        let fraction = format!("{:03}", ms % 1000);
        format!("PT{}.{}S", ms / 1000, fraction.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("PT1S"), Ok(1000));
        assert_eq!(parse_duration("PT0.5S"), Ok(500));
        assert_eq!(parse_duration("PT2M"), Ok(120_000));
        assert_eq!(parse_duration("P1DT1H"), Ok(90_000_000));
        assert_eq!(parse_duration("P1D"), Ok(86_400_000));
        for bad in ["", "P", "PT", "1S", "PT1", "PTS", "P1M", "PT1S1H", "PT-1S"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(1500), "PT1.5S");
        assert_eq!(format_duration(2000), "PT2S");
    }

    #[test]
    fn date_times() {
        let ms = parse_date_time("2026-01-31T12:00:00.250Z").unwrap();
        assert_eq!(ms, 1_769_860_800_250);
        assert_eq!(format_date_time(ms), "2026-01-31T12:00:00.250Z");
        assert_eq!(
            parse_date_time("2026-01-31T13:00:00+01:00").unwrap(),
            1_769_860_800_000
        );
        assert_eq!(
            format_date_time(1_769_860_800_000),
            "2026-01-31T12:00:00.000Z"
        );
        assert!(parse_date_time("2026-01-31").is_err());
        assert!(parse_date_time("tomorrow").is_err());
    }
}
