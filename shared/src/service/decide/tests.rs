use super::*;
use crate::cache::protocol::{Stored, TOKEN_LEN, decode, encode_refreshing, encode_user};
use std::time::Duration;

const BODY: &[u8] = br#"{"id":"0190f0c2-1111-7000-8000-000000000001","email":"a@example.com","name":"A","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}"#;

/// Entries of these tests are stored at 10 s and fresh for 1 s.
const STORED_MS: u64 = 10_000;
const FRESH_MS: u64 = 1_000;

const DEFAULT: Policy = Policy {
    eager: EagerRefresh::Threshold { percent: 10 },
    fail_safe: true,
};

/// A moment at wall-clock `now_ms`, and a wait deadline `left_ms` later
/// (or earlier, when negative).
fn at(now_ms: u64, left_ms: i64) -> (Moment, Instant) {
    let now = Instant::now() + Duration::from_secs(10);
    let deadline = if left_ms >= 0 {
        now + Duration::from_millis(left_ms.unsigned_abs())
    } else {
        now - Duration::from_millis(left_ms.unsigned_abs())
    };
    let moment = Moment {
        now,
        now_ms,
        draw: 1.0,
    };
    (moment, deadline)
}

/// A hit on the entry, marked as being refreshed until `refreshing_until_ms`.
fn hit(refreshing_until_ms: Option<u64>) -> Result<Lookup, CacheError> {
    let entry = encode_user(STORED_MS, FRESH_MS, 7, Some("ada"), BODY);
    let value = match refreshing_until_ms {
        Some(until) => encode_refreshing(until, &[b'x'; TOKEN_LEN], &entry),
        None => entry,
    };
    match decode(value) {
        Stored::User(cached) => Ok(Lookup::Hit(cached)),
        other => panic!("{other:?}"),
    }
}

/// The step for a hit at `now_ms`, marked until `marked`, under `policy`.
fn step_for(now_ms: u64, marked: Option<u64>, policy: Policy) -> Step {
    let (moment, deadline) = at(now_ms, 40);
    next_step(hit(marked), moment, deadline, policy)
}

#[test]
fn a_fresh_entry_before_the_refresh_window_is_a_hit() {
    for now in [STORED_MS, STORED_MS + 899] {
        // Act
        let step = step_for(now, None, DEFAULT);

        // Assert
        assert!(
            matches!(step, Step::Hit(ref cached) if cached.version == 7 && cached.body() == BODY),
            "at {now}: {step:?}"
        );
    }
}

#[test]
fn in_the_last_tenth_of_its_freshness_one_hit_refreshes_early_unless_another_does() {
    // Act
    let free = step_for(STORED_MS + 900, None, DEFAULT);
    let taken = step_for(STORED_MS + 950, Some(STORED_MS + 3_000), DEFAULT);
    let abandoned = step_for(STORED_MS + 950, Some(STORED_MS + 940), DEFAULT);

    // Assert
    assert!(matches!(free, Step::Refresh(_, Due::Early)), "{free:?}");
    assert!(matches!(taken, Step::Hit(_)), "{taken:?}");
    assert!(
        matches!(abandoned, Step::Refresh(_, Due::Early)),
        "an expired refresh lease is taken over: {abandoned:?}"
    );
}

#[test]
fn past_its_freshness_an_entry_is_refreshed_or_answered_stale_while_another_refreshes() {
    // Act
    let free = step_for(STORED_MS + FRESH_MS, None, DEFAULT);
    let taken = step_for(STORED_MS + 5_000, Some(STORED_MS + 6_000), DEFAULT);
    let abandoned = step_for(STORED_MS + 5_000, Some(STORED_MS + 4_000), DEFAULT);

    // Assert
    assert!(matches!(free, Step::Refresh(_, Due::Expired)), "{free:?}");
    assert!(matches!(taken, Step::Stale(_)), "{taken:?}");
    assert!(
        matches!(abandoned, Step::Refresh(_, Due::Expired)),
        "{abandoned:?}"
    );
}

#[test]
fn without_eager_refresh_a_fresh_entry_is_always_a_hit() {
    // Arrange
    let policy = Policy {
        eager: EagerRefresh::from_percent(0),
        fail_safe: true,
    };

    // Act
    let step = step_for(STORED_MS + 999, None, policy);

    // Assert
    assert_eq!(policy.eager, EagerRefresh::Off);
    assert!(matches!(step, Step::Hit(_)), "{step:?}");
}

#[test]
fn without_fail_safe_whatever_redis_still_holds_counts_as_fresh() {
    // Arrange: Redis expires entries at the end of their freshness, so one
    // found past it means this clock runs ahead of the filler's.
    let policy = Policy {
        eager: EagerRefresh::Off,
        fail_safe: false,
    };

    // Act
    let step = step_for(STORED_MS + 5_000, None, policy);

    // Assert
    assert!(matches!(step, Step::Hit(_)), "{step:?}");
}

#[test]
fn xfetch_refreshes_earlier_the_smaller_its_draw_and_never_before_it_is_due() {
    // Arrange: a refresh takes 20 ms; beta 1.
    let policy = Policy {
        eager: EagerRefresh::XFetch {
            beta: 1.0,
            delta_ms: 20.0,
        },
        fail_safe: true,
    };
    let step = |now_ms: u64, draw: f64| {
        let (mut moment, deadline) = at(now_ms, 40);
        moment.draw = draw;
        next_step(hit(None), moment, deadline, policy)
    };

    // Act: 50 ms before the end, with draws 1, e^-1 and e^-3.
    let never = step(STORED_MS + 950, 1.0);
    let unlikely = step(STORED_MS + 950, (-1.0f64).exp());
    let likely = step(STORED_MS + 950, (-3.0f64).exp());

    // Assert: -20 ln(draw) is 0, 20 and 60 ms.
    assert!(matches!(never, Step::Hit(_)), "{never:?}");
    assert!(matches!(unlikely, Step::Hit(_)), "{unlikely:?}");
    assert!(matches!(likely, Step::Refresh(_, Due::Early)), "{likely:?}");
}

#[test]
fn negative_entries_and_leases_decide_the_same_before_and_after_the_deadline() {
    for left in [40, 0, -5] {
        // Arrange
        let (now, deadline) = at(STORED_MS, left);

        // Act
        let negative = next_step(Ok(Lookup::NotFound), now, deadline, DEFAULT);
        let leased = next_step(Ok(Lookup::Leased(Lease::new())), now, deadline, DEFAULT);

        // Assert
        assert!(
            matches!(negative, Step::NotFound),
            "{left} ms left: {negative:?}"
        );
        assert!(
            matches!(leased, Step::Fill(_)),
            "{left} ms left: {leased:?}"
        );
    }
}

#[test]
fn while_another_fills_a_miss_polls_until_the_deadline_and_never_past_it() {
    // Arrange
    let (now, far) = at(STORED_MS, 40);
    let (_, near) = at(STORED_MS, 1);

    // Act
    let early = next_step(Ok(Lookup::Filling), now, far, DEFAULT);
    let late = next_step(Ok(Lookup::Filling), now, near, DEFAULT);

    // Assert
    assert!(
        matches!(early, Step::WaitUntil(at) if at == now.now + FILL_POLL),
        "{early:?}"
    );
    assert!(
        matches!(late, Step::WaitUntil(at) if at == near),
        "{late:?}"
    );
}

#[test]
fn once_the_wait_is_over_a_miss_reads_postgres_without_filling() {
    for left in [0, -5] {
        // Arrange
        let (now, deadline) = at(STORED_MS, left);

        // Act
        let step = next_step(Ok(Lookup::Filling), now, deadline, DEFAULT);

        // Assert
        assert!(
            matches!(step, Step::ReadThrough),
            "{left} ms left: {step:?}"
        );
    }
}

#[test]
fn during_a_write_a_miss_reads_postgres_at_once_without_filling() {
    for left in [40, 0, -5] {
        // Arrange
        let (now, deadline) = at(STORED_MS, left);

        // Act
        let step = next_step(Ok(Lookup::Writing), now, deadline, DEFAULT);

        // Assert
        assert!(
            matches!(step, Step::ReadThrough),
            "{left} ms left: {step:?}"
        );
    }
}

#[test]
fn an_unreadable_value_is_replaced_and_a_redis_failure_bypasses_the_cache() {
    // Arrange
    let (now, deadline) = at(STORED_MS, 40);
    let timeout = CacheError::Timeout(Duration::from_millis(50));

    // Act
    let unreadable = next_step(
        Ok(Lookup::Unreadable(b"x".to_vec())),
        now,
        deadline,
        DEFAULT,
    );
    let failed = next_step(Err(timeout), now, deadline, DEFAULT);

    // Assert
    assert!(
        matches!(unreadable, Step::Replace(ref value) if value == b"x"),
        "{unreadable:?}"
    );
    assert!(
        matches!(failed, Step::Bypass(CacheError::Timeout(_))),
        "{failed:?}"
    );
}
