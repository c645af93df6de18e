//! The DynamoDB store against the conformance suite on DynamoDB Local, and the KMS sealer
//! against moto; both started by the harness (scripts/aws-local).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use barge_aws::{DynamoJobStore, KmsSealer, local_config};
use barge_jobs::{Deadlines, Job, JobId, JobStore, Sealer, Timestamp, conformance};

async fn fresh_store() -> DynamoJobStore {
    let config = local_config(&barge_testkit::aws_local("dynamodb")).await;
    let store = DynamoJobStore::new(&config, format!("jobs_{}", JobId::random()));
    store.create_table().await.unwrap();
    store
}

barge_jobs::store_conformance!(crate::fresh_store());

async fn kms() -> KmsSealer {
    let config = local_config(&barge_testkit::aws_local("moto")).await;
    let key = aws_sdk_kms::Client::new(&config).create_key().description("barge test").send().await.unwrap();
    KmsSealer::new(&config, key.key_metadata.unwrap().key_id)
}

#[tokio::test]
async fn kms_seals_for_one_job_only() {
    let sealer = kms().await;
    let credentials = conformance::spec().credentials();
    let (a, b) = (JobId::random(), JobId::random());
    let sealed = sealer.seal(&a, &credentials).await.unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("s3cr"));
    assert_eq!(sealer.unseal(&a, &sealed).await.unwrap(), credentials);
    let e = sealer.unseal(&b, &sealed).await.unwrap_err();
    assert!(!e.to_string().contains("s3cr"), "{e}");
}

#[tokio::test]
async fn no_stored_item_holds_the_password() {
    // GIVEN a job created with KMS-sealed credentials whose password has ; $ and `
    let (store, sealer) = (fresh_store().await, kms().await);
    let spec = conformance::spec();
    let id = JobId::random();
    let sealed = sealer.seal(&id, &spec.credentials()).await.unwrap();
    let job = Job::new(
        id.clone(),
        "arn:aws:iam::123456789012:user/alice",
        &spec,
        sealed,
        None,
        Deadlines::default(),
        Timestamp::now(),
    );
    store.create(&job, 5).await.unwrap();
    // THEN no attribute of any item holds it, in any encoding
    let items = store.dump().await.unwrap().join("\n");
    assert!(items.contains("source.example.com"), "the redacted URL is stored: {items}");
    for needle in [conformance::PASSWORD, "s3cr%3Bet", "s3cr"] {
        assert!(!items.contains(needle), "{needle} in a stored item");
    }
    // AND the job's own id still unseals it
    let stored = store.get(&id).await.unwrap().unwrap();
    assert_eq!(sealer.unseal(&id, &stored.sealed_credentials).await.unwrap(), spec.credentials());
}
