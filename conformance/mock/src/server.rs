//! The running mock: the listening socket, the accept thread, one thread per connection, and
//! shutdown. [`MockGateway`] is the owner handle; dropping it shuts everything down.
//!
//! Owns: start-up, URLs, the accept loop, shutdown. Does not own: the state the threads share
//! (see `shared`), what a connection does (see `connection`), sessions (see `session`).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::MockConfig;
use crate::connection;
use crate::control::Control;
use crate::frames::Templates;
use crate::recorder::Recorder;
use crate::session::SessionTable;
use crate::shared::{RESUME_PATH, Shared};

/// A running mock Discord gateway on 127.0.0.1. See the crate docs.
pub struct MockGateway {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockGateway")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockGateway {
    /// Binds 127.0.0.1:`config.port` and starts serving.
    pub fn start(config: MockConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", config.port))?;
        let addr = listener.local_addr()?;
        let ws_url = format!("ws://{addr}");
        let resume_url = format!("ws://{addr}{RESUME_PATH}");
        let recorder = Recorder::new(config.record_frames);
        let state = SessionTable::new(&config, Instant::now());
        let shared = Arc::new(Shared {
            config,
            templates: Templates::recorded(),
            ws_url,
            resume_url,
            state: Mutex::new(state),
            recorder,
            shutdown: AtomicBool::new(false),
            reconnects_before_hello: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let accept_shared = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("mock-gateway-accept-{}", addr.port()))
            .spawn(move || accept_loop(accept_shared, listener))?;
        Ok(Self {
            shared,
            addr,
            acceptor: Some(acceptor),
        })
    }

    /// The socket address (127.0.0.1:port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/api/v10`: the REST base a client uses for `/gateway/bot`.
    pub fn api_base(&self) -> String {
        format!("http://{}/api/v10", self.addr)
    }

    /// `ws://127.0.0.1:PORT`: the gateway URL (also the `url` of `/gateway/bot`). Append
    /// `/?v=10&encoding=json` etc. as with Discord.
    pub fn ws_url(&self) -> String {
        self.shared.ws_url.clone()
    }

    /// `ws://127.0.0.1:PORT/resume`: the `resume_gateway_url` READY announces.
    pub fn resume_url(&self) -> String {
        self.shared.resume_url.clone()
    }

    /// The handle for run-time controls.
    pub fn control(&self) -> Control {
        Control::new(self.shared.clone())
    }

    /// The handle to what clients did.
    pub fn recorder(&self) -> Recorder {
        self.shared.recorder.clone()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// Stops accepting, closes every connection (1001) and joins the threads. Also done on drop.
    pub fn shutdown(&mut self) {
        if self.shared.shutdown.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept call with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for thread in threads {
            let _ = thread.join();
        }
    }

    /// Runs until the process ends (for the binary).
    pub fn wait(mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Drop for MockGateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    for stream in listener.incoming() {
        if shared.shutdown.load(Ordering::SeqCst) {
            break;
        }
        match stream {
            Ok(stream) => {
                let conn_shared = shared.clone();
                let port = shared.ws_url.rsplit(':').next().unwrap_or("").to_owned();
                shared.spawn(format!("mock-gateway-{port}-conn"), move || {
                    connection::serve(conn_shared, stream);
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "mock gateway accept failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
