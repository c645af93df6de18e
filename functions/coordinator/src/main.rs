//! The coordinator Lambda: API Gateway HTTP API (payload 2.0, `$default` stage, IAM
//! authorization on every route) → this router, with jobs in DynamoDB, credentials sealed
//! by KMS, workers launched on EC2, callers identified by IAM and job logs read from the
//! workers' CloudWatch Logs group. Configuration comes from
//! the environment the CDK app sets (docs/design-notes.md 24: nothing hard-coded).

use barge_aws::{CloudWatchLogs, DynamoJobStore, Ec2Launcher, Ec2LauncherConfig, KmsSealer};
use barge_coordinator::{App, Config, Ports, iam::IamAuthenticator, router};

struct Aws;

impl Ports for Aws {
    type Store = DynamoJobStore;
    type Launcher = Ec2Launcher;
    type Sealer = KmsSealer;
    type Auth = IamAuthenticator;
    type Logs = CloudWatchLogs;
}

fn var(name: &str) -> Result<String, lambda_http::Error> {
    std::env::var(name).map_err(|_| format!("the environment variable {name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    let config = Config::from_vars(std::env::vars())?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let fleet = Ec2LauncherConfig::from_vars(|name| std::env::var(name).ok())?;
    let app = App::<Aws>::new(
        DynamoJobStore::new(&aws, var("JOB_TABLE")?),
        Ec2Launcher::new(&aws, fleet),
        KmsSealer::new(&aws, var("KMS_KEY_ID")?),
        IamAuthenticator::new(var("WORKER_ROLE_NAME")?),
        CloudWatchLogs::from_sdk(&aws, &var("WORKER_LOG_GROUP")?),
        config,
    );
    lambda_http::run(router(app)).await
}
