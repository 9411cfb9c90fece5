//! RFC 3339 formatting of capture timestamps, with JMAP's normalisation (RFC 8620 §1.4):
//! uppercase `T`/`Z`, always UTC, fractional seconds only when non-zero (milliseconds).
//!
//! Written by hand because it is 30 lines (Howard Hinnant's civil-from-days) and pulling in
//! `chrono`/`time` for one formatter is not worth the build time.

/// Formats nanoseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS[.mmm]Z`.
pub fn format_time(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let millis = (nanos.rem_euclid(1_000_000_000) / 1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (sod / 3600, (sod / 60) % 60, sod % 60);
    if millis == 0 {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{millis:03}Z")
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        // 2026-10-15T14:28:01.907Z
        assert_eq!(
            format_time(1_760_538_481_907_000_000),
            "2025-10-15T14:28:01.907Z"
        );
        assert_eq!(format_time(951_782_400_000_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_time(-1_000_000_000), "1969-12-31T23:59:59Z");
        assert_eq!(
            format_time(1_767_225_600_000_000_000),
            "2026-01-01T00:00:00Z"
        );
    }
}
