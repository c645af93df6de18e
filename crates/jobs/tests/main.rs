//! The in-memory store against the store conformance suite (the same cases SQLite and
//! DynamoDB Local run in their crates).

barge_jobs::store_conformance!(async { barge_jobs::memory::MemoryStore::new() });
