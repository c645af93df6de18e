//! The SQLSTATEs barge branches on, by name (PostgreSQL's Appendix A, "PostgreSQL Error
//! Codes"). Constants, so they serve as match patterns.

/// `08001`: the client could not establish a connection.
pub const SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION: &str = "08001";
/// `08006`: the connection failed.
pub const CONNECTION_FAILURE: &str = "08006";
/// `0A000`: the feature is not supported (an extension's module missing, …).
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// `22023`: an invalid parameter value.
pub const INVALID_PARAMETER_VALUE: &str = "22023";
/// `28000`: the role may not log in from here (pg_hba.conf), or at all.
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
/// `28P01`: wrong password.
pub const INVALID_PASSWORD: &str = "28P01";
/// `3D000`: no such database.
pub const INVALID_CATALOG_NAME: &str = "3D000";
/// `3F000`: no such schema.
pub const INVALID_SCHEMA_NAME: &str = "3F000";
/// `40001`: a serialization failure; running again may succeed.
pub const SERIALIZATION_FAILURE: &str = "40001";
/// `40P01`: a deadlock; running again may succeed.
pub const DEADLOCK_DETECTED: &str = "40P01";
/// `42501`: the privilege is missing.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// `42704`: no such object (role, type, …).
pub const UNDEFINED_OBJECT: &str = "42704";
/// `42710`: the object exists already (role, slot, …).
pub const DUPLICATE_OBJECT: &str = "42710";
/// `42809`: the object is of the wrong type.
pub const WRONG_OBJECT_TYPE: &str = "42809";
/// `42883`: no such function.
pub const UNDEFINED_FUNCTION: &str = "42883";
/// `42P01`: no such table.
pub const UNDEFINED_TABLE: &str = "42P01";
/// `42P07`: the table exists already.
pub const DUPLICATE_TABLE: &str = "42P07";
/// `53200`: out of memory.
pub const OUT_OF_MEMORY: &str = "53200";
/// `53300`: no free connection slot.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// `55006`: the object is in use (a replication slot another session holds).
pub const OBJECT_IN_USE: &str = "55006";
/// `55P03`: a lock was not granted within `lock_timeout`.
pub const LOCK_NOT_AVAILABLE: &str = "55P03";
/// `57014`: the statement was cancelled (by a user, or a timeout).
pub const QUERY_CANCELED: &str = "57014";
/// `57P01`: the server is shutting down.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// `57P03`: the server is starting up (or cannot connect now).
pub const CANNOT_CONNECT_NOW: &str = "57P03";
/// `58P01`: a file is missing on the server (an extension's library).
pub const UNDEFINED_FILE: &str = "58P01";
/// `XX000`: an internal error (among them "tuple concurrently updated", when two
/// transactions change one catalog row).
pub const INTERNAL_ERROR: &str = "XX000";
