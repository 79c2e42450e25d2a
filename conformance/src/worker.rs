//! The profile's worker, acting through a scenario's [`Context`]: subscribe to events the way
//! that system's users do, wait until the gateway's command entry exists, publish commands, and
//! read the vhost's topology.
//!
//! Owns these worker actions. What each profile declares and encodes comes from
//! [`crate::profiles`]; the AMQP mechanics from [`crate::broker`].

use std::time::Duration;

use crate::broker::BrokerError;
use crate::profiles::{CommandEntry, OutgoingMessage, Subscription, Target};
use crate::scenario::{Context, Failure};
use rabbitmq_management::{BindingInfo, ExchangeInfo, ManagementError, QueueInfo};

/// A snapshot of a vhost's topology.
#[derive(Clone, Debug, Default)]
pub struct TopologySnapshot {
    /// Exchanges (built-ins left out).
    pub exchanges: Vec<ExchangeInfo>,
    /// Queues.
    pub queues: Vec<QueueInfo>,
    /// Bindings (the default exchange's left out).
    pub bindings: Vec<BindingInfo>,
}

impl Context {
    fn broker_failure(&self, e: BrokerError) -> Failure {
        if self.started_at().is_some() {
            Failure::fail(format!("worker: {e}"))
        } else {
            Failure::error(format!("worker: {e}"))
        }
    }

    /// Declares and binds what a worker of the profile does to receive `events`, and starts
    /// consuming into [`crate::broker::Broker::inbox`]. Call it before starting the
    /// implementation, so that no event is published before the worker listens.
    pub async fn subscribe_events(&mut self, events: &[String]) -> Result<(), Failure> {
        let spec = self.profile.events_exchange();
        let b = &self.broker;
        let result: Result<(), BrokerError> = async {
            b.declare_exchange(&spec).await?;
            match self.profile.subscription() {
                Subscription::Wildcard => {
                    let queue = b.declare_private_queue().await?;
                    b.bind(&queue, spec.name, "#").await?;
                    b.consume(&queue).await?;
                }
                Subscription::NamedQueuePerEvent => {
                    for event in events {
                        let queue = format!("{}:{event}", spec.name);
                        b.declare_durable_queue(&queue).await?;
                        b.bind(&queue, spec.name, event).await?;
                        b.consume(&queue).await?;
                    }
                }
                Subscription::OwnQueueBoundPerEvent => {
                    let queue = b.declare_private_queue().await?;
                    for event in events {
                        b.bind(&queue, spec.name, event).await?;
                    }
                    b.consume(&queue).await?;
                }
            }
            Ok(())
        }
        .await;
        result.map_err(|e| self.broker_failure(e))
    }

    /// Reads the vhost's exchanges, queues and bindings through the management API.
    pub async fn topology(&self) -> Result<TopologySnapshot, Failure> {
        let api = self.management.clone();
        let vhost = self.vhost.clone();
        let result: Result<TopologySnapshot, ManagementError> =
            tokio::task::spawn_blocking(move || {
                Ok(TopologySnapshot {
                    exchanges: api.exchanges(&vhost)?,
                    queues: api.queues(&vhost)?,
                    bindings: api.bindings(&vhost)?,
                })
            })
            .await
            .map_err(|e| Failure::error(e.to_string()))?;
        result.map_err(|e| Failure::error(e.to_string()))
    }

    /// Waits until the gateway has declared (and bound) where commands for `target` go, so a
    /// worker's command is not lost.
    pub async fn wait_command_entry(
        &mut self,
        target: Target,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let entry = self.profile.command_entry(target);
        let what = match &entry {
            CommandEntry::BoundExchange {
                exchange,
                routing_key: Some(rk),
            } => format!(
                "binding on exchange {exchange:?} with routing key {rk:?} (the gateway's command queue)"
            ),
            CommandEntry::BoundExchange { exchange, .. } => {
                format!("queue bound to exchange {exchange:?} (the gateway's command queue)")
            }
            CommandEntry::Queue(q) => format!("queue {q:?} (declared by the gateway)"),
        };
        self.wait_for_async(&what, timeout, |ctx: &Context| {
            let entry = entry.clone();
            Box::pin(async move {
                match entry {
                    CommandEntry::Queue(q) => ctx.broker.queue_exists(q).await.then_some(()),
                    CommandEntry::BoundExchange {
                        exchange,
                        routing_key,
                    } => {
                        let topology = ctx.topology().await.ok()?;
                        topology
                            .bindings
                            .iter()
                            .any(|b| {
                                b.source == exchange
                                    && routing_key.as_ref().is_none_or(|rk| &b.routing_key == rk)
                            })
                            .then_some(())
                    }
                }
            })
        })
        .await
    }

    /// Publishes the profile's command that sends `packet` to `target`.
    pub async fn send_command(
        &self,
        target: Target,
        packet: &serde_json::Value,
    ) -> Result<(), Failure> {
        let Some(message) = self.profile.command(self.body_encoding, target, packet) else {
            return Err(Failure::error(format!(
                "profile {} has no command mode for {target:?}",
                self.profile
            )));
        };
        self.publish(&message).await
    }

    /// Publishes a raw message (with confirms).
    pub async fn publish(&self, message: &OutgoingMessage) -> Result<(), Failure> {
        self.broker
            .publish(message)
            .await
            .map_err(|e| self.broker_failure(e))
    }
}
