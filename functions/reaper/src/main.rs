//! The reaper Lambda, run every minute by an EventBridge schedule: one
//! [`sweep`](barge_jobs::reaper::sweep) over the job table and the worker fleet. The logic
//! is the domain's; `barge serve` runs the same sweep as a task.

use barge_aws::{DynamoJobStore, Ec2Launcher, Ec2LauncherConfig};
use barge_jobs::reaper::{Policy, sweep};
use lambda_runtime::{Error, LambdaEvent, service_fn};

fn var(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("the environment variable {name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    let policy = Policy::from_vars(std::env::vars())?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let store = DynamoJobStore::new(&aws, var("JOB_TABLE")?);
    let fleet = Ec2LauncherConfig::from_vars(|name| std::env::var(name).ok())?;
    let launcher = Ec2Launcher::new(&aws, fleet);
    lambda_runtime::run(service_fn(|_: LambdaEvent<serde_json::Value>| async {
        let report = sweep(&store, &launcher, &policy).await?;
        tracing::info!(
            launched = report.launched.len(),
            lost = report.lost.len(),
            cancelled = report.cancelled.len(),
            timed_out = report.timed_out.len(),
            terminated = report.terminated.len(),
            errors = ?report.errors,
            "swept"
        );
        Ok::<_, Error>(serde_json::json!({
            "launched": report.launched,
            "lost": report.lost,
            "cancelled": report.cancelled,
            "timed_out": report.timed_out,
            "terminated": report.terminated,
            "errors": report.errors.len(),
        }))
    }))
    .await
}
