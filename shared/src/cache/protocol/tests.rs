use super::*;

const BODY: &[u8] = br#"{"id":"0190f0c2-1111-7000-8000-000000000001","email":"a@example.com","name":"A","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}"#;

fn user(stored: Stored) -> Cached {
    match stored {
        Stored::User(user) => user,
        other => panic!("not a user: {other:?}"),
    }
}

#[test]
fn a_user_round_trips_its_times_version_owner_and_body() {
    for owner in [Some("7d0f3b1e-2c4a"), Some("a:b:c"), None] {
        // Arrange
        let value = encode_user(1_000, 250, 42, owner, BODY);

        // Act
        let stored = user(decode(value.clone()));

        // Assert
        let length = owner.map_or(0, str::len);
        assert!(
            value.starts_with(format!("v1000:250:42:{length}:").as_bytes()),
            "{owner:?}"
        );
        assert_eq!(stored.version, 42);
        assert_eq!(stored.owner.as_deref(), owner);
        assert_eq!((stored.stored_ms, stored.fresh_until_ms), (1_000, 1_250));
        assert_eq!(stored.refreshing_until_ms, None);
        assert_eq!(&stored.value[stored.body_start..], BODY);
        assert_eq!(stored.entry_start, 0);
    }
}

#[test]
fn a_user_being_refreshed_keeps_its_entry_and_tells_the_lease_deadline() {
    // Arrange
    let entry = encode_user(1_000, 250, 7, Some("ada"), BODY);
    let token = [b':'; TOKEN_LEN];

    // Act
    let stored = user(decode(encode_refreshing(5_000, &token, &entry)));

    // Assert
    assert_eq!(stored.refreshing_until_ms, Some(5_000));
    assert_eq!(&stored.value[stored.entry_start..], &entry[..]);
    assert_eq!(&stored.value[stored.body_start..], BODY);
    assert_eq!((stored.version, stored.owner.as_deref()), (7, Some("ada")));
}

#[test]
fn every_tag_decodes_to_its_state() {
    // Arrange
    let cases: [(&[u8], Stored); 4] = [
        (&encode_not_found(), Stored::NotFound),
        (b"l0123456789", Stored::Filling),
        (b"w", Stored::Writing),
        (b"wtoken1token2", Stored::Writing),
    ];

    // Act and assert
    for (value, expected) in cases {
        assert_eq!(decode(value.to_vec()), expected, "{value:?}");
    }
}

#[test]
fn values_that_are_not_a_user_are_unreadable_and_kept_as_they_are() {
    // Arrange
    let mut not_a_user = b"v1:2:3:0:".to_vec();
    not_a_user.extend_from_slice(br#"{"id":1}"#);
    let mut old_format = b"v1:0:".to_vec();
    old_format.extend_from_slice(BODY);
    let mut owner_too_long = b"v1:2:3:999:ada".to_vec();
    owner_too_long.extend_from_slice(BODY);
    let mut marker_without_entry = b"r5:".to_vec();
    marker_without_entry.extend_from_slice(&[b'x'; TOKEN_LEN]);
    marker_without_entry.extend_from_slice(BODY);
    let cases: [&[u8]; 12] = [
        &marker_without_entry,
        b"",
        b"v",
        b"vx:{}",
        b"v:{}",
        b"v1:x:{}",
        &not_a_user,
        &old_format,
        &owner_too_long,
        b"n-extra",
        b"x",
        b"{\"legacy\":true}",
    ];

    // Act and assert
    for value in cases {
        assert_eq!(
            decode(value.to_vec()),
            Stored::Unreadable(value.to_vec()),
            "{value:?}"
        );
    }
}

#[test]
fn keys_carry_the_prefix_the_format_version_and_the_id() {
    // Arrange
    let id = Uuid::parse_str("0190F0C2-1111-7000-8000-000000000001").unwrap();

    // Act
    let current = key(&key_prefix("users-api"), id);
    let [previous, next] = other_key_prefixes("users-api").map(|prefix| key(&prefix, id));

    // Assert
    assert_eq!(
        current,
        "users-api:v5:user:0190f0c2-1111-7000-8000-000000000001"
    );
    assert_eq!(
        previous,
        "users-api:v4:user:0190f0c2-1111-7000-8000-000000000001"
    );
    assert_eq!(
        next,
        "users-api:v6:user:0190f0c2-1111-7000-8000-000000000001"
    );
}

#[test]
fn millis_is_never_zero() {
    assert_eq!(millis(Duration::ZERO), 1);
    assert_eq!(millis(Duration::from_secs(2)), 2000);
}
