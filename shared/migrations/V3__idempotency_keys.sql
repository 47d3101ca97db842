-- Retry-safe writes (docs/api.md, "Idempotency-Key"): the answer to a write
-- sent with an Idempotency-Key, stored in the same transaction as the write,
-- so the two commit together or not at all. A key belongs to its caller
-- (`subject`); `fingerprint` is the SHA-256 of the request (method, path,
-- body). Only successful answers are kept. Expired records are removed a few
-- at a time by later keyed writes (the index below).
CREATE TABLE idempotency_keys (
    subject     text        NOT NULL,
    key         text        NOT NULL,
    fingerprint bytea       NOT NULL,
    status      smallint    NOT NULL,
    body        bytea       NOT NULL,
    location    text,
    etag        text,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (subject, key)
);

CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
