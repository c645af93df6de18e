//! barge's AWS adapters of the `barge-jobs` ports: [`DynamoJobStore`] (jobs in DynamoDB,
//! conditional writes, an exact active-job counter, TTL) and [`KmsSealer`] (credentials
//! sealed with KMS under the job's encryption context). Depends on `barge-jobs` only.

mod dynamo;
mod kms;

pub use dynamo::{DynamoJobStore, TableNames};
pub use kms::KmsSealer;

/// An SDK configuration pointed at a local stand-in (DynamoDB Local, moto) with static
/// test credentials, for tests and local development.
pub async fn local_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "static"))
        .load()
        .await
}
