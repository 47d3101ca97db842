//! What the benchmarks feed the functions: users bulk-inserted into the
//! benchmark's schema, API Gateway v2 events made from the fixtures of
//! `events/` (through `test_support`), and a seeded Zipf sampler.

use lambda_http::Request;
use serde_json::json;
use test_support::{FIXTURE_ID, fixture, request_from};
use uuid::Uuid;

/// A user row to insert. The name is padded so that the user's JSON body is
/// about 300 bytes, the size the floors read.
pub struct Row {
    pub id: Uuid,
    pub email: String,
    pub name: String,
}

impl Row {
    pub fn new(tag: &str, index: usize) -> Self {
        let mut name = format!("Bench User {tag} {index:06}, Countess of Lovelace");
        while name.len() < 112 {
            name.push_str(" and Analytical Engine");
        }
        name.truncate(112);
        Self {
            id: Uuid::now_v7(),
            email: format!("{tag}-{index:06}@bench.example.com"),
            name: name.trim_end().to_owned(),
        }
    }

    pub fn many(tag: &str, count: usize) -> Vec<Self> {
        (0..count).map(|index| Self::new(tag, index)).collect()
    }
}

/// Inserts `rows` into `{schema}.users`, 5,000 per statement, owned by the
/// fixtures' caller (who the timed requests come from).
pub async fn insert(
    pg: &tokio_postgres::Client,
    schema: &str,
    rows: &[Row],
) -> Result<(), tokio_postgres::Error> {
    let sql = format!(
        "INSERT INTO {schema}.users (id, email, name, owner) \
         SELECT *, '{}' FROM unnest($1::uuid[], $2::text[], $3::text[])",
        test_support::FIXTURE_SUBJECT
    );
    for chunk in rows.chunks(5_000) {
        let ids: Vec<Uuid> = chunk.iter().map(|row| row.id).collect();
        let emails: Vec<&str> = chunk.iter().map(|row| row.email.as_str()).collect();
        let names: Vec<&str> = chunk.iter().map(|row| row.name.as_str()).collect();
        pg.execute(&sql, &[&ids, &emails, &names]).await?;
    }
    Ok(())
}

/// The v2 fixtures, read once.
pub struct Events {
    find: String,
    update: String,
    delete: String,
    create: String,
    list: String,
}

impl Events {
    pub fn load() -> Self {
        Self {
            find: fixture("find-user.v2"),
            update: fixture("update-user.v2"),
            delete: fixture("delete-user.v2"),
            create: fixture("create-user.v2"),
            list: fixture("list-users.v2"),
        }
    }

    pub fn find(&self, id: Uuid) -> String {
        self.find.replace(FIXTURE_ID, &id.to_string())
    }

    pub fn delete(&self, id: Uuid) -> String {
        self.delete.replace(FIXTURE_ID, &id.to_string())
    }

    pub fn update(&self, id: Uuid, email: &str, name: &str) -> String {
        let text = self.update.replace(FIXTURE_ID, &id.to_string());
        with_body(&text, email, name)
    }

    pub fn create(&self, email: &str, name: &str) -> String {
        with_body(&self.create, email, name)
    }

    /// A create with `Idempotency-Key: key`.
    pub fn create_keyed(&self, email: &str, name: &str, key: &str) -> String {
        let mut event: serde_json::Value =
            serde_json::from_str(&self.create(email, name)).expect("create-user.v2 is JSON");
        event["headers"]["idempotency-key"] = json!(key);
        event.to_string()
    }

    /// `list-users.v2` asking for a page of `limit`.
    pub fn list(&self, limit: u32) -> String {
        let mut event: serde_json::Value =
            serde_json::from_str(&self.list).expect("list-users.v2 is JSON");
        event["rawQueryString"] = json!(format!("limit={limit}"));
        event["queryStringParameters"] = json!({ "limit": limit.to_string() });
        event.to_string()
    }
}

fn with_body(text: &str, email: &str, name: &str) -> String {
    let mut event: serde_json::Value = serde_json::from_str(text).expect("fixture is JSON");
    event["body"] = json!(json!({ "email": email, "name": name }).to_string());
    event.to_string()
}

/// Parses an event as the runtime would hand it to a handler.
pub fn request(event: &str) -> Request {
    request_from(event)
}

/// SplitMix64: a small, seeded, reproducible generator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf over ranks `0..n`: rank k is drawn with probability proportional to
/// 1 / (k + 1)^s.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(s);
            cdf.push(total);
        }
        for value in &mut cdf {
            *value /= total;
        }
        Self { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.next_f64();
        self.cdf.partition_point(|&p| p < u).min(self.cdf.len() - 1)
    }

    /// `count` draws from a generator seeded with `seed`.
    pub fn sequence(&self, seed: u64, count: usize) -> Vec<usize> {
        let mut rng = Rng::new(seed);
        (0..count).map(|_| self.sample(&mut rng)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_draws_rank_one_about_one_time_in_h_n() {
        let zipf = Zipf::new(10_000, 1.0);
        let draws = zipf.sequence(7, 100_000);
        let harmonic: f64 = (1..=10_000).map(|k| 1.0 / k as f64).sum();
        let share = draws.iter().filter(|&&rank| rank == 0).count() as f64 / 100_000.0;

        assert!((share - 1.0 / harmonic).abs() < 0.005, "share {share}");
        assert!(draws.iter().all(|&rank| rank < 10_000));
        assert_eq!(draws, zipf.sequence(7, 100_000));
    }

    #[test]
    fn user_bodies_are_about_three_hundred_bytes() {
        let row = Row::new("zipf", 123);
        let body = format!(
            r#"{{"id":"{}","email":"{}","name":"{}","created_at":"2026-11-26T04:20:58.465591Z","updated_at":"2026-11-26T04:20:58.465591Z"}}"#,
            row.id, row.email, row.name
        );

        assert!((280..=310).contains(&body.len()), "{} bytes", body.len());
    }
}
