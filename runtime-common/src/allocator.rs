//! The process's memory allocator: jemalloc (feature `jemalloc`, turned on by both binaries).
//!
//! Owns only that choice. Chosen by measurement (BENCHMARKS.md, issue 13 items 1 and 6): with
//! glibc's malloc, a fifth of Gatehouse's CPU went to `malloc`/`free` and its arena bookkeeping
//! (`malloc_consolidate`, `unlink_chunk`; buffers pass between the tokio workers and lapin's
//! I/O thread), and the cost per event grew with the shard count. With jemalloc the whole
//! process costs 0.86x glibc's CPU per event with one shard and 0.62x with 256 (means of five
//! runs each, alternating in the same invocations), and an idle shard's memory is the same
//! (within 3%). mimalloc was as fast at 256 shards but took 1.7x the memory per idle
//! zlib-stream shard.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
