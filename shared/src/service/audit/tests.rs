use super::*;
use crate::store::Sampled;

const BOUND: Duration = Duration::from_secs(1);

fn row(version: Option<i64>, pending_ms: Option<u64>) -> Sampled {
    Sampled {
        id: Uuid::nil(),
        version,
        pending: pending_ms.map(Duration::from_millis),
    }
}

fn user(version: i64) -> Held {
    Held::User {
        version,
        stored_ms: 0,
    }
}

#[test]
fn an_entry_is_judged_by_its_rows_version_and_a_pending_record_within_the_bound() {
    use Judgment::*;
    // (what the key held, the row, the verdict)
    let table = [
        (user(3), row(Some(3), None), Some(Consistent)),
        (user(3), row(Some(3), Some(5_000)), Some(Consistent)),
        // Superseded: a finding, unless a record within the bound waits.
        (user(3), row(Some(4), None), Some(Inconsistent)),
        (user(3), row(Some(4), Some(200)), Some(Pending)),
        (user(3), row(Some(4), Some(1_500)), Some(Inconsistent)),
        // Postgres rolled back, or the user gone.
        (user(3), row(Some(2), None), Some(Inconsistent)),
        (user(3), row(None, None), Some(Inconsistent)),
        (user(3), row(None, Some(10)), Some(Pending)),
        // Negative entries the other way round.
        (Held::NotFound, row(None, None), Some(Consistent)),
        (Held::NotFound, row(Some(1), None), Some(Inconsistent)),
        (Held::NotFound, row(Some(1), Some(10)), Some(Pending)),
        // No entry: writes in progress, a lease, something unreadable.
        (Held::Writing, row(Some(4), None), None),
        (Held::Nothing, row(None, None), None),
    ];
    for (held, row, expected) in table {
        assert_eq!(judge(held, &row, BOUND), expected, "{held:?} {row:?}");
    }
}

#[test]
fn voided_ids_come_due_after_their_time_oldest_first_and_the_queue_is_bounded() {
    // Arrange
    let recent = Recent::default();
    let now = Instant::now();
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    recent.push(&[a, b], now);
    recent.push(&[c], now + Duration::from_secs(60));

    // Act
    let first = recent.take_due(now, 1);
    let second = recent.take_due(now, 5);
    let none_due = recent.take_due(now, 5);
    for _ in 0..sample::RECENT_MOST + 10 {
        recent.push(&[a], now);
    }
    let bounded = recent.take_due(now + Duration::from_secs(120), usize::MAX);

    // Assert
    assert_eq!(first, [a]);
    assert_eq!(second, [b]);
    assert!(none_due.is_empty());
    assert_eq!(bounded.len(), sample::RECENT_MOST);
}
