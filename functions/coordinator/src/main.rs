//! The coordinator Lambda: API Gateway HTTP API (payload 2.0, `$default` stage, IAM
//! authorization on every route) → this router, with jobs in DynamoDB, credentials sealed
//! by KMS and callers identified by IAM.

use barge_aws::{DynamoJobStore, KmsSealer};
use barge_coordinator::{App, Config, Ports, iam::IamAuthenticator, router};
use barge_jobs::{Job, LaunchError, Launcher, ports::Instance};

/// Workers launch from the fleet the worker issue adds; until a deployment has one, a
/// launch fails for good with this message instead of leaving jobs queued.
struct NoFleet;

impl Launcher for NoFleet {
    async fn launch(&self, _job: &Job) -> Result<String, LaunchError> {
        Err(LaunchError { message: "this deployment has no worker fleet configured".into(), retryable: false })
    }

    async fn terminate(&self, _instance_id: &str) -> Result<(), LaunchError> {
        Ok(())
    }

    async fn instances(&self) -> Result<Vec<Instance>, LaunchError> {
        Ok(Vec::new())
    }
}

struct Aws;

impl Ports for Aws {
    type Store = DynamoJobStore;
    type Launcher = NoFleet;
    type Sealer = KmsSealer;
    type Auth = IamAuthenticator;
}

fn var(name: &str) -> Result<String, lambda_http::Error> {
    std::env::var(name).map_err(|_| format!("the environment variable {name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    let config = Config::from_vars(std::env::vars())?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let app = App::<Aws>::new(
        DynamoJobStore::new(&aws, var("JOB_TABLE")?),
        NoFleet,
        KmsSealer::new(&aws, var("KMS_KEY_ID")?),
        IamAuthenticator::new(var("WORKER_ROLE_NAME")?),
        config,
    );
    lambda_http::run(router(app)).await
}
