//! No code. The features some of barge's builds turn on in shared dependencies, asked for by
//! every build (Cargo.toml, docs/build.md).
