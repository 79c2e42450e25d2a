//! The HTTP endpoints an operator and a supervisor meet: `/metrics` (Prometheus text),
//! `/healthz` (the process is alive), `/readyz` (every shard of this process active and the
//! broker connected; otherwise 503 with the reason), `/status.json` (the status registry) and
//! `/` (a small status page that renders `/status.json` and refreshes itself).
//!
//! Owns: routing and the responses, on axum. Does not own the figures (`status`, `metrics`).
//!
//! Where it runs: on a small dedicated thread with its own current-thread tokio runtime, for
//! both binaries alike. The alternatives were axum on the tokio binary's executor and a
//! second server library for async-std; one code path for both is worth more than sharing an
//! executor, and the thread also keeps the endpoints answering while the shards' executor is
//! saturated by a burst (a scrape or a probe never waits behind dispatches). The listener is
//! bound before the thread starts, so a taken port is an error at start-up.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::status::{self, Registry};

/// The endpoints over `registry`, rendering metrics through `metrics` at `metrics_path`
/// (`/metrics` unless configured otherwise).
pub fn router(
    metrics: PrometheusHandle,
    registry: &'static Registry,
    metrics_path: &str,
) -> Router {
    Router::new()
        .route(
            metrics_path,
            get(move || {
                let text = metrics.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || async move { readyz(registry) }))
        .route(
            "/status.json",
            get(move || async move { axum::Json(registry.snapshot(Instant::now())) }),
        )
        .route("/", get(move || async move { page(registry) }))
}

fn readyz(registry: &Registry) -> Response {
    match registry.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

/// The page: static markup and script, with the current snapshot embedded so that the first
/// paint needs no second request.
fn page(registry: &Registry) -> Html<String> {
    let snapshot = serde_json::to_string(&registry.snapshot(Instant::now()))
        .expect("a snapshot always serializes")
        // Inside <script>, `</` could end the element early.
        .replace("</", "<\\/");
    Html(PAGE.replace("__SNAPSHOT__", &snapshot))
}

const PAGE: &str = include_str!("status_page.html");

/// Binds `address` and serves the endpoints from a dedicated thread until the process ends.
/// Returns the bound address (useful with port 0).
pub fn start(
    address: SocketAddr,
    metrics: PrometheusHandle,
    metrics_path: &str,
) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let app = router(metrics, status::global(), metrics_path);
    std::thread::Builder::new()
        .name("gatehouse-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot serve the HTTP endpoints");
                        return;
                    }
                };
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "the HTTP endpoints stopped");
                }
            });
        })?;
    tracing::info!(
        address = %bound,
        "serving the status page at /, /metrics, /healthz, /readyz and /status.json"
    );
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use gatehouse_config::SecretUrl;
    use tower::ServiceExt;

    fn registry() -> &'static Registry {
        Box::leak(Box::default())
    }

    async fn get(app: Router, path: &str) -> (StatusCode, String) {
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn app(registry: &'static Registry) -> Router {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        router(recorder.handle(), registry, "/metrics")
    }

    #[tokio::test]
    async fn readyz_says_why_not_until_every_shard_is_active() {
        let registry = registry();
        let (code, body) = get(app(registry), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("no shard has started yet"), "{body}");
        let cell = registry.shard(0, Instant::now());
        registry.set_broker_connected(Some(0));
        registry.state_changed(
            &cell,
            "active",
            "READY".into(),
            std::time::SystemTime::now(),
        );
        assert_eq!(
            get(app(registry), "/readyz").await,
            (StatusCode::OK, "ready\n".into())
        );
        assert_eq!(
            get(app(registry), "/healthz").await,
            (StatusCode::OK, "ok\n".into())
        );
    }

    #[tokio::test]
    async fn the_page_embeds_the_snapshot_safely() {
        let registry = registry();
        let cell = registry.shard(4, Instant::now());
        registry.set_links(
            &[
                SecretUrl::new("amqp://guest:hunter2@127.0.0.1:5672/%2f"),
                SecretUrl::new("amqp://guest:hunter3@10.0.0.2:5672/%2f"),
            ],
            &SecretUrl::new("redis://127.0.0.1:6379/"),
        );
        registry.set_broker_connected(Some(1));
        registry.state_changed(
            &cell,
            "disconnected",
            "</script><b>".into(),
            std::time::SystemTime::now(),
        );
        let (code, body) = get(app(registry), "/").await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains(r#""shard":4"#), "{body}");
        assert!(!body.contains("</script><b>"), "{body}");
        assert!(!body.contains("__SNAPSHOT__"));
        let (_, json) = get(app(registry), "/status.json").await;
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["shards"][0]["state"], "disconnected");
        assert_eq!(json["broker_management_url"], "http://10.0.0.2:15672/");
        // Every address, the connected one named, and no password on the page.
        assert_eq!(json["broker_address"], 1);
        assert_eq!(
            json["broker_urls"],
            serde_json::json!([
                "amqp://guest:***@127.0.0.1:5672/%2f",
                "amqp://guest:***@10.0.0.2:5672/%2f"
            ])
        );
        assert!(!body.contains("hunter"), "{body}");
    }

    #[tokio::test]
    async fn unknown_paths_are_not_found() {
        let (code, _) = get(app(registry()), "/nope").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
    }
}
