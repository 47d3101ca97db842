//! Rebuilds the library when a migration is added or changed: `migrate.rs`
//! embeds `migrations/` at compile time, and cargo does not otherwise notice
//! a new file there.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
