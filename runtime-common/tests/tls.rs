//! `rediss://` against a PRIVATE `redis-server` and `amqps://` against a PRIVATE RabbitMQ
//! node, each with a TLS listener on a free loopback port configured with a certificate this
//! test generates (rcgen): trusted through the configured CA file, refused without it. (The
//! shared Redis and RabbitMQ are never touched.)
//!
//! Needs `redis-server` built with TLS and `rabbitmq-server` (Debian's packages, which
//! scripts/services.sh installs). The RabbitMQ node takes about 10 s to start.

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

/// A server process, killed when dropped, with the process whose pid it wrote to `pid_file`
/// (rabbitmq-server's script starts the Erlang VM as a child and writes its pid there).
/// Only positive, exact pids are signalled.
struct Server {
    child: Child,
    pid_file: Option<PathBuf>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let vm = self
            .pid_file
            .as_ref()
            .and_then(|file| std::fs::read_to_string(file).ok())
            .and_then(|text| text.trim().parse::<u32>().ok())
            .filter(|&pid| pid > 1 && pid != std::process::id());
        if let Some(pid) = vm {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(command: &mut Command, pid_file: Option<PathBuf>) -> Server {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {command:?} (scripts/services.sh installs it): {e}")
        });
    Server { child, pid_file }
}

fn wait_for_port(port: u16, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_redis(files: &Files, port: u16) -> Server {
    let server = spawn(
        Command::new("redis-server")
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
            .arg(&files.dir),
        None,
    );
    wait_for_port(port, Duration::from_secs(20), "the private redis-server");
    server
}

/// A private RabbitMQ node (its own name, ports, directories; no plugins) with a TLS listener
/// on `tls_port`.
fn start_rabbitmq(files: &Files, tls_port: u16) -> Server {
    let dir = &files.dir;
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let config = format!(
        "loopback_users = none\n\
         listeners.tcp.1 = 127.0.0.1:{tcp}\n\
         listeners.ssl.1 = 127.0.0.1:{tls_port}\n\
         ssl_options.cacertfile = {ca}\n\
         ssl_options.certfile = {cert}\n\
         ssl_options.keyfile = {key}\n\
         ssl_options.verify = verify_none\n\
         ssl_options.fail_if_no_peer_cert = false\n",
        tcp = free_port(),
        ca = files.ca.display(),
        cert = files.cert.display(),
        key = files.key.display(),
    );
    std::fs::write(dir.join("rabbitmq.conf"), config).unwrap();
    std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
    std::fs::write(dir.join("rabbitmq-env.conf"), "").unwrap();
    // Debian's /usr/sbin wrapper switches to the `rabbitmq` user when run as root, which could
    // not write this directory: run the script behind it.
    let debian = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
    let program = if debian.exists() {
        debian.to_owned()
    } else {
        PathBuf::from("rabbitmq-server")
    };
    let server = spawn(
        Command::new(program)
            .env("HOME", &home)
            .env(
                "RABBITMQ_NODENAME",
                // One node per test: the TLS tests of lapin and amqprs may run at once.
                format!("gatehouse-tls-{}-{tls_port}@localhost", std::process::id()),
            )
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_DIST_PORT", free_port().to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            ),
        Some(dir.join("pid")),
    );
    wait_for_port(
        tls_port,
        Duration::from_secs(90),
        "the private RabbitMQ node",
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_trusts_the_configured_ca_file() {
    runtime_common::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!("gatehouse-amqps-test-{}", std::process::id()));
    let files = certificates(&dir);
    let port = free_port();
    let _node = start_rabbitmq(&files, port);
    let url = format!("amqps://guest:guest@127.0.0.1:{port}/%2f");
    let connect = |roots: TlsRoots| {
        let url = url.clone();
        async move {
            lapin::Connection::connect_with_config(
                &url,
                lapin::ConnectionProperties::default(),
                tls::amqp_with(&roots),
                async_rs::Runtime::tokio_current(),
            )
            .await
        }
    };

    let roots = TlsRoots::read(Some(&files.ca), None).unwrap();
    let connection = connect(roots)
        .await
        .expect("a TLS connection trusting the configured CA");
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_declare(
            "gatehouse-tls".into(),
            lapin::ExchangeKind::Fanout,
            lapin::options::ExchangeDeclareOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("the broker answers over TLS");
    let _ = connection.close(200, "done".into()).await;

    // With the system's and Mozilla's roots only, the generated CA is unknown: refused.
    let error = connect(TlsRoots::default())
        .await
        .expect_err("a certificate from an unknown CA was accepted");
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );
}

/// The amqprs events connection (`amqp.client = "amqprs"`) trusts the same CA file through
/// Gatehouse's own rustls settings, and refuses the unknown CA without it.
#[cfg(feature = "amqprs")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_amqprs_trusts_the_configured_ca_file() {
    runtime_common::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!("gatehouse-amqprs-tls-{}", std::process::id()));
    let files = certificates(&dir);
    let port = free_port();
    let _node = start_rabbitmq(&files, port);
    let url = format!("amqps://guest:guest@127.0.0.1:{port}/%2f");
    use runtime_common::amqprs_link::try_connection;

    let roots = TlsRoots::read(Some(&files.ca), None).unwrap();
    try_connection(&url, &roots)
        .await
        .expect("an amqprs TLS connection trusting the configured CA");
    let error = try_connection(&url, &TlsRoots::default())
        .await
        .expect_err("a certificate from an unknown CA was accepted");
    assert!(
        format!("{error:#}").to_lowercase().contains("certificate"),
        "{error:#}"
    );
}
