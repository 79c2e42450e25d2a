//! The one list of every scenario. A new scenario is one new file in `src/scenarios/` plus one
//! line here.

use std::sync::Arc;

use crate::scenario::Scenario;

/// Every scenario, in report order.
pub fn all() -> Vec<Arc<dyn Scenario>> {
    let list: Vec<Arc<dyn Scenario>> = vec![];
    debug_assert!(unique_names(&list), "scenario names must be unique");
    list
}

fn unique_names(list: &[Arc<dyn Scenario>]) -> bool {
    let mut names: Vec<String> = list.iter().map(|s| s.name()).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    names.len() == before
}
