//! The shared end-to-end scenarios (`runtime_common::e2e`) against the `gatehouse-async-std`
//! binary, the test side on async-std (lapin on async-rs's smol kit).

runtime_common::end_to_end_tests!(
    #[async_std::test]
    async_rs::Runtime::smol(),
    env!("CARGO_BIN_EXE_gatehouse-async-std")
);
