//! TLS for the Postgres connection (RDS, Aurora, RDS Proxy), through rustls.
//!
//! Trust is a PEM CA bundle file when one is configured: RDS certificates are
//! issued by the Amazon RDS CAs, which are in no public root list, so
//! production sets the bundle (`PG_CA_FILE`, the RDS global bundle) and
//! trusts nothing else. Without it, the system's roots (RDS Proxy's
//! certificates chain to public CAs). The system store, not a compiled-in
//! copy of Mozilla's list: the Redis client loads it anyway, and a second
//! copy of the roots in every binary cost more of the 2 MB zip budget than it
//! saved (see BENCHMARKS.md).
//!
//! **rustls always verifies.** tokio-postgres knows `sslmode=disable`,
//! `prefer` (its default) and `require`; with this connector every TLS
//! handshake checks the chain against the roots above and the certificate
//! against the host name (or IP address) of the URL, so `require` here is
//! libpq's `verify-full`, stricter than libpq's `require`. The store uses this
//! connector for `sslmode=require` only; `prefer` (tokio-postgres' default)
//! and `disable` connect in plain text, as a local server with a self-signed
//! certificate needs. Production URLs say `require`; [`normalize_sslmode`]
//! maps libpq's `verify-ca`/`verify-full` (which tokio-postgres rejects) to it.
//!
//! The crypto provider is `ring`, passed explicitly: no process-wide default
//! to install, and no cmake/nasm toolchain as aws-lc-rs would need.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Why a TLS client configuration could not be built. Names the file, which
/// holds public certificates only.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA bundle {path}")]
    ReadCaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA bundle {path} is not valid PEM")]
    InvalidPem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("CA bundle {path} holds no usable CA certificate")]
    NoCertificates { path: PathBuf },
    #[error("TLS configuration rejected by rustls")]
    Rustls(#[from] rustls::Error),
}

/// The root store: every certificate of `ca_file` when one is given (the RDS
/// bundle is all an RDS or Aurora endpoint needs), the system's roots
/// otherwise (RDS Proxy's certificates chain to public CAs).
pub fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let Some(path) = ca_file else {
        // Unreadable entries are skipped; an empty store refuses every server.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        return Ok(roots);
    };
    let pem = std::fs::read(path).map_err(|source| TlsError::ReadCaFile {
        path: path.to_owned(),
        source,
    })?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::InvalidPem {
            path: path.to_owned(),
            source,
        })?;
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(TlsError::NoCertificates {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// A rustls client configuration (ring provider, TLS 1.2 and 1.3) trusting
/// [`root_store`]`(ca_file)`.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca_file)?)
        .with_no_client_auth())
}

/// The connector to hand to `tokio_postgres::connect` or deadpool's
/// `Manager::from_config`, in place of `NoTls`. Build it once per cold start
/// (it reads `ca_file`); clones share the configuration.
pub fn postgres_tls(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, TlsError> {
    Ok(MakeRustlsConnect::new(client_config(ca_file)?))
}

/// Rewrites libpq `sslmode` values tokio-postgres does not parse into their
/// equivalent with this connector: `verify-ca` and `verify-full` become
/// `require` (which verifies chain and host name, see the module docs) and
/// `allow` becomes `prefer`. Works on URLs (`?sslmode=verify-full`) and on
/// `key=value` strings; anything else is returned unchanged.
pub fn normalize_sslmode(database_url: &str) -> Cow<'_, str> {
    const REWRITES: [(&str, &str); 3] = [
        ("sslmode=verify-full", "sslmode=require"),
        ("sslmode=verify-ca", "sslmode=require"),
        ("sslmode=allow", "sslmode=prefer"),
    ];
    let mut url = Cow::Borrowed(database_url);
    for (from, to) in REWRITES {
        let Some(start) = url.find(from) else {
            continue;
        };
        let before = url[..start].chars().next_back();
        let after = url[start + from.len()..].chars().next();
        let delimited_before = matches!(before, None | Some('?' | '&' | ' '));
        let delimited_after = matches!(after, None | Some('&' | ' ' | '#'));
        if delimited_before && delimited_after {
            url = Cow::Owned(format!(
                "{}{to}{}",
                &url[..start],
                &url[start + from.len()..]
            ));
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_verify_modes_become_require_and_others_are_untouched() {
        let cases = [
            (
                "postgres://u@h/d?sslmode=verify-full",
                "postgres://u@h/d?sslmode=require",
            ),
            (
                "postgres://u@h/d?sslmode=verify-ca&application_name=x",
                "postgres://u@h/d?sslmode=require&application_name=x",
            ),
            (
                "host=h sslmode=allow user=u",
                "host=h sslmode=prefer user=u",
            ),
            (
                "postgres://u@h/d?sslmode=require",
                "postgres://u@h/d?sslmode=require",
            ),
            ("postgres://u@h/d", "postgres://u@h/d"),
            (
                "postgres://u@h/d?xsslmode=verify-full",
                "postgres://u@h/d?xsslmode=verify-full",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(normalize_sslmode(input), expected, "{input}");
        }
        let verify_full = "postgres://u@h/d?sslmode=verify-full";
        assert!(verify_full.parse::<tokio_postgres::Config>().is_err());
        assert!(
            normalize_sslmode(verify_full)
                .parse::<tokio_postgres::Config>()
                .is_ok()
        );
    }

    #[test]
    fn without_a_bundle_the_roots_are_the_systems() {
        let mut system = RootCertStore::empty();
        system.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);

        let roots = root_store(None).unwrap();

        assert_eq!(roots.len(), system.len());
    }

    #[test]
    fn a_missing_or_empty_bundle_is_an_error_naming_the_file() {
        let missing = Path::new("/nonexistent/rds-global-bundle.pem");
        let error = root_store(Some(missing)).unwrap_err();
        assert!(matches!(error, TlsError::ReadCaFile { .. }));
        assert!(error.to_string().contains("rds-global-bundle.pem"));

        let empty = std::env::temp_dir().join(format!("empty-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = root_store(Some(&empty)).unwrap_err();
        std::fs::remove_file(&empty).unwrap();
        assert!(matches!(error, TlsError::NoCertificates { .. }), "{error}");
    }
}
