//! The shared end-to-end scenarios (`runtime_common::e2e`) against the `gatehouse` binary, the
//! test side on tokio.

runtime_common::end_to_end_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async_rs::Runtime::tokio_current(),
    env!("CARGO_BIN_EXE_gatehouse")
);

// The publish-path scenarios again with `GATEHOUSE_AMQP_CLIENT=amqprs` (issue 13, item 1).
runtime_common::amqprs_end_to_end_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async_rs::Runtime::tokio_current(),
    env!("CARGO_BIN_EXE_gatehouse")
);
