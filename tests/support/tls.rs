//! TLS test fixtures: a throwaway certificate authority, server certificates
//! for the loopback address, and a private PostgreSQL 15 that accepts TLS
//! connections only.
//!
//! Everything lives in a temporary directory removed on drop; the server runs
//! on a free loopback port, as the `postgres` OS user (PostgreSQL refuses to
//! run as root), and is stopped on drop. The shared Postgres is not touched.

use crate::servers::free_port;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory of the test's own under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{label}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` in the directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority made for one test.
pub struct TestCa {
    /// The CA certificate, PEM: what a client must trust.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A server certificate and its private key, both PEM.
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `127.0.0.1` and `localhost`, signed by this CA.
    pub fn server_cert(&self) -> ServerCert {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign server cert");
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The uid and gid of the `postgres` OS user, from `/etc/passwd`.
pub(crate) fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|line| line.starts_with("postgres:"))
        .expect("a postgres OS user (apt-get install postgresql creates it)");
    let fields: Vec<&str> = line.split(':').collect();
    (
        fields[2].parse().expect("postgres uid"),
        fields[3].parse().expect("postgres gid"),
    )
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Runs a PostgreSQL binary as the `postgres` user; panics with its output on failure.
fn run_as_postgres(binary: &str, args: &[&str], cwd: &Path) {
    let (uid, gid) = postgres_user();
    let output = Command::new(Path::new(PG_BIN).join(binary))
        .args(args)
        .current_dir(cwd)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap_or_else(|error| panic!("run {binary}: {error}"));
    assert!(
        output.status.success(),
        "{binary} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A private PostgreSQL 15 that only accepts TLS over TCP (`hostssl` is the
/// only line of its `pg_hba.conf`), trusting the user `postgres` without a
/// password. Its certificate is issued by [`PostgresTlsServer::ca`].
pub struct PostgresTlsServer {
    pub port: u16,
    pub ca: TestCa,
    ca_file: PathBuf,
    data: PathBuf,
    dir: TempDir,
}

impl PostgresTlsServer {
    /// Creates the cluster (initdb) and starts it; returns once it accepts
    /// connections (`pg_ctl start -w`, bounded by 60 s).
    pub fn start() -> Self {
        Self::start_with_password(None)
    }

    /// With `Some(password)`, the user `postgres` must give it
    /// (scram-sha-256), so a connection that works proves the password was sent.
    pub fn start_with_password(password: Option<&str>) -> Self {
        let dir = TempDir::new("pg-tls");
        let ca = TestCa::new("users-api test CA (postgres)");
        let server = ca.server_cert();
        let ca_file = dir.write("ca.pem", &ca.cert_pem);
        let cert_file = dir.write("server.crt", &server.cert_pem);
        let key_file = dir.write("server.key", &server.key_pem);
        let data = dir.path().join("data");
        let (uid, gid) = postgres_user();
        for path in [dir.path(), &cert_file, &key_file, &ca_file] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to postgres");
        }
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
            .expect("key file mode");
        let data_arg = data.to_str().expect("utf-8 temp path").to_owned();
        let method = if password.is_some() {
            "scram-sha-256"
        } else {
            "trust"
        };
        let auth = format!("--auth={method}");
        let mut initdb = vec![
            "-D",
            &data_arg,
            "-U",
            "postgres",
            &auth,
            "--no-sync",
            "--no-locale",
            "-E",
            "UTF8",
        ];
        let password_file = password.map(|password| {
            let file = dir.write("password", password);
            std::os::unix::fs::chown(&file, Some(uid), Some(gid)).expect("chown to postgres");
            format!("--pwfile={}", file.display())
        });
        if let Some(option) = &password_file {
            initdb.push(option);
        }
        run_as_postgres("initdb", &initdb, dir.path());
        let port = free_port();
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "# TLS only: no plain `host` line, so a connection that works used TLS.\n\
                 hostssl all all 127.0.0.1/32 {method}\n"
            ),
        )
        .expect("write pg_hba.conf");
        let settings = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{dir}'\nmax_connections = 20\nfsync = off\n\
             ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n",
            dir = dir.path().display(),
            cert = cert_file.display(),
            key = key_file.display(),
        );
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        std::io::Write::write_all(&mut conf, settings.as_bytes()).expect("write postgresql.conf");
        let log = dir.path().join("postgres.log");
        let log_arg = log.to_str().expect("utf-8 temp path");
        let server = Self {
            port,
            ca,
            ca_file,
            data,
            dir,
        };
        run_as_postgres(
            "pg_ctl",
            &["start", "-w", "-t", "60", "-D", &data_arg, "-l", log_arg],
            server.dir.path(),
        );
        server
    }

    /// The CA certificate file a client must trust.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// `postgres://postgres@127.0.0.1:{port}/postgres?{params}`.
    pub fn url(&self, params: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?{params}",
            self.port
        )
    }
}

impl Drop for PostgresTlsServer {
    fn drop(&mut self) {
        let (uid, gid) = postgres_user();
        let _ = Command::new(Path::new(PG_BIN).join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-w", "-t", "30", "-D"])
            .arg(&self.data)
            .current_dir(self.dir.path())
            .uid(uid)
            .gid(gid)
            .output();
    }
}

/// The certificate problem inside a failed TLS connection, if that is why it
/// failed. Walks the error's sources, looking through the wrappers whose
/// `source` skips the error they hold: `io::Error` (tokio-postgres, tokio-rustls)
/// and `Arc<dyn Error>` (the redis crate).
pub fn certificate_error(
    error: &(dyn std::error::Error + 'static),
) -> Option<rustls::CertificateError> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut pending: Vec<&(dyn std::error::Error + 'static)> = vec![error];
    while let Some(error) = pending.pop() {
        if let Some(rustls::Error::InvalidCertificate(problem)) =
            error.downcast_ref::<rustls::Error>()
        {
            return Some(problem.clone());
        }
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            pending.push(inner);
        }
        if let Some(inner) = error.downcast_ref::<Shared>() {
            pending.push(inner.as_ref());
        }
        pending.extend(error.source());
    }
    None
}
