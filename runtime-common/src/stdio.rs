//! The stdio output (issue 14, item 3): one JSON line per event on stdout, commands as JSON
//! lines on stdin.
//!
//! Owns: the line formats (`{"shard":N,"event":"NAME","packet":BODY}` with the publication's
//! body bytes copied untouched when they are JSON, as a string otherwise), and one writer
//! thread that writes the lines in order, flushes, and only then acknowledges them to the
//! shards through the [`Output`] seam (so the saved sequence advances only over written
//! events). A thread, not a task: a blocking write to a slow pipe holds it, never a runtime's
//! worker, and it needs no runtime. Commands: one reader thread takes lines
//! `{"event":"<routing key>","packet":{...}}` from stdin (the routing key as the profile reads
//! it from AMQP: `"0"` or `"SEND"` for spectacles, `"shard.0"` for gatehouse; the packet's bytes
//! are the body), skips (and logs) a line that is not that, and ends quietly at the end of
//! stdin: the gateway goes on. Does not own what to publish again (the shard's outbox), what a
//! command means (the profile), nor selecting this output (`outputs`).

use std::io::{BufRead, Write};
use std::sync::Arc;

use proto_core::outbox::Confirm;
use proto_core::profile::Publication;
use proto_core::shard::PublishId;
use tokio::sync::{mpsc, watch};

use crate::output::{
    BoxFuture, CommandSource, INCOMING_CAPACITY, Incoming, Output, OutputClient, OutputError,
    PublishReport, ReportSender, Republish, Republished, Settle,
};

/// The generation of the one and only "connection" stdout is.
const GENERATION: u64 = 1;
/// Lines written before one flush.
const MAX_BATCH: usize = 256;

/// One line for the writer thread, with where its acknowledgement goes.
struct Line {
    bytes: Vec<u8>,
    id: PublishId,
    reply: ReportSender,
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
    /// When stdout is closed (the reader at the other end of the pipe is gone) nothing can take
    /// events any more: the process exits (status 1) rather than hold them. Nothing is lost:
    /// the saved sequences never passed an event that was not written, so the next start
    /// resumes before it.
    pub(crate) fn start() -> std::io::Result<Self> {
        Self::start_with(std::io::stdout(), true)
    }

    /// Starts the writer thread on `out` (stdout, or a buffer in tests).
    #[cfg(test)]
    pub(crate) fn start_on<W: Write + Send + 'static>(out: W) -> std::io::Result<Self> {
        Self::start_with(out, false)
    }

    fn start_with<W: Write + Send + 'static>(
        mut out: W,
        exit_when_closed: bool,
    ) -> std::io::Result<Self> {
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
                    if exit_when_closed
                        && let Err(e) = &written
                        && e.kind() == std::io::ErrorKind::BrokenPipe
                    {
                        tracing::error!("standard output is closed: nothing can take events; stopping (the next start resumes where the written events end)");
                        std::process::exit(1);
                    }
                    let result = written
                        .map(|()| Confirm::Ack)
                        .map_err(|e| OutputError::Client(format!("writing to stdout: {e}")));
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

/// One JSON line for `publication` of shard `shard` (`null`: a forwarded command, whose `event`
/// is its routing key, the shard or `SEND`), newline included.
pub(crate) fn line(shard: Option<u32>, publication: &Publication) -> Vec<u8> {
    let event = publication.event().unwrap_or(publication.routing_key());
    let event = serde_json::to_string(event).expect("a string serialises");
    let shard = shard.map_or_else(|| "null".to_owned(), |s| s.to_string());
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

impl Stdio {
    /// Starts the reader thread on the process's stdin; `exchange` is what the commands
    /// count as published to (the profile's group).
    pub(crate) fn commands(&self, exchange: String) -> std::io::Result<CommandSource> {
        self.commands_from(std::io::BufReader::new(std::io::stdin()), exchange)
    }

    /// [`Stdio::commands`] from `input` (stdin, or a buffer in tests).
    pub(crate) fn commands_from<I: BufRead + Send + 'static>(
        &self,
        input: I,
        exchange: String,
    ) -> std::io::Result<CommandSource> {
        let (tx, incoming) = mpsc::channel(INCOMING_CAPACITY);
        std::thread::Builder::new()
            .name("gatehouse-stdin".into())
            .spawn(move || read_commands(input, &exchange, &tx))?;
        Ok(CommandSource {
            incoming,
            republish: Arc::new(self.clone()),
        })
    }
}

/// A command line as read: `event` is the routing key, `packet` the body.
#[derive(serde::Deserialize)]
struct CommandLine<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    packet: &'a serde_json::value::RawValue,
}

/// Parses one stdin line: `None` for a blank one, `Err` (why) for one that is not a command.
pub(crate) fn parse_command(line: &[u8]) -> Option<Result<(String, Vec<u8>), serde_json::Error>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(
        serde_json::from_slice::<CommandLine<'_>>(line)
            .map(|c| (c.event.into_owned(), c.packet.get().as_bytes().to_vec())),
    )
}

fn read_commands<I: BufRead>(mut input: I, exchange: &str, tx: &mpsc::Sender<Incoming>) {
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match input.read_until(b'\n', &mut buffer) {
            Ok(0) => {
                tracing::info!("standard input ended: no more commands from it; events go on");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read commands from standard input");
                return;
            }
        }
        match parse_command(&buffer) {
            None => {}
            Some(Err(reason)) => tracing::warn!(
                %reason,
                "a line on standard input is not a command (`{{\"event\":\"<routing key>\",\"packet\":{{...}}}}`); skipped"
            ),
            Some(Ok((event, body))) => {
                let command = StdinCommand {
                    exchange: exchange.to_owned(),
                    event,
                    body,
                    tx: tx.clone(),
                };
                if tx.blocking_send(command.incoming()).is_err() {
                    return;
                }
            }
        }
    }
}

/// A command read from stdin, kept so that a requeue delivers it again.
#[derive(Clone)]
struct StdinCommand {
    exchange: String,
    event: String,
    body: Vec<u8>,
    tx: mpsc::Sender<Incoming>,
}

impl StdinCommand {
    fn incoming(self) -> Incoming {
        Incoming {
            exchange: self.exchange.clone(),
            routing_key: self.event.clone(),
            queue: "stdin".into(),
            body: self.body.clone(),
            settle: Arc::new(self),
        }
    }
}

impl Settle for StdinCommand {
    /// Stdin keeps nothing: done.
    fn ack(&self) -> BoxFuture<()> {
        Box::pin(async {})
    }

    /// Delivered again (after the commands read meanwhile).
    fn requeue(&self) -> BoxFuture<()> {
        let again = self.clone();
        Box::pin(async move {
            let tx = again.tx.clone();
            let _ = tx.send(again.incoming()).await;
        })
    }
}

/// A forwarded command as a line with `"shard":null`, once flushed. A dead letter has no place
/// on stdout (event lines only): the rejection's log line on stderr says why.
impl Republish for Stdio {
    fn publish(
        &self,
        publication: Publication,
        kind: Republished,
    ) -> BoxFuture<Result<(), OutputError>> {
        if kind == Republished::DeadLetter {
            return Box::pin(async { Ok(()) });
        }
        let (reply, mut report) = crate::lazy_channel::unbounded();
        let sent = self.lines.send(Line {
            bytes: line(None, &publication),
            id: PublishId(0),
            reply,
        });
        Box::pin(async move {
            sent.map_err(|_| OutputError::Stopped("stdout is closed"))?;
            match report.recv().await {
                Some(PublishReport { result: Ok(_), .. }) => Ok(()),
                Some(PublishReport { result: Err(e), .. }) => Err(e),
                None => Err(OutputError::Stopped("stdout is closed")),
            }
        })
    }
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

    fn submit(&self, id: PublishId, publication: Arc<Publication>, reply: &ReportSender) -> bool {
        self.stdio
            .lines
            .send(Line {
                bytes: line(Some(self.shard), &publication),
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
    use proto_core::profile::{MessageKey, MessageProperties, Publication};
    use proto_core::shard::PublishId;

    use super::{Stdio, line, parse_command};

    fn publication(event: &str, body: &[u8]) -> Arc<Publication> {
        Arc::new(Publication {
            exchange: String::new(),
            key: MessageKey::Event(event.into()),
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
        let out = line(Some(3), &publication("MESSAGE_CREATE", body));
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
        let out = line(Some(0), &publication("X", b"not json\n{"));
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
        let (reply, mut reports) = crate::lazy_channel::unbounded();
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
        let (reply, mut reports) = crate::lazy_channel::unbounded();
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

    #[test]
    fn a_command_line_gives_its_routing_key_and_the_packet_bytes() {
        let (event, body) = parse_command(br#"{"event":"SEND","packet":{"op":3, "d":{"x":1}}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(event, "SEND");
        assert_eq!(body, br#"{"op":3, "d":{"x":1}}"#);
        assert!(parse_command(b"  \n").is_none());
        assert!(parse_command(b"hello\n").unwrap().is_err());
        assert!(parse_command(br#"{"packet":{}}"#).unwrap().is_err());
    }

    /// The end of stdin ends the commands quietly; what was read before still arrives.
    #[tokio::test]
    async fn commands_arrive_in_order_and_the_end_of_input_only_ends_them() {
        let stdio = Stdio::start_on(Vec::new()).unwrap();
        let input = b"{\"event\":\"0\",\"packet\":{\"op\":3}}\nnot json\n\n{\"event\":\"SEND\",\"packet\":{}}\n";
        let mut source = stdio
            .commands_from(std::io::Cursor::new(input.to_vec()), "gateway".into())
            .unwrap();
        let first = source.incoming.recv().await.unwrap();
        assert_eq!(
            (first.routing_key.as_str(), first.body.as_slice()),
            ("0", br#"{"op":3}"#.as_slice())
        );
        assert_eq!(first.exchange, "gateway");
        drop(first);
        let second = source.incoming.recv().await.unwrap();
        assert_eq!(second.routing_key, "SEND");
        // A requeued command comes back.
        second.settle.requeue().await;
        drop(second);
        let again = source.incoming.recv().await.unwrap();
        assert_eq!(again.routing_key, "SEND");
        drop(again);
        assert!(source.incoming.recv().await.is_none());
    }
}
