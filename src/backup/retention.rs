//! Which backups the retention rules keep: the union of what each rule keeps, as restic's
//! `forget` does, and always the newest.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Timelike, Utc};

use super::source::Retention;

/// The period a time falls in, for one rule: (year, ordinal within it, hour, rule).
type Bucket = fn(&DateTime<Utc>) -> (i32, u32, u32, u32);

/// The indexes of `times` (newest first) that `rules` keep.
pub(crate) fn kept(times: &[DateTime<Utc>], rules: &Retention) -> HashSet<usize> {
    let mut keep: HashSet<usize> = (0..times.len().min(rules.keep_last as usize)).collect();
    if !times.is_empty() {
        keep.insert(0);
    }
    let periods: [(u32, Bucket); 4] = [
        (rules.keep_hourly, |t| (t.year(), t.ordinal(), t.hour(), 0)),
        (rules.keep_daily, |t| (t.year(), t.ordinal(), 0, 0)),
        (rules.keep_weekly, |t| {
            let w = t.iso_week();
            (w.year(), w.week(), 0, 1)
        }),
        (rules.keep_monthly, |t| (t.year(), t.month(), 0, 2)),
    ];
    for (count, bucket) in periods {
        let mut seen = Vec::new();
        for (i, t) in times.iter().enumerate() {
            if seen.len() >= count as usize {
                break;
            }
            let b = bucket(t);
            // The first (newest) backup of each period is the one kept.
            if !seen.contains(&b) {
                seen.push(b);
                keep.insert(i);
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn rules_keep_their_union_and_the_newest() {
        // Newest first: two on Dec 4 (hours 10 and 9), one on Dec 3, one on Nov 20.
        let times = [
            at("2026-12-04T10:30:00Z"),
            at("2026-12-04T09:10:00Z"),
            at("2026-12-03T23:00:00Z"),
            at("2026-11-20T12:00:00Z"),
        ];
        let rules = |f: fn(&mut Retention)| {
            let mut r = Retention::default();
            f(&mut r);
            let mut k: Vec<usize> = kept(&times, &r).into_iter().collect();
            k.sort();
            k
        };
        assert_eq!(rules(|_| {}), vec![0]);
        assert_eq!(rules(|r| r.keep_last = 2), vec![0, 1]);
        assert_eq!(rules(|r| r.keep_hourly = 2), vec![0, 1]);
        assert_eq!(rules(|r| r.keep_daily = 2), vec![0, 2]);
        assert_eq!(rules(|r| r.keep_monthly = 2), vec![0, 3]);
        assert_eq!(rules(|r| r.keep_weekly = 9), vec![0, 3]);
        assert_eq!(
            rules(|r| {
                r.keep_last = 1;
                r.keep_daily = 3;
            }),
            vec![0, 2, 3]
        );
        assert!(kept(&[], &Retention::default()).is_empty());
    }
}
