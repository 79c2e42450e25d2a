//! A black-box conformance suite for Discord gateway bridges.
//!
//! The suite starts an implementation as a child process (`sh -c <command>`) with the environment
//! described in [`contract`], points it at a mock Discord gateway (package `mock-gateway`), and
//! acts as the workers of the chosen broker profile on RabbitMQ: it checks what the mock recorded
//! about the client (identify, heartbeats, resumes, rate limits), what arrived on RabbitMQ
//! (topology, bodies, properties, command routing) and what is in Redis.
//!
//! Modules, one job each:
//! - [`contract`]: the environment variables and time limits an implementation is held to;
//! - [`process`]: starting and stopping the implementation;
//! - [`broker`]: AMQP as a worker uses it (lapin); the RabbitMQ HTTP API is the
//!   `rabbitmq-management` package (shared with the runtimes' end-to-end tests);
//! - [`redis_store`]: Redis inspection; [`isolation`]: a vhost and a key prefix per scenario run;
//! - [`profiles`]: each profile's contract from the worker's side; [`body`]: body decoding;
//! - [`report`]: table, JSON and JUnit output;
//! - [`gateway`]: the mock gateway adapter; [`scenario`]: the trait and context;
//!   [`registry`]: the list; [`runner`]: scheduling and lifecycle; [`services`]: where RabbitMQ
//!   and Redis come from;
//! - [`worker`]: the suite acting as a profile's worker (subscriptions, inbox, commands);
//!   [`scenarios`]: the scenarios, one per file, and the steps several share;
//! - [`proxy`]: a loopback TCP proxy that cuts, stalls or slows the broker link;
//!   [`private_services`]: RabbitMQ nodes and Redis servers a fault scenario may break.

pub mod body;
pub mod broker;
pub mod contract;
pub mod gateway;
pub mod isolation;
pub mod private_services;
pub mod process;
pub mod profiles;
pub mod proxy;
pub mod redis_store;
pub mod registry;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod scenarios;
pub mod services;
pub mod worker;
