//! Cron schedules for static roles' `rotation_schedule`: the standard five fields (minute,
//! hour, day of month, month, day of week), evaluated in UTC, as OpenBao and Vault read them.
//!
//! Each field takes `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, and comma lists;
//! months and weekdays also take names (`JAN`, `MON`). The descriptors `@yearly`
//! (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`) and `@hourly` are accepted. As in
//! every cron, when both day fields are restricted a day matches if either does.

use std::fmt;

use time::OffsetDateTime;

#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether the day-of-month / day-of-week field was `*` (unrestricted).
    any_day: bool,
    any_weekday: bool,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Schedule(min={:#x} hour={:#x} day={:#x} month={:#x} wday={:#x})",
            self.minutes, self.hours, self.days, self.months, self.weekdays
        )
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// The longest a search for the next run looks ahead: a schedule that never fires within
/// five years (`0 0 30 2 *`) has no next run.
const LOOKAHEAD_SECS: u64 = 5 * 366 * 86_400;

impl Schedule {
    /// Parses a schedule; the error says which field is wrong and what was expected.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            d if d.starts_with('@') => {
                return Err(format!(
                    "unknown descriptor '{}'; expected @yearly, @monthly, @weekly, @daily or \
                     @hourly",
                    d.escape_default()
                ));
            }
            _ => text,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), got {}",
                fields.len()
            ));
        }
        let weekdays = field(fields[4], "day of week", 0, 7, &WEEKDAYS)?;
        // 7 is Sunday too.
        let weekdays = (weekdays | (weekdays >> 7)) & 0x7f;
        Ok(Schedule {
            minutes: field(fields[0], "minute", 0, 59, &[])?,
            hours: field(fields[1], "hour", 0, 23, &[])?,
            days: field(fields[2], "day of month", 1, 31, &[])?,
            months: field(fields[3], "month", 1, 12, &MONTHS)?,
            weekdays,
            any_day: fields[2] == "*",
            any_weekday: fields[4] == "*",
        })
    }

    /// The first time strictly after `after` (unix seconds) at which the schedule fires, on a
    /// whole minute; `None` if it does not fire within five years.
    pub fn next_after(&self, after: u64) -> Option<u64> {
        let mut t = (after / 60 + 1) * 60;
        let end = after.saturating_add(LOOKAHEAD_SECS);
        while t <= end {
            let at = OffsetDateTime::from_unix_timestamp(i64::try_from(t).ok()?).ok()?;
            let day_start = t - t % 86_400;
            if !self.day_matches(&at) {
                t = day_start + 86_400;
            } else if !bit(self.hours, at.hour()) {
                t = t - t % 3600 + 3600;
            } else if !bit(self.minutes, at.minute()) {
                t += 60;
            } else {
                return Some(t);
            }
        }
        None
    }

    fn day_matches(&self, at: &OffsetDateTime) -> bool {
        if !bit(self.months, u8::from(at.month())) {
            return false;
        }
        let day = bit(self.days, at.day());
        let weekday = bit(self.weekdays, at.weekday().number_days_from_sunday());
        match (self.any_day, self.any_weekday) {
            (false, false) => day || weekday,
            _ => day && weekday,
        }
    }
}

fn bit(set: u64, n: u8) -> bool {
    set & (1 << n) != 0
}

/// One field as a bit set of the values it allows, `lo..=hi`.
fn field(text: &str, what: &str, lo: u8, hi: u8, names: &[&str]) -> Result<u64, String> {
    let bad = |why: &str| {
        format!(
            "{what} field '{}': {why}; expected *, a number from {lo} to {hi}, a range a-b, a \
             step */n or a-b/n, or a comma list of these",
            text.escape_default()
        )
    };
    let value = |s: &str| -> Result<u8, String> {
        let n = match names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            Some(i) => i as u8 + if names.len() == 12 { 1 } else { 0 },
            None => s
                .parse::<u8>()
                .map_err(|_| bad(&format!("'{s}' is not a value")))?,
        };
        if n < lo || n > hi {
            return Err(bad(&format!("{n} is out of range")));
        }
        Ok(n)
    };
    let mut set = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u8 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad(&format!("step '{s}' is not a positive number")))?;
                (r, step)
            }
            None => (item, 1),
        };
        let (from, to) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                // `5/15` means from 5 to the end, every 15.
                None if step > 1 => (value(r)?, hi),
                None => {
                    let v = value(r)?;
                    (v, v)
                }
            },
        };
        if from > to {
            return Err(bad(&format!("range {from}-{to} runs backwards")));
        }
        for v in (from..=to).step_by(step as usize) {
            set |= 1 << v;
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-22 (a Sunday) 10:17:30 UTC.
    const SUNDAY: u64 = 1_795_342_650;

    fn at(text: &str) -> OffsetDateTime {
        let s = Schedule::parse(text).unwrap();
        OffsetDateTime::from_unix_timestamp(s.next_after(SUNDAY).unwrap() as i64).unwrap()
    }

    #[test]
    fn next_runs() {
        let t = OffsetDateTime::from_unix_timestamp(SUNDAY as i64).unwrap();
        assert_eq!(
            (t.hour(), t.minute(), t.weekday().number_days_from_sunday()),
            (10, 17, 0)
        );
        let hm = |d: OffsetDateTime| (d.day(), d.hour(), d.minute());
        assert_eq!(hm(at("* * * * *")), (22, 10, 18));
        assert_eq!(hm(at("*/15 * * * *")), (22, 10, 30));
        assert_eq!(hm(at("0 * * * *")), (22, 11, 0));
        assert_eq!(hm(at("@daily")), (23, 0, 0));
        assert_eq!(hm(at("30 2 * * MON-FRI")), (23, 2, 30));
        assert_eq!(hm(at("0 0 1 * *")), (1, 0, 0));
        assert_eq!(at("0 0 1 JAN *").year(), 2027);
        // Both day fields restricted: either matches (the 25th, or a Saturday first).
        assert_eq!(hm(at("0 12 25 * 6")), (25, 12, 0));
        assert_eq!(hm(at("0 12 30 * 6")), (28, 12, 0));
        // Sunday as 7.
        assert_eq!(hm(at("20 10 * * 7")), (22, 10, 20));
        assert_eq!(
            Schedule::parse("0 0 30 2 *").unwrap().next_after(SUNDAY),
            None
        );
    }

    #[test]
    fn bad_schedules_name_the_field() {
        for (text, expected) in [
            ("* * * *", "expected 5 fields"),
            ("60 * * * *", "minute field '60': 60 is out of range"),
            ("* 24 * * *", "hour field"),
            ("* * 0 * *", "day of month field"),
            ("* * * FOO *", "month field 'FOO': 'FOO' is not a value"),
            ("*/0 * * * *", "step '0'"),
            ("5-1 * * * *", "runs backwards"),
            ("@sometimes", "unknown descriptor"),
        ] {
            let e = Schedule::parse(text).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }
}
