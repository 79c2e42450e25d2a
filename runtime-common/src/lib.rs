//! The async glue both Gatehouse runtimes share (being written).
