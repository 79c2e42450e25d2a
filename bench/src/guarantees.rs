//! Whether an AMQP client reports what Gatehouse relies on (issue 13, item 1: "another AMQP
//! client", same guarantees): against the real broker, one confirm channel publishes, mandatory
//! and persistent, a mix of messages that are routed, returned (no queue bound for their key)
//! and nacked (a queue full with `x-overflow: reject-publish`), through lapin and through
//! amqprs; every answer must reach the message it is for. Then the broker closes the client's
//! connection (management API) and the client must notice.
//!
//! Owns: the scenario and its verdicts. Does not own amqprs' confirm bookkeeping
//! (`publishers::ConfirmTracker`) or the services (`services`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

use crate::publishers::ConfirmCounts;
use crate::services::Vhost;

/// Messages published in the scenario.
const MESSAGES: usize = 40;
/// The full queue's length: the first this many routed messages are acked, the rest nacked.
const MAX_LENGTH: usize = 5;
/// The exchange of the scenario.
const EXCHANGE: &str = "check";

/// What the broker should answer for message `i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Ack,
    Returned,
    Nack,
}

/// Every fourth message goes to a key nobody binds; the others to the full queue.
fn routing_key(i: usize) -> &'static str {
    if i.is_multiple_of(4) { "nobody" } else { "full" }
}

fn expected() -> Vec<Answer> {
    let mut routed = 0;
    (0..MESSAGES)
        .map(|i| {
            if routing_key(i) == "nobody" {
                Answer::Returned
            } else {
                routed += 1;
                if routed <= MAX_LENGTH {
                    Answer::Ack
                } else {
                    Answer::Nack
                }
            }
        })
        .collect()
}

fn message_id(i: usize) -> String {
    format!("m{i}")
}

/// The scenario's topology in `url`'s vhost: a topic exchange, and one durable queue of at
/// most `MAX_LENGTH` messages that refuses more (a nack), bound with `full`.
async fn declare(url: &str) -> Result<lapin::Connection> {
    let (connection, channel) = crate::services::topic_exchange(url, EXCHANGE).await?;
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(MAX_LENGTH as i32));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    channel
        .queue_declare(
            "check.full".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await?;
    channel
        .queue_bind(
            "check.full".into(),
            EXCHANGE.into(),
            "full".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(connection)
}

/// lapin: each message's confirm, classified; a returned message must carry its own id.
async fn through_lapin(url: &str, name: &str) -> Result<(Vec<Answer>, lapin::Connection)> {
    let (connection, channel) = crate::e2e::lapin_confirm_channel(
        url,
        lapin::ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await?;
    let mut confirms = Vec::new();
    for i in 0..MESSAGES {
        let properties = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(message_id(i).into());
        confirms.push(
            channel
                .basic_publish(
                    EXCHANGE.into(),
                    routing_key(i).into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    b"{}",
                    properties,
                )
                .await?,
        );
    }
    let mut answers = Vec::new();
    for (i, confirm) in confirms.into_iter().enumerate() {
        answers.push(match confirm.await? {
            lapin::Confirmation::Ack(Some(returned)) => {
                let id = returned.delivery.properties.message_id().clone();
                if id.as_ref().map(|id| id.as_str()) != Some(message_id(i).as_str()) {
                    println!("  lapin: message {i}'s confirm carries the return of {id:?}");
                }
                Answer::Returned
            }
            lapin::Confirmation::Ack(None) | lapin::Confirmation::NotRequested => Answer::Ack,
            lapin::Confirmation::Nack(_) => Answer::Nack,
        });
    }
    Ok((answers, connection))
}

/// amqprs: the settled tags (tag n is the n-th publish) and the returned messages' ids.
async fn through_amqprs(
    url: &str,
    name: &str,
) -> Result<(Vec<Answer>, amqprs::connection::Connection)> {
    use amqprs::channel::BasicPublishArguments;

    let counts = Arc::new(ConfirmCounts::recording());
    let (connection, channel) =
        crate::publishers::amqprs_confirm_channel(url, name, counts.clone()).await?;
    for i in 0..MESSAGES {
        let mut properties = amqprs::BasicProperties::default();
        properties
            .with_delivery_mode(amqprs::DELIVERY_MODE_PERSISTENT)
            .with_message_id(&message_id(i));
        let arguments = BasicPublishArguments {
            exchange: EXCHANGE.to_owned(),
            routing_key: routing_key(i).to_owned(),
            mandatory: true,
            immediate: false,
        };
        channel
            .basic_publish(properties, b"{}".to_vec(), arguments)
            .await?;
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        counts.wait_until_unsettled_at_most(MESSAGES as u64, 0),
    )
    .await
    .context("amqprs: not every message was confirmed within 10 s")?;
    let recorded = counts.answers.as_ref().expect("recording");
    let recorded = recorded.lock().expect("not poisoned");
    let mut answers = vec![None; MESSAGES];
    for &(tag, ack) in &recorded.settled {
        answers[tag as usize - 1] = Some(if ack { Answer::Ack } else { Answer::Nack });
    }
    // amqprs hands a return over without a delivery tag: matched here by message id.
    for id in &recorded.returned_ids {
        match (0..MESSAGES).find(|&i| message_id(i) == *id) {
            Some(i) if answers[i] == Some(Answer::Ack) => answers[i] = Some(Answer::Returned),
            _ => println!("  amqprs: a return for {id:?} matches no acked message"),
        }
    }
    let answers = answers
        .into_iter()
        .map(|a| a.unwrap_or(Answer::Nack))
        .collect();
    Ok((answers, connection))
}

fn verdict(client: &str, answers: &[Answer]) -> bool {
    let expected = expected();
    let count = |of: &[Answer], a: Answer| of.iter().filter(|x| **x == a).count();
    let same = answers == expected.as_slice();
    println!(
        "{client}: {} answers: {} acked, {} returned (each to its own message: {}), {} nacked; expected {}/{}/{}: {}",
        answers.len(),
        count(answers, Answer::Ack),
        count(answers, Answer::Returned),
        if same { "yes" } else { "see above" },
        count(answers, Answer::Nack),
        count(&expected, Answer::Ack),
        count(&expected, Answer::Returned),
        count(&expected, Answer::Nack),
        if same { "PASS" } else { "FAIL" }
    );
    same
}

/// Closes `name`'s connection through the management API (off the runtime's worker) while
/// `noticed` (already spawned, so already listening) waits; says how long it took to notice.
async fn forced_close(
    vhost: &Vhost,
    name: &str,
    noticed: tokio::task::JoinHandle<String>,
) -> String {
    // Let the watcher start listening.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let closed = tokio::task::block_in_place(|| vhost.close_connections(name));
    if closed != 1 {
        return format!("closed {closed} connections named {name}: not tested");
    }
    let started = Instant::now();
    match tokio::time::timeout(Duration::from_secs(30), noticed).await {
        Ok(Ok(how)) => format!("noticed after {:?}: {how}", started.elapsed()),
        Ok(Err(e)) => format!("the watcher failed: {e}"),
        Err(_) => "NOT noticed within 30 s".into(),
    }
}

/// `guarantees`: the scenario through each client; fails if either got an answer wrong.
pub async fn check() -> Result<()> {
    let mut all = true;
    {
        let vhost = Vhost::create("guarantees-lapin");
        let _topology = declare(&vhost.amqp_url()).await?;
        let (answers, connection) = through_lapin(&vhost.amqp_url(), "check-lapin").await?;
        all &= verdict("lapin", &answers);
        let mut events = connection.events_listener();
        let watcher = tokio::spawn(async move {
            loop {
                match events.next().await {
                    Some(lapin::Event::Error(e)) => return format!("Event::Error({e})"),
                    None => return "the event stream ended".into(),
                    Some(_) => {}
                }
            }
        });
        let how = forced_close(&vhost, "check-lapin", watcher).await;
        println!(
            "lapin: the broker closed the connection: {how}; status connected: {}",
            connection.status().connected()
        );
    }
    {
        let vhost = Vhost::create("guarantees-amqprs");
        let _topology = declare(&vhost.amqp_url()).await?;
        let (answers, connection) = through_amqprs(&vhost.amqp_url(), "check-amqprs").await?;
        all &= verdict("amqprs", &answers);
        let listener = connection.clone();
        let watcher = tokio::spawn(async move {
            let io_failure = listener.listen_network_io_failure().await;
            format!("listen_network_io_failure returned (network failure: {io_failure})")
        });
        let how = forced_close(&vhost, "check-amqprs", watcher).await;
        println!(
            "amqprs: the broker closed the connection: {how}; is_open: {}",
            connection.is_open()
        );
    }
    anyhow::ensure!(all, "a client reported a wrong answer");
    Ok(())
}
