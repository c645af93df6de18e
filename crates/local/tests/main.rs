//! The SQLite store against the conformance suite, plus what only an embedded store has to
//! prove: it survives a restart, keeps no secret in the clear, and its key and token files
//! are private.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use barge_jobs::{
    AuthError, Authenticator, Caller, Created, Deadlines, Event, JobId, JobStore, Sealer, Timestamp, conformance,
};
use barge_local::{BearerTokens, KeyFileSealer, SqliteStore};

async fn fresh_store() -> SqliteStore {
    let dir = tempfile::tempdir().unwrap().keep();
    SqliteStore::open(&dir.join("jobs.db")).unwrap()
}

barge_jobs::store_conformance!(crate::fresh_store());

#[tokio::test]
async fn jobs_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/jobs.db");
    let job = conformance::job("alice", Some("k"), Timestamp::now());
    {
        let store = SqliteStore::open(&path).unwrap();
        store.create(&job, 5).await.unwrap();
        let cancelled = job.apply(&Event::CancelRequested, Deadlines::default(), Timestamp::now()).unwrap();
        store.replace(&job, &cancelled).await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let read = store.get(&job.id).await.unwrap().unwrap();
    assert_eq!(read.state(), barge_jobs::State::Cancelled);
    assert_eq!(store.active_count().await.unwrap(), 0);
    assert!(matches!(store.create(&job, 5).await.unwrap(), Created::Existing(_)));
}

#[tokio::test]
async fn sealed_credentials_open_only_for_their_job() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("keys/seal.key");
    let sealer = KeyFileSealer::open(&key).unwrap();
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let credentials = conformance::spec().credentials();
    let (a, b) = (JobId::random(), JobId::random());
    let sealed = sealer.seal(&a, &credentials).await.unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("s3cr"));
    assert_eq!(sealer.unseal(&a, &sealed).await.unwrap(), credentials);
    assert!(sealer.unseal(&b, &sealed).await.is_err(), "bound to the job");
    let mut tampered = sealed.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(sealer.unseal(&a, &tampered).await.is_err());
    assert_ne!(sealer.seal(&a, &credentials).await.unwrap(), sealed, "a fresh nonce each time");
    // The same key file opens again (a restart); another key does not open it.
    assert_eq!(KeyFileSealer::open(&key).unwrap().unseal(&a, &sealed).await.unwrap(), credentials);
    let other = KeyFileSealer::open(&dir.path().join("other.key")).unwrap();
    let e = other.unseal(&a, &sealed).await.unwrap_err();
    assert!(!e.to_string().contains("s3cr"));
    // A key others can read is refused, with the fix.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = KeyFileSealer::open(&key).err().unwrap();
    assert!(e.to_string().contains("chmod 600"), "{e}");
}

#[tokio::test]
async fn the_store_file_holds_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let store = SqliteStore::open(&path).unwrap();
    let sealer = KeyFileSealer::open(&dir.path().join("seal.key")).unwrap();
    let spec = conformance::spec();
    let id = JobId::random();
    let sealed = sealer.seal(&id, &spec.credentials()).await.unwrap();
    let job = barge_jobs::Job::new(id, "alice", &spec, sealed, None, Deadlines::default(), Timestamp::now());
    store.create(&job, 5).await.unwrap();
    let rows = store.dump().await.unwrap().join("\n");
    assert!(rows.contains("source.example.com"), "the redacted URL is stored");
    for needle in [conformance::PASSWORD, "s3cr%3Bet", "s3cr"] {
        assert!(!rows.contains(needle), "{needle} in a stored row");
    }
    drop(store);
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("s3cr"), "no file holds the password");
    }
}

#[test]
fn bearer_tokens_recognise_users_and_workers() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = BearerTokens::new();
    let user = tokens.user_token_file(&dir.path().join("token"), "local").unwrap();
    assert_eq!(std::fs::metadata(dir.path().join("token")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(tokens.user_token_file(&dir.path().join("token"), "local").unwrap(), user, "stable across restarts");
    let worker = tokens.issue(Caller::Worker { instance_id: "local-1".into() }).unwrap();
    let request = |value: Option<&str>| {
        let mut builder = http::Request::builder();
        if let Some(value) = value {
            builder = builder.header("authorization", value);
        }
        builder.body(()).unwrap().into_parts().0
    };
    assert_eq!(
        tokens.authenticate(&request(Some(&format!("Bearer {user}")))),
        Ok(Caller::User { owner: "local".into() })
    );
    assert_eq!(
        tokens.authenticate(&request(Some(&format!("Bearer {worker}")))),
        Ok(Caller::Worker { instance_id: "local-1".into() })
    );
    assert!(matches!(tokens.authenticate(&request(None)), Err(AuthError::Missing(_))));
    assert_eq!(tokens.authenticate(&request(Some("Bearer nope"))), Err(AuthError::Invalid));
    assert_eq!(tokens.authenticate(&request(Some(&user))), Err(AuthError::Invalid), "the scheme is required");
    tokens.revoke_worker("local-1");
    assert_eq!(tokens.authenticate(&request(Some(&format!("Bearer {worker}")))), Err(AuthError::Invalid));
}
