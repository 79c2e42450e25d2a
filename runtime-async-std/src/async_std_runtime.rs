//! The [`Runtime`] primitives on async-std: spawn, sleep, a WebSocket (async-std's TCP stream,
//! rustls with ring and webpki roots through futures-rustls), and the smol kit lapin's I/O
//! loop runs on (the same async-io reactor async-std drives). Nothing else.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_std::net::TcpStream;
use async_tungstenite::WebSocketStream;
use async_tungstenite::smol::ClientStream;
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::error::UrlError;
use runtime_common::{Runtime, WsError};

/// Gatehouse's runtime primitives on async-std's global executor.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AsyncStdRuntime;

impl Runtime for AsyncStdRuntime {
    type Sleep = Sleep;
    type WebSocket = WebSocketStream<ClientStream<TcpStream>>;
    type AmqpKit = async_rs::Smol;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Dropping the handle detaches the task.
        drop(async_std::task::spawn(future));
    }

    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        Sleep(async_io::Timer::at(deadline))
    }

    async fn connect_websocket(
        &self,
        url: &str,
        max_message: usize,
    ) -> Result<Self::WebSocket, WsError> {
        let request = url.into_client_request()?;
        let uri = request.uri();
        let host = uri.host().ok_or(WsError::Url(UrlError::NoHostName))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("wss") => 443,
            _ => 80,
        });
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        let config = runtime_common::websocket_config(max_message);
        let (ws, _response) =
            async_tungstenite::smol::client_async_tls_with_config(request, tcp, Some(config))
                .await?;
        Ok(ws)
    }

    fn amqp_runtime(&self) -> async_rs::Runtime<Self::AmqpKit> {
        async_rs::Runtime::smol()
    }
}

/// async-std's timer (async-io's, which `async_std::task::sleep` uses) with a `()` output.
#[derive(Debug)]
pub(crate) struct Sleep(async_io::Timer);

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(drop)
    }
}
