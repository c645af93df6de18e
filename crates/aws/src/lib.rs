//! barge's AWS adapters of the `barge-jobs` ports: [`DynamoJobStore`] (jobs in DynamoDB,
//! conditional writes, an exact active-job counter, TTL), [`KmsSealer`] (credentials sealed
//! with KMS under the job's encryption context), [`Ec2Launcher`] (a worker instance per
//! job attempt) and [`CloudWatchLogSink`]/[`CloudWatchLogs`] (a job's log in CloudWatch
//! Logs). Depends on `barge-jobs` only.
//!
//! Each adapter is a cargo feature with its SDK (`store`, `sealer`, `launcher`, `logs`; all
//! on by default), so a binary builds only the SDKs it calls: the worker takes `logs` alone.

#[cfg(feature = "store")]
mod dynamo;
#[cfg(feature = "launcher")]
mod ec2;
#[cfg(feature = "sealer")]
mod kms;
#[cfg(feature = "logs")]
mod logs;

#[cfg(feature = "store")]
pub use dynamo::{DynamoJobStore, TableNames};
#[cfg(feature = "launcher")]
pub use ec2::{Ec2Launcher, Ec2LauncherConfig, MANAGED_BY, user_data};
#[cfg(feature = "sealer")]
pub use kms::KmsSealer;
#[cfg(feature = "logs")]
pub use logs::{CloudWatchLogSink, CloudWatchLogs};

/// An SDK configuration pointed at a local stand-in (DynamoDB Local, moto) with static
/// test credentials, for tests and local development.
pub async fn local_config(endpoint: &str) -> aws_config::SdkConfig {
    local_config_in(endpoint, "us-east-1").await
}

/// [`local_config`] in another region (moto keeps each region's resources apart, so tests
/// running at once do not see each other's instances).
pub async fn local_config_in(endpoint: &str, region: &'static str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(region))
        .credentials_provider(aws_credential_types::Credentials::new("testing", "testing", None, None, "static"))
        .load()
        .await
}
