//! The seam between the shared glue and an async runtime: the [`Runtime`] trait.
//!
//! Owns: the list of primitives a runtime crate must provide (spawn, sleep until an instant,
//! open a WebSocket, the executor handle lapin runs on, a Redis connection) and the clocks the
//! glue reads through it ([`Runtime::now`], [`Runtime::wall_clock`]), so that it can be driven
//! by a fake clock. Does not own any behaviour: everything built on these lives in the other
//! modules of this crate, once.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{Sink, Stream};
use tungstenite::Message;

/// Errors of a WebSocket (the same `tungstenite` error type on every runtime).
pub type WsError = tungstenite::Error;

/// How much one connection reads from its socket at a time. tungstenite's default (128 KiB) is
/// zero-filled before every read, so all of it stays resident on every connection, idle or not
/// (BENCHMARKS.md section 4, memory per idle shard). 8 KiB: a smaller setting saves nothing,
/// because tungstenite doubles the buffer when a frame does not fit what is left of it (4 KiB
/// measured 8 KiB per idle shard again) and never shrinks it.
pub const WS_READ_BUFFER: usize = 8 * 1024;

/// The WebSocket settings every runtime connects with: messages and frames of up to
/// `max_message` bytes (a real GUILD_CREATE is ~2.8 MB) and a small read buffer.
pub fn websocket_config(max_message: usize) -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// The primitives one async runtime provides. Implemented by `runtime-tokio` and
/// `runtime-async-std` in a few dozen lines each; everything else is generic over it.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// A timer future from [`Runtime::sleep_until`].
    type Sleep: Future<Output = ()> + Send + 'static;
    /// An open WebSocket: messages in, messages out.
    type WebSocket: Stream<Item = Result<Message, WsError>>
        + Sink<Message, Error = WsError>
        + Send
        + Unpin
        + 'static;
    /// The `async-rs` runtime kit lapin runs its I/O loop on.
    type AmqpKit: async_rs::traits::RuntimeKit + Send + Sync + Clone + 'static;

    /// Whether this runtime can run amqprs, a tokio-only AMQP client (`amqp.client =
    /// "amqprs"` is refused on the others).
    const RUNS_AMQPRS: bool = false;

    /// Runs a future in the background.
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// Completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep;

    /// Opens a WebSocket (`ws://` or `wss://` with webpki roots) accepting messages and frames
    /// of up to `max_message` bytes.
    fn connect_websocket(
        &self,
        url: &str,
        max_message: usize,
    ) -> impl Future<Output = Result<Self::WebSocket, WsError>> + Send;

    /// The handle lapin's `Connection::connect_with_runtime` needs.
    fn amqp_runtime(&self) -> async_rs::Runtime<Self::AmqpKit>;

    /// A self-reconnecting Redis connection. The redis crate finds the running runtime by
    /// itself (with its `tokio-comp` or `smol-comp` feature); a runtime may override this to
    /// state its preference.
    fn redis_connection(
        &self,
        client: redis::Client,
        config: redis::aio::ConnectionManagerConfig,
    ) -> impl Future<Output = redis::RedisResult<redis::aio::ConnectionManager>> + Send {
        async move { client.get_connection_manager_with_config(config).await }
    }

    /// The monotonic clock every input to the core is stamped with. The glue reads time only
    /// through this (and [`Runtime::wall_clock`]).
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// The wall clock, for timestamps that leave the process (message timestamps, Redis).
    fn wall_clock(&self) -> SystemTime {
        SystemTime::now()
    }

    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> Self::Sleep {
        self.sleep_until(self.now() + duration)
    }
}

#[cfg(test)]
mod tests {
    use super::{WS_READ_BUFFER, websocket_config};

    #[test]
    fn connections_read_through_a_small_buffer_and_accept_large_messages() {
        let config = websocket_config(64 << 20);
        assert_eq!(config.read_buffer_size, WS_READ_BUFFER);
        assert_eq!(config.max_message_size, Some(64 << 20));
        assert_eq!(config.max_frame_size, Some(64 << 20));
    }
}
