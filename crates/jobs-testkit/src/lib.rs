//! Test support for barge's job domain, used by the tests of every crate that implements or
//! drives a port: in-memory adapters of every port ([`memory`]) with the semantics of the
//! real ones, and the store conformance suite ([`conformance`], [`store_conformance!`]) that
//! SQLite, DynamoDB Local and the in-memory store all run unchanged.
//!
//! Only ever a dev-dependency: nothing here ships in a binary.

pub mod conformance;
pub mod memory;
