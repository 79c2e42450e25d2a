//! The `gatehouse` binary on tokio (being written).

fn main() {}
