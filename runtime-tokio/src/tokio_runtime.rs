//! The [`Runtime`] primitives on tokio: spawn, sleep, a WebSocket (tokio-tungstenite with
//! rustls, ring and webpki roots), and lapin's tokio executor handle. Nothing else.

use std::future::Future;
use std::time::Instant;

use runtime_common::{Runtime, WsError};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Gatehouse's runtime primitives on the current tokio runtime.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TokioRuntime;

impl Runtime for TokioRuntime {
    type Sleep = tokio::time::Sleep;
    type WebSocket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;
    type AmqpKit = async_rs::Tokio;

    /// amqprs' tasks are tokio tasks: they run on this runtime.
    const RUNS_AMQPRS: bool = true;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(future);
    }

    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline.into())
    }

    async fn connect_websocket(
        &self,
        url: &str,
        max_message: usize,
    ) -> Result<Self::WebSocket, WsError> {
        let config = runtime_common::websocket_config(max_message);
        let (ws, _response) =
            tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
        Ok(ws)
    }

    fn amqp_runtime(&self) -> async_rs::Runtime<Self::AmqpKit> {
        async_rs::Runtime::tokio_current()
    }
}
