//! `rediss://` against a PRIVATE `redis-server` with a TLS listener on a free loopback port,
//! configured with a certificate this test generates (rcgen): trusted through the configured
//! CA file, refused without it. (The shared Redis is never touched.)
//!
//! Needs `redis-server` built with TLS (Debian's is; scripts/services.sh installs it).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use runtime_common::tls::{self, TlsRoots};

struct Files {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA and a server certificate for 127.0.0.1 and localhost, signed by it.
fn certificates(dir: &Path) -> Files {
    std::fs::create_dir_all(dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Gatehouse test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    let files = Files {
        dir: dir.to_owned(),
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&files.ca, ca_cert.pem()).unwrap();
    std::fs::write(&files.cert, server_cert.pem()).unwrap();
    std::fs::write(&files.key, server_key.serialize_pem()).unwrap();
    files
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis(files: &Files, port: u16) -> Server {
    let child = Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1"])
        .args(["--tls-port", &port.to_string()])
        .arg("--tls-cert-file")
        .arg(&files.cert)
        .arg("--tls-key-file")
        .arg(&files.key)
        .arg("--tls-ca-cert-file")
        .arg(&files.ca)
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&files.dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (install it: scripts/services.sh)");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the private redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

#[tokio::test]
async fn rediss_trusts_the_configured_ca_file() {
    runtime_common::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!("gatehouse-tls-test-{}", std::process::id()));
    let files = certificates(&dir);
    let port = free_port();
    let _server = start_redis(&files, port);
    let url = format!("rediss://127.0.0.1:{port}/");

    let roots = TlsRoots::read(None, Some(&files.ca)).unwrap();
    let client = tls::redis_client_with(&url, &roots).unwrap();
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("a TLS connection trusting the configured CA");
    let () = redis::cmd("SET")
        .arg("gatehouse-tls")
        .arg("ok")
        .query_async(&mut connection)
        .await
        .unwrap();
    let value: String = redis::cmd("GET")
        .arg("gatehouse-tls")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(value, "ok");

    // With the system's roots only, the generated CA is unknown: refused.
    let untrusted = tls::redis_client_with(&url, &TlsRoots::default()).unwrap();
    let refused = untrusted.get_multiplexed_async_connection().await;
    assert!(
        refused.is_err(),
        "a certificate from an unknown CA was accepted"
    );
}
