"""Schemathesis hooks for scripts/schemathesis.sh.

Two kinds of request are skipped, because `cargo lambda watch`, the local
stand-in for API Gateway, cannot put them into an event and answers 500 on its
own, before any function runs:

- bodies that are not valid UTF-8 (API Gateway would base64-encode them); the
  functions' handling of such bodies is covered by
  `hostile_requests_get_a_json_4xx_and_write_nothing` in tests/it/faults.rs,
  which sends a base64-encoded non-UTF-8 body;
- header values with characters beyond ASCII (an `Idempotency-Key` that
  the schema's pattern refuses, say), which the HTTP client sends as Latin-1,
  not UTF-8. The coverage phase, which no filter hook reaches, sends them
  anyway, so `before_call` puts a key in their place that is invalid for
  another reason the emulator can carry (256 characters, one over the limit).
  The functions answer it with 400 `invalid_idempotency_key`; non-ASCII keys
  themselves are covered by `a_malformed_key_is_400_and_writes_nothing` in
  tests/it/idempotency.rs.
"""

import schemathesis


@schemathesis.hook
def filter_body(ctx, body):
    if isinstance(body, (bytes, bytearray)):
        try:
            bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


@schemathesis.hook
def filter_headers(ctx, headers):
    for value in (headers or {}).values():
        text = value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)
        if any(not (" " <= character <= "~") for character in text):
            return False
    return True


@schemathesis.hook
def before_call(ctx, case, kwargs):
    for name, value in list((case.headers or {}).items()):
        if isinstance(value, str) and any(ord(character) > 0x7E for character in value):
            case.headers[name] = "k" * 256
