//! TLS to RabbitMQ (`amqps://`) and Redis (`rediss://`): which certificate authorities are
//! trusted.
//!
//! Owns: the process-wide choice, made once at start-up ([`configure`]): the system's roots
//! (the default) and a CA file per service (`GATEHOUSE_AMQP_CA_FILE`,
//! `GATEHOUSE_REDIS_CA_FILE`, PEM; for RabbitMQ trusted besides the system's roots, for Redis
//! instead of them, as lapin and redis do it), read at start-up so that a missing file is an
//! error then, not at the first reconnect. Does not own connecting (the
//! broker supervisor, the session store, the demo and `gatehouse status` ask here for the
//! settings) or the URL's scheme (`amqps://` and `rediss://` turn TLS on).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;
use lapin::tcp::OwnedTLSConfig;

/// The trusted authorities, as PEM text, when not the system's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsRoots {
    /// For `amqps://`.
    pub amqp_ca: Option<String>,
    /// For `rediss://`.
    pub redis_ca: Option<String>,
}

impl TlsRoots {
    /// Reads the CA files (PEM) that are given.
    pub fn read(amqp_ca: Option<&Path>, redis_ca: Option<&Path>) -> anyhow::Result<Self> {
        let read = |path: Option<&Path>| -> anyhow::Result<Option<String>> {
            path.map(|path| {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the CA file {}", path.display()))?;
                anyhow::ensure!(
                    pem.contains("-----BEGIN CERTIFICATE-----"),
                    "the CA file {} holds no PEM certificate",
                    path.display()
                );
                Ok(pem)
            })
            .transpose()
        };
        Ok(Self {
            amqp_ca: read(amqp_ca)?,
            redis_ca: read(redis_ca)?,
        })
    }
}

static ROOTS: OnceLock<TlsRoots> = OnceLock::new();

/// Sets the process's trusted authorities (the first call wins).
pub fn configure(roots: TlsRoots) {
    let _ = ROOTS.set(roots);
}

pub(crate) fn roots() -> &'static TlsRoots {
    ROOTS.get_or_init(TlsRoots::default)
}

/// lapin's TLS settings for a connection (used only by `amqps://` URLs), with the process's
/// roots.
pub fn amqp() -> OwnedTLSConfig {
    amqp_with(roots())
}

/// lapin's TLS settings trusting `roots`.
pub fn amqp_with(roots: &TlsRoots) -> OwnedTLSConfig {
    OwnedTLSConfig {
        identity: None,
        cert_chain: roots.amqp_ca.clone(),
    }
}

/// The rustls settings of amqprs' `amqps://` connections (`amqprs_link`): the system's roots
/// plus the configured CA file, as lapin trusts them.
#[cfg(feature = "amqprs")]
pub(crate) fn amqprs_connector(roots: &TlsRoots) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut store = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    store.add_parsable_certificates(native.certs);
    if let Some(pem) = &roots.amqp_ca {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            store
                .add(cert.context("the AMQP CA file")?)
                .context("the AMQP CA file")?;
        }
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// A Redis client for `url` with the process's roots.
pub fn redis_client(url: &str) -> redis::RedisResult<redis::Client> {
    redis_client_with(url, roots())
}

/// A Redis client for `url`, trusting `roots` for `rediss://` (the system's without a CA file).
pub fn redis_client_with(url: &str, roots: &TlsRoots) -> redis::RedisResult<redis::Client> {
    match &roots.redis_ca {
        Some(pem) if url.starts_with("rediss://") => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.as_bytes().to_vec()),
            },
        ),
        _ => redis::Client::open(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_must_exist_and_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("gatehouse-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(
            &good,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let bad = dir.join("key.txt");
        std::fs::write(&bad, "not a certificate").unwrap();
        let roots = TlsRoots::read(Some(&good), None).unwrap();
        assert!(roots.amqp_ca.is_some() && roots.redis_ca.is_none());
        let missing = TlsRoots::read(None, Some(&dir.join("nope.pem"))).unwrap_err();
        assert!(missing.to_string().contains("nope.pem"), "{missing}");
        let error = TlsRoots::read(Some(&bad), None).unwrap_err();
        assert!(error.to_string().contains("no PEM certificate"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plain_redis_urls_need_no_tls() {
        assert!(redis_client("redis://127.0.0.1:6379/").is_ok());
    }
}
