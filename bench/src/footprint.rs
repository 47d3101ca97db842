//! Deployment size: each release binary, and the zip Lambda would receive,
//! made as cargo lambda makes it (the binary named `bootstrap`, deflated, the
//! only entry). The arm64 zips are the ones `cargo lambda build --arm64
//! --output-format zip` left in `target/lambda/<function>/`, when it could run.

use crate::measure::BoxError;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Footprint {
    pub function: String,
    pub binary_bytes: u64,
    pub zip_bytes: Option<u64>,
    pub arm64_zip_bytes: Option<u64>,
}

pub fn measure(
    function: &str,
    binary: &Path,
    arm64_dir: Option<&Path>,
) -> Result<Footprint, BoxError> {
    let binary_bytes = std::fs::metadata(binary)?.len();
    let zip_bytes = match zipped_size(function, binary) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            eprintln!("  zip of {function} failed: {error}");
            None
        }
    };
    let arm64_zip_bytes = arm64_dir
        .map(|dir| dir.join(function).join("bootstrap.zip"))
        .and_then(|zip| std::fs::metadata(zip).ok())
        .map(|metadata| metadata.len());
    Ok(Footprint {
        function: function.to_owned(),
        binary_bytes,
        zip_bytes,
        arm64_zip_bytes,
    })
}

/// Zips a copy of `binary` named `bootstrap` with the `zip` tool (deflate,
/// default level, no extra attributes) in a directory of our own.
fn zipped_size(function: &str, binary: &Path) -> Result<u64, BoxError> {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("users-api-bench-{}-{function}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        std::fs::copy(binary, dir.join("bootstrap"))?;
        let status = Command::new("zip")
            .args(["-q", "-X", "bootstrap.zip", "bootstrap"])
            .current_dir(&dir)
            .status()?;
        if !status.success() {
            return Err(format!("zip exited with {status}").into());
        }
        Ok::<_, BoxError>(std::fs::metadata(dir.join("bootstrap.zip"))?.len())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
