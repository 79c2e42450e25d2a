//! The RabbitMQ management HTTP API, as the test suites use it: create and delete vhosts, grant
//! permissions, read a vhost's exchanges, queues and bindings with the details AMQP cannot report
//! (types, flags), and list and close client connections (a broker outage as one client sees
//! it).
//!
//! The one management client of the workspace: the conformance suite and the runtimes'
//! end-to-end tests both use it. Blocking HTTP (ureq); async callers run it on a blocking
//! thread. It does not decide when a vhost is created or removed (the suites' isolation does).

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

/// The variable that overrides the management API's address.
pub const MANAGEMENT_URL_VAR: &str = "RABBITMQ_MANAGEMENT_URL";

/// A management API error.
#[derive(Debug, thiserror::Error)]
#[error("RabbitMQ management API, {what}: {message}")]
pub struct ManagementError {
    what: String,
    message: String,
}

/// An exchange as the broker reports it.
#[derive(Clone, Debug, Deserialize)]
pub struct ExchangeInfo {
    /// Name.
    pub name: String,
    /// Type (`direct`, `topic`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Durable.
    pub durable: bool,
    /// Auto-delete.
    pub auto_delete: bool,
}

/// A queue as the broker reports it.
#[derive(Clone, Debug, Deserialize)]
pub struct QueueInfo {
    /// Name.
    pub name: String,
    /// Durable.
    pub durable: bool,
    /// Exclusive.
    #[serde(default)]
    pub exclusive: bool,
    /// Auto-delete.
    pub auto_delete: bool,
    /// Arguments.
    #[serde(default)]
    pub arguments: serde_json::Map<String, serde_json::Value>,
    /// The queue type (`classic`, `quorum`, `stream`; empty from brokers that do not say).
    #[serde(default, rename = "type")]
    pub queue_type: String,
}

/// A binding as the broker reports it.
#[derive(Clone, Debug, Deserialize)]
pub struct BindingInfo {
    /// The exchange (empty: the default exchange).
    pub source: String,
    /// The queue or exchange bound.
    pub destination: String,
    /// `queue` or `exchange`.
    pub destination_type: String,
    /// The routing key.
    pub routing_key: String,
}

/// A client connection as the broker reports it.
#[derive(Clone, Debug, Deserialize)]
pub struct ConnectionInfo {
    /// The broker's name for it (what [`ManagementApi::close_connection`] takes).
    pub name: String,
    /// What the client reported about itself.
    #[serde(default)]
    pub client_properties: ClientProperties,
}

impl ConnectionInfo {
    /// The name the client gave its connection, if any.
    pub fn client_name(&self) -> Option<&str> {
        self.client_properties.connection_name.as_deref()
    }
}

/// The client properties of a connection that the suites read.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ClientProperties {
    /// The name the client gave its connection.
    #[serde(default)]
    pub connection_name: Option<String>,
}

/// A client of the management API.
#[derive(Clone, Debug)]
pub struct ManagementApi {
    /// `http://host:15672/api`
    base: String,
    authorization: String,
    user: String,
}

impl ManagementApi {
    /// The API for the broker of `amqp_url`: `http://<amqp host>:15672/api` with the AMQP
    /// credentials, unless `override_url` (from [`MANAGEMENT_URL_VAR`]) names another address
    /// (`http://user:pass@host:port`; credentials in it win).
    pub fn for_amqp_url(amqp_url: &str, override_url: Option<&str>) -> Result<Self, String> {
        let amqp = url::Url::parse(amqp_url).map_err(|e| format!("bad AMQP_URL: {e}"))?;
        let mut user = percent_decode(amqp.username()).unwrap_or_default();
        let mut pass = amqp.password().and_then(percent_decode).unwrap_or_default();
        if user.is_empty() {
            user = "guest".into();
            pass = "guest".into();
        }
        let base = match override_url {
            Some(raw) => {
                let mut u =
                    url::Url::parse(raw).map_err(|e| format!("bad {MANAGEMENT_URL_VAR}: {e}"))?;
                if !u.username().is_empty() {
                    user = percent_decode(u.username()).unwrap_or_default();
                    pass = u.password().and_then(percent_decode).unwrap_or_default();
                }
                let _ = u.set_username("");
                let _ = u.set_password(None);
                let s = u.as_str().trim_end_matches('/').to_owned();
                if s.ends_with("/api") {
                    s
                } else {
                    format!("{s}/api")
                }
            }
            None => format!(
                "http://{}:15672/api",
                amqp.host_str().unwrap_or("127.0.0.1")
            ),
        };
        let authorization = format!("Basic {}", base64(&format!("{user}:{pass}")));
        Ok(Self {
            base,
            authorization,
            user,
        })
    }

    /// The user whose credentials the API uses (also the one granted vhost permissions).
    pub fn user(&self) -> &str {
        &self.user
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .into()
    }

    fn put(&self, path: &str, body: serde_json::Value) -> Result<(), ManagementError> {
        Self::agent()
            .put(&format!("{}{path}", self.base))
            .header("Authorization", &self.authorization)
            .send_json(body)
            .map(drop)
            .map_err(|e| ManagementError {
                what: format!("PUT {path}"),
                message: e.to_string(),
            })
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ManagementError> {
        let err = |e: ureq::Error| ManagementError {
            what: format!("GET {path}"),
            message: e.to_string(),
        };
        Self::agent()
            .get(&format!("{}{path}", self.base))
            .header("Authorization", &self.authorization)
            .call()
            .map_err(err)?
            .body_mut()
            .read_json()
            .map_err(err)
    }

    /// Checks that the API answers.
    pub fn ping(&self) -> Result<(), ManagementError> {
        self.get::<serde_json::Value>("/overview").map(drop)
    }

    /// Creates a vhost and gives the API's user every permission on it.
    pub fn create_vhost(&self, vhost: &str) -> Result<(), ManagementError> {
        self.put(&format!("/vhosts/{}", encode(vhost)), json!({}))?;
        self.put(
            &format!("/permissions/{}/{}", encode(vhost), encode(&self.user)),
            json!({"configure": ".*", "write": ".*", "read": ".*"}),
        )
    }

    /// Deletes a vhost with everything in it (a vhost that does not exist is not an error).
    pub fn delete_vhost(&self, vhost: &str) -> Result<(), ManagementError> {
        let path = format!("/vhosts/{}", encode(vhost));
        match Self::agent()
            .delete(&format!("{}{path}", self.base))
            .header("Authorization", &self.authorization)
            .call()
        {
            Ok(_) | Err(ureq::Error::StatusCode(404)) => Ok(()),
            Err(e) => Err(ManagementError {
                what: format!("DELETE {path}"),
                message: e.to_string(),
            }),
        }
    }

    /// The vhost's exchanges (the broker's built-in `amq.*` and default exchanges left out).
    pub fn exchanges(&self, vhost: &str) -> Result<Vec<ExchangeInfo>, ManagementError> {
        let all: Vec<ExchangeInfo> = self.get(&format!("/exchanges/{}", encode(vhost)))?;
        Ok(all
            .into_iter()
            .filter(|e| !e.name.is_empty() && !e.name.starts_with("amq."))
            .collect())
    }

    /// The vhost's queues.
    pub fn queues(&self, vhost: &str) -> Result<Vec<QueueInfo>, ManagementError> {
        self.get(&format!("/queues/{}", encode(vhost)))
    }

    /// The vhost's bindings (the default exchange's implicit ones left out).
    pub fn bindings(&self, vhost: &str) -> Result<Vec<BindingInfo>, ManagementError> {
        let all: Vec<BindingInfo> = self.get(&format!("/bindings/{}", encode(vhost)))?;
        Ok(all.into_iter().filter(|b| !b.source.is_empty()).collect())
    }

    /// The vhost's client connections.
    pub fn connections(&self, vhost: &str) -> Result<Vec<ConnectionInfo>, ManagementError> {
        self.get(&format!("/vhosts/{}/connections", encode(vhost)))
    }

    /// Closes one client connection (by its broker-given name), as a broker outage would.
    pub fn close_connection(&self, name: &str) -> Result<(), ManagementError> {
        let path = format!("/connections/{}", encode(name));
        Self::agent()
            .delete(&format!("{}{path}", self.base))
            .header("Authorization", &self.authorization)
            .call()
            .map(drop)
            .map_err(|e| ManagementError {
                what: format!("DELETE {path}"),
                message: e.to_string(),
            })
    }

    /// The names of every vhost.
    pub fn vhosts(&self) -> Result<Vec<String>, ManagementError> {
        #[derive(Deserialize)]
        struct Vhost {
            name: String,
        }
        let all: Vec<Vhost> = self.get("/vhosts")?;
        Ok(all.into_iter().map(|v| v.name).collect())
    }
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// The characters percent-encoded in a URL path segment (everything but RFC 3986's unreserved).
pub const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, PATH_SEGMENT).to_string()
}

fn base64(input: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_url_follows_the_amqp_host_and_credentials() {
        let api =
            ManagementApi::for_amqp_url("amqp://bob:s%40cret@10.0.0.5:5672/%2f", None).unwrap();
        assert_eq!(api.base, "http://10.0.0.5:15672/api");
        assert_eq!(api.user(), "bob");
        assert_eq!(api.authorization, format!("Basic {}", base64("bob:s@cret")));
        let api = ManagementApi::for_amqp_url(
            "amqp://127.0.0.1:5672",
            Some("http://admin:pw@127.0.0.1:25672/"),
        )
        .unwrap();
        assert_eq!(api.base, "http://127.0.0.1:25672/api");
        assert_eq!(api.user(), "admin");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64("guest:guest"), "Z3Vlc3Q6Z3Vlc3Q=");
        assert_eq!(base64("a"), "YQ==");
        assert_eq!(base64("abc"), "YWJj");
    }
}
