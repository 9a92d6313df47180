//! The storage contract against the in-memory fake.

mod common;

use adlsfs::storage::memory::MemoryStore;

#[tokio::test]
async fn memory_store_meets_the_storage_contract() {
    common::conformance::run_all(&MemoryStore::new()).await;
}

#[tokio::test]
async fn memory_store_reads_ranges_with_their_md5() {
    common::conformance::range_md5_reads(&MemoryStore::new()).await;
}
