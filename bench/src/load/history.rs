//! The checker: every answered request on a user goes into a history, and
//! after the run every find is held against the writes acknowledged before it
//! started, as tests/it/cache_races.rs does with a handful of users. The
//! versions are the database's own (`version` of the user's body, which each
//! update raises by one), so concurrent writers to one user need no order of
//! their own: the highest version acknowledged before a find started is the
//! least it may return.
//!
//! A find is stale when it started after
//! - an update of its user was acknowledged, and returned an older version;
//! - a delete of its user was acknowledged, and returned the user.
//!
//! and it is unexplained when it answered 404 for a user no delete had
//! started for before it returned.

use std::collections::HashMap;
use std::time::Instant;
use uuid::Uuid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A find answered 200 with this version, or 404 (`None`).
    Read(Option<i64>),
    /// An update or create acknowledged with this version.
    Wrote(i64),
    /// A delete acknowledged.
    Deleted,
    /// A delete sent (answered or not): a 404 after it is explained.
    DeleteSent,
}

#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub event: Event,
    pub start: Instant,
    pub end: Instant,
}

#[derive(Default)]
pub struct History {
    users: HashMap<Uuid, Vec<Entry>>,
}

/// The checker's findings.
#[derive(Default, Debug)]
pub struct Verdict {
    pub reads: u64,
    pub writes: u64,
    pub stale: u64,
    pub unexplained_404: u64,
    pub first: Option<String>,
}

impl History {
    pub fn record(&mut self, user: Uuid, entry: Entry) {
        self.users.entry(user).or_default().push(entry);
    }

    pub fn check(&self) -> Verdict {
        let mut verdict = Verdict::default();
        for (user, entries) in &self.users {
            let mut writes: Vec<(Instant, i64)> = Vec::new();
            let mut deleted: Option<Instant> = None;
            let mut delete_sent: Option<Instant> = None;
            for entry in entries {
                match entry.event {
                    Event::Wrote(version) => writes.push((entry.end, version)),
                    Event::Deleted => {
                        deleted = Some(deleted.map_or(entry.end, |d| d.min(entry.end)));
                    }
                    Event::DeleteSent => {
                        delete_sent = Some(delete_sent.map_or(entry.start, |d| d.min(entry.start)));
                    }
                    Event::Read(_) => {}
                }
            }
            verdict.writes += writes.len() as u64;
            writes.sort_unstable();
            // The highest version acknowledged by each write's end.
            let mut highest = i64::MIN;
            let acknowledged: Vec<(Instant, i64)> = writes
                .iter()
                .map(|&(end, version)| {
                    highest = highest.max(version);
                    (end, highest)
                })
                .collect();
            for entry in entries {
                let Event::Read(found) = entry.event else {
                    continue;
                };
                verdict.reads += 1;
                let before = acknowledged.partition_point(|&(end, _)| end < entry.start);
                let least = before.checked_sub(1).map(|i| acknowledged[i].1);
                let problem = match found {
                    Some(_) if deleted.is_some_and(|d| d < entry.start) => {
                        Some(format!("{user}: found after its delete was acknowledged"))
                    }
                    Some(version) if least.is_some_and(|least| version < least) => Some(format!(
                        "{user}: found version {version} after version {} was acknowledged",
                        least.unwrap_or_default()
                    )),
                    None if delete_sent.is_none_or(|sent| sent > entry.end) => {
                        verdict.unexplained_404 += 1;
                        verdict
                            .first
                            .get_or_insert(format!("{user}: 404 with no delete sent"));
                        None
                    }
                    _ => None,
                };
                if let Some(problem) = problem {
                    verdict.stale += 1;
                    verdict.first.get_or_insert(problem);
                }
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64, base: Instant) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn entry(event: Event, start: u64, end: u64, base: Instant) -> Entry {
        Entry {
            event,
            start: at(start, base),
            end: at(end, base),
        }
    }

    #[test]
    fn a_find_older_than_an_acknowledged_write_is_stale_and_a_concurrent_one_is_not() {
        let base = Instant::now();
        let user = Uuid::now_v7();
        let mut history = History::default();
        history.record(user, entry(Event::Wrote(1), 0, 1, base));
        history.record(user, entry(Event::Wrote(2), 10, 20, base));
        // Started during the write: either version is right.
        history.record(user, entry(Event::Read(Some(1)), 15, 25, base));
        // Started after it: stale.
        history.record(user, entry(Event::Read(Some(1)), 30, 31, base));
        history.record(user, entry(Event::Read(Some(2)), 30, 31, base));

        let verdict = history.check();

        assert_eq!(verdict.reads, 3);
        assert_eq!(verdict.writes, 2);
        assert_eq!(verdict.stale, 1);
        assert!(verdict.first.unwrap().contains("version 1 after version 2"));
    }

    #[test]
    fn a_find_after_an_acknowledged_delete_is_stale_and_a_404_needs_a_delete() {
        let base = Instant::now();
        let (gone, kept) = (Uuid::now_v7(), Uuid::now_v7());
        let mut history = History::default();
        history.record(gone, entry(Event::DeleteSent, 10, 10, base));
        history.record(gone, entry(Event::Deleted, 10, 20, base));
        history.record(gone, entry(Event::Read(Some(1)), 15, 16, base));
        history.record(gone, entry(Event::Read(None), 15, 16, base));
        history.record(gone, entry(Event::Read(Some(1)), 25, 26, base));
        history.record(kept, entry(Event::Read(None), 25, 26, base));

        let verdict = history.check();

        assert_eq!(verdict.stale, 1);
        assert_eq!(verdict.unexplained_404, 1);
    }
}
