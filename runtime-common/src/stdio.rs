//! The stdio output's publish side (issue 14, item 3): one JSON line per event on stdout.
//!
//! Owns: the line format (`{"shard":N,"event":"NAME","packet":BODY}` with the publication's
//! body bytes copied untouched when they are JSON, as a string otherwise), and one writer
//! thread that writes the lines in order, flushes, and only then acknowledges them to the
//! shards through the [`Output`] seam (so the saved sequence advances only over written
//! events). A thread, not a task: a blocking write to a slow pipe holds it, never a runtime's
//! worker, and it needs no runtime. Does not own what to publish again (the shard's outbox),
//! commands on stdin, nor selecting this output (configuration).

// Wired to configuration next (BROKER_TYPE=stdio); until then only its tests use it.
#![allow(dead_code)]

use std::io::Write;
use std::sync::Arc;

use proto_core::outbox::Confirm;
use proto_core::profile::Publication;
use proto_core::shard::PublishId;
use tokio::sync::{mpsc, watch};

use crate::output::{Output, OutputClient, PublishReport};

/// The generation of the one and only "connection" stdout is.
const GENERATION: u64 = 1;
/// Lines written before one flush.
const MAX_BATCH: usize = 256;

/// One line for the writer thread, with where its acknowledgement goes.
struct Line {
    bytes: Vec<u8>,
    id: PublishId,
    reply: mpsc::UnboundedSender<PublishReport>,
}

/// The writer thread's inbox; cloned into one [`ShardOutput`] per shard.
#[derive(Clone, Debug)]
pub(crate) struct Stdio {
    lines: mpsc::UnboundedSender<Line>,
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line").field("id", &self.id).finish()
    }
}

impl Stdio {
    /// Starts the writer thread on the process's stdout.
    pub(crate) fn start() -> std::io::Result<Self> {
        Self::start_on(std::io::stdout())
    }

    /// Starts the writer thread on `out` (stdout, or a buffer in tests).
    pub(crate) fn start_on<W: Write + Send + 'static>(mut out: W) -> std::io::Result<Self> {
        let (lines, mut inbox) = mpsc::unbounded_channel::<Line>();
        std::thread::Builder::new()
            .name("gatehouse-stdout".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                while inbox.blocking_recv_many(&mut batch, MAX_BATCH) > 0 {
                    let written = batch
                        .iter()
                        .try_for_each(|line| out.write_all(&line.bytes))
                        .and_then(|()| out.flush());
                    let result = written
                        .map(|()| Confirm::Ack)
                        .map_err(|e| format!("writing to stdout: {e}"));
                    if let Err(reason) = &result {
                        tracing::error!(%reason, "stdout failed; events are no longer published");
                    }
                    for line in batch.drain(..) {
                        let _ = line.reply.send(PublishReport {
                            link: GENERATION,
                            id: line.id,
                            result: result.clone(),
                        });
                    }
                }
            })?;
        Ok(Self { lines })
    }

    /// The output shard `shard` publishes through: always connected, never blocked.
    pub(crate) fn client(&self, shard: u32) -> OutputClient {
        let output: Arc<dyn Output> = Arc::new(ShardOutput {
            shard,
            stdio: self.clone(),
        });
        let (announce, current) = watch::channel(Some(output));
        // Nothing reconnects stdout: failure reports go nowhere, and the announcement stays.
        std::mem::forget(announce);
        let (failures, _) = mpsc::unbounded_channel();
        OutputClient::new(current, failures)
    }
}

/// One JSON line for `publication` of shard `shard`, newline included.
pub(crate) fn line(shard: u32, publication: &Publication) -> Vec<u8> {
    let event = serde_json::to_string(&publication.routing_key).expect("a string serialises");
    let mut line = Vec::with_capacity(publication.body.len() + event.len() + 40);
    line.extend_from_slice(format!("{{\"shard\":{shard},\"event\":{event},\"packet\":").as_bytes());
    let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&publication.body).is_ok();
    if is_json && !publication.body.contains(&b'\n') {
        line.extend_from_slice(&publication.body);
    } else {
        let text = String::from_utf8_lossy(&publication.body);
        line.extend_from_slice(
            serde_json::to_string(text.as_ref())
                .expect("a string serialises")
                .as_bytes(),
        );
    }
    line.extend_from_slice(b"}\n");
    line
}

/// Stdout as one shard's [`Output`].
#[derive(Debug)]
struct ShardOutput {
    shard: u32,
    stdio: Stdio,
}

impl Output for ShardOutput {
    fn generation(&self) -> u64 {
        GENERATION
    }

    fn is_blocked(&self) -> bool {
        false
    }

    fn submit(
        &self,
        id: PublishId,
        publication: Arc<Publication>,
        reply: &mpsc::UnboundedSender<PublishReport>,
    ) -> bool {
        self.stdio
            .lines
            .send(Line {
                bytes: line(self.shard, &publication),
                id,
                reply: reply.clone(),
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use proto_core::outbox::Confirm;
    use proto_core::profile::{MessageProperties, Publication};
    use proto_core::shard::PublishId;
    use tokio::sync::mpsc;

    use super::{Stdio, line};

    fn publication(event: &str, body: &[u8]) -> Arc<Publication> {
        Arc::new(Publication {
            exchange: String::new(),
            routing_key: event.into(),
            body: body.to_vec().into(),
            properties: MessageProperties::default(),
        })
    }

    /// A writer whose bytes count as written only once flushed.
    #[derive(Clone, Default)]
    struct Flushed {
        pending: Arc<Mutex<Vec<u8>>>,
        flushed: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Flushed {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.pending.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            let mut pending = self.pending.lock().unwrap();
            self.flushed.lock().unwrap().append(&mut pending);
            Ok(())
        }
    }

    #[test]
    fn a_json_body_is_copied_byte_for_byte() {
        let body = br#"{"t":"MESSAGE_CREATE","d":{"content":"\u00e9 \"x\"",  "n":1.50}}"#;
        let out = line(3, &publication("MESSAGE_CREATE", body));
        let expected = [
            br#"{"shard":3,"event":"MESSAGE_CREATE","packet":"#.as_slice(),
            body,
            b"}\n",
        ]
        .concat();
        assert_eq!(out, expected);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["packet"]["d"]["n"], 1.5);
    }

    #[test]
    fn a_body_that_is_not_json_becomes_a_string_on_one_line() {
        let out = line(0, &publication("X", b"not json\n{"));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["packet"], "not json\n{");
    }

    /// A writer that fails like a closed pipe.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The at-least-once rule: an event stdout did not take is never acknowledged.
    #[tokio::test]
    async fn an_event_that_could_not_be_written_is_not_acknowledged() {
        let stdio = Stdio::start_on(Broken).unwrap();
        let output = stdio.client(0).watch().borrow().clone().unwrap();
        let (reply, mut reports) = mpsc::unbounded_channel();
        assert!(output.submit(PublishId(1), publication("E", b"{}"), &reply));
        let report = reports.recv().await.unwrap();
        assert_eq!(report.id, PublishId(1));
        assert!(report.result.is_err(), "{:?}", report.result);
    }

    #[tokio::test]
    async fn events_are_acknowledged_in_order_and_only_after_the_flush() {
        let out = Flushed::default();
        let stdio = Stdio::start_on(out.clone()).unwrap();
        let client = stdio.client(7);
        let output = client.watch().borrow().clone().expect("always connected");
        let (reply, mut reports) = mpsc::unbounded_channel();
        for n in 0..3 {
            let body = format!("{{\"n\":{n}}}");
            assert!(output.submit(PublishId(n), publication("E", body.as_bytes()), &reply));
        }
        for n in 0..3 {
            let report = reports.recv().await.unwrap();
            assert_eq!(report.id, PublishId(n));
            assert_eq!(report.result, Ok(Confirm::Ack));
            let flushed = String::from_utf8(out.flushed.lock().unwrap().clone()).unwrap();
            assert!(flushed.contains(&format!("{{\"n\":{n}}}")), "{flushed}");
        }
        let flushed = String::from_utf8(out.flushed.lock().unwrap().clone()).unwrap();
        assert_eq!(
            flushed,
            "{\"shard\":7,\"event\":\"E\",\"packet\":{\"n\":0}}\n\
             {\"shard\":7,\"event\":\"E\",\"packet\":{\"n\":1}}\n\
             {\"shard\":7,\"event\":\"E\",\"packet\":{\"n\":2}}\n"
        );
    }
}
