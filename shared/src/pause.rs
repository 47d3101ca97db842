//! A pause point for deterministic race tests.
//!
//! The service passes through [`PausePoint::pass`] between the database read
//! of a cache miss and the cache fill, which is exactly where the classic
//! cache-aside race happens. Production state never sets one (`None` costs a
//! branch); a test parks a `find` there, runs a write to completion, and
//! releases it.

use tokio::sync::Semaphore;

#[derive(Debug)]
pub struct PausePoint {
    reached: Semaphore,
    released: Semaphore,
}

impl Default for PausePoint {
    fn default() -> Self {
        Self {
            reached: Semaphore::new(0),
            released: Semaphore::new(0),
        }
    }
}

impl PausePoint {
    /// Called by the service: signals arrival and waits for [`PausePoint::release`].
    pub async fn pass(&self) {
        self.reached.add_permits(1);
        if let Ok(permit) = self.released.acquire().await {
            permit.forget();
        }
    }

    /// Waits until a caller has arrived at the pause point.
    pub async fn reached(&self) {
        if let Ok(permit) = self.reached.acquire().await {
            permit.forget();
        }
    }

    /// Lets one parked caller continue.
    pub fn release(&self) {
        self.released.add_permits(1);
    }
}
