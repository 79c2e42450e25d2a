//! A loopback TCP proxy the suite puts between the implementation and RabbitMQ, so fault
//! scenarios can break the broker link on command: **cut** (close every connection and refuse new
//! ones), **stall** (stop forwarding in both directions while connections stay open, as a dead
//! route or a frozen peer does), **slow** (forward with a delay per chunk and a bandwidth cap) and
//! **heal** (forward normally again).
//!
//! Owns the listener, the forwarding tasks and the mode. It does not know about AMQP (it moves
//! bytes) and does not decide when to break the link (the fault scenarios do).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the proxy treats traffic.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Forward everything as it comes.
    Pass,
    /// Every connection is closed; new ones are accepted and closed at once.
    Cut,
    /// Nothing is forwarded either way; connections (new ones too) stay open.
    Stall,
    /// Each chunk waits `delay`, and at most `bytes_per_sec` go through per direction and
    /// connection.
    Slow {
        /// Added latency per chunk.
        delay: Duration,
        /// Bandwidth cap per direction and connection.
        bytes_per_sec: u64,
    },
}

/// A running proxy; stops (and drops every connection) on drop.
pub struct Proxy {
    addr: SocketAddr,
    mode: watch::Sender<(Mode, u64)>,
    accepted: Arc<AtomicU64>,
    listener: JoinHandle<()>,
}

const CHUNK: usize = 16 * 1024;

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel((Mode::Pass, 0u64));
        let accepted = Arc::new(AtomicU64::new(0));
        let task = {
            let mode = mode.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let rx = mode.subscribe();
                    if matches!(rx.borrow().0, Mode::Cut) {
                        drop(client);
                        continue;
                    }
                    tokio::spawn(serve(client, upstream, rx));
                }
            })
        };
        Ok(Self {
            addr,
            mode,
            accepted,
            listener: task,
        })
    }

    /// Where the implementation connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections the proxy has accepted so far (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.set(Mode::Cut);
    }

    /// Stops forwarding both ways; connections stay open.
    pub fn stall(&self) {
        self.set(Mode::Stall);
    }

    /// Forwards with added latency and a bandwidth cap.
    pub fn slow(&self, delay: Duration, bytes_per_sec: u64) {
        self.set(Mode::Slow {
            delay,
            bytes_per_sec,
        });
    }

    /// Forwards normally again.
    pub fn heal(&self) {
        self.set(Mode::Pass);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode.borrow().0
    }

    fn set(&self, mode: Mode) {
        // The counter makes every change visible, even Cut -> Cut.
        self.mode.send_modify(|(m, n)| {
            *m = mode;
            *n += 1;
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.listener.abort();
        self.set(Mode::Cut);
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, mode: watch::Receiver<(Mode, u64)>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = tokio::spawn(pump(client_read, server_write, mode.clone()));
    let down = tokio::spawn(pump(server_read, client_write, mode));
    // When one direction ends (EOF, error, cut), end the other one too.
    let (up_abort, down_abort) = (up.abort_handle(), down.abort_handle());
    tokio::select! {
        _ = up => down_abort.abort(),
        _ = down => up_abort.abort(),
    }
}

/// Forwards one direction, honouring the mode; returns when the connection must end.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<(Mode, u64)>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        // Wait until forwarding is allowed (a stall holds here without reading, so the sender's
        // kernel buffers fill as on a dead route).
        loop {
            let current = mode.borrow_and_update().0;
            match current {
                Mode::Cut => return,
                Mode::Stall => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
                Mode::Pass | Mode::Slow { .. } => break,
            }
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        // A chunk read just before a stall or a cut is held back too.
        loop {
            let current = mode.borrow_and_update().0;
            match current {
                Mode::Cut => return,
                Mode::Stall => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
                Mode::Pass => break,
                Mode::Slow {
                    delay,
                    bytes_per_sec,
                } => {
                    let pace = Duration::from_secs_f64(n as f64 / bytes_per_sec.max(1) as f64);
                    tokio::time::sleep(delay + pace).await;
                    break;
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(within, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Some(buf.to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn forwards_stalls_heals_and_cuts() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            round_trip(&mut s, Duration::from_secs(5)).await.as_deref(),
            Some(&b"ping"[..])
        );

        proxy.stall();
        assert_eq!(round_trip(&mut s, Duration::from_millis(300)).await, None);
        proxy.heal();
        // The stalled ping and then the new one come through once healed.
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            round_trip(&mut s, Duration::from_secs(5)).await.as_deref(),
            Some(&b"ping"[..])
        );

        proxy.cut();
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap();
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "a cut closes the connection"
        );
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut buf))
            .await
            .unwrap();
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "a cut refuses new connections"
        );

        proxy.heal();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            round_trip(&mut s, Duration::from_secs(5)).await.as_deref(),
            Some(&b"ping"[..])
        );
    }

    #[tokio::test]
    async fn slow_still_delivers() {
        let proxy = Proxy::start(echo_server().await).await.unwrap();
        proxy.slow(Duration::from_millis(20), 1_000_000);
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            round_trip(&mut s, Duration::from_secs(5)).await.as_deref(),
            Some(&b"ping"[..])
        );
    }
}
