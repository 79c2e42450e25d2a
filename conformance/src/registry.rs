//! The one list of every scenario. A new scenario is one new file in `src/scenarios/` plus one
//! line here.

use std::sync::Arc;

use crate::contract::{Compression, Encoding};
use crate::profiles::BodyEncoding;
use crate::scenario::Scenario;
use crate::scenarios::*;

/// Every scenario, in report order.
pub fn all() -> Vec<Arc<dyn Scenario>> {
    let mut list: Vec<Arc<dyn Scenario>> = vec![
        Arc::new(handshake::Handshake),
        Arc::new(heartbeat_request::HeartbeatRequest),
        Arc::new(identify_concurrency::IdentifyConcurrency),
        Arc::new(topology::Topology { commands: false }),
        Arc::new(topology::Topology { commands: true }),
        Arc::new(passthrough::Passthrough::PLAIN),
        Arc::new(passthrough::Passthrough {
            body: Some(BodyEncoding::Json),
            ..passthrough::Passthrough::PLAIN
        }),
        Arc::new(passthrough::Passthrough {
            compress: Compression::ZlibStream,
            ..passthrough::Passthrough::PLAIN
        }),
        Arc::new(passthrough::Passthrough {
            compress: Compression::ZstdStream,
            ..passthrough::Passthrough::PLAIN
        }),
        Arc::new(passthrough::Passthrough {
            encoding: Encoding::Etf,
            ..passthrough::Passthrough::PLAIN
        }),
        Arc::new(commands::Commands),
        Arc::new(bad_commands::BadCommands),
        Arc::new(rate_limit::RateLimit),
        Arc::new(redis_session::RedisSession),
        Arc::new(reconnect::ReconnectOp7),
        Arc::new(invalid_session::InvalidSession { resumable: true }),
        Arc::new(invalid_session::InvalidSession { resumable: false }),
        Arc::new(zombie::Zombie),
    ];
    for case in close_codes::all() {
        list.push(Arc::new(case));
    }
    list.extend(fault_scenarios());
    list.extend(cluster_scenarios());
    debug_assert!(unique_names(&list), "scenario names must be unique");
    list
}

/// The `fault-*` scenarios (issue 9): zero loss under process, broker, Redis and gateway faults.
fn fault_scenarios() -> Vec<Arc<dyn Scenario>> {
    let mut list: Vec<Arc<dyn Scenario>> = vec![
        Arc::new(fault_process::ProcessFault { kill: true }),
        Arc::new(fault_process::ProcessFault { kill: false }),
    ];
    for fault in fault_broker::BrokerFault::ALL {
        list.push(Arc::new(fault));
    }
    list.push(Arc::new(fault_redis::RedisFault { at_start: false }));
    list.push(Arc::new(fault_redis::RedisFault { at_start: true }));
    list.push(Arc::new(fault_gateway::GatewayFault { zombie: false }));
    list.push(Arc::new(fault_gateway::GatewayFault { zombie: true }));
    list.push(Arc::new(fault_commands::CommandFlood));
    list
}

/// The `cluster-*` scenarios (issue 10): several processes of one cluster on one mock gateway.
fn cluster_scenarios() -> Vec<Arc<dyn Scenario>> {
    use cluster::{Case, Cluster};
    [
        Case::Start(1),
        Case::Start(2),
        Case::Overlap,
        Case::Kill,
        Case::Rolling,
        Case::Reshard,
    ]
    .into_iter()
    .map(|case| Arc::new(Cluster(case)) as Arc<dyn Scenario>)
    .collect()
}

fn unique_names(list: &[Arc<dyn Scenario>]) -> bool {
    let mut names: Vec<String> = list.iter().map(|s| s.name()).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    names.len() == before
}
