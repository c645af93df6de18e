//! What launched this instance told it: the job id, attempt, coordinator endpoint and log
//! group, read from EC2 user data through IMDSv2 (session tokens; the launch template
//! requires them). User data holds nothing secret: credentials come from `claim`.

use barge_jobs::JobId;
use serde::Deserialize;

/// The `barge` object of the user data the EC2 launcher writes.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    /// The job to claim.
    pub job_id: JobId,
    /// Its attempt.
    pub attempt: u32,
    /// The coordinator's endpoint.
    pub endpoint: String,
    /// The CloudWatch Logs group for the job's log stream.
    #[serde(default)]
    pub log_group: Option<String>,
    /// The job's `max_duration`, in seconds: the worker unit's runtime limit is sized from it.
    #[serde(default)]
    pub max_duration: Option<u64>,
}

/// Grace beyond the job's `max_duration` before systemd stops the worker: the worker times
/// the job out itself at `max_duration` and needs a moment to report it.
pub const RUNTIME_GRACE_SECONDS: u64 = 600;

/// The drop-in that gives the worker unit its runtime limit.
pub fn runtime_dropin(launch: &Launch) -> Option<String> {
    let max = launch.max_duration?;
    Some(format!(
        "# Written at boot by barge-worker limits for job {} (max_duration {max} s).\n[Service]\nRuntimeMaxSec={}\n",
        launch.job_id,
        max + RUNTIME_GRACE_SECONDS
    ))
}

#[derive(Deserialize)]
struct UserData {
    barge: Launch,
}

/// Parses user data written by the EC2 launcher.
pub fn parse(user_data: &str) -> Result<Launch, String> {
    serde_json::from_str::<UserData>(user_data).map(|u| u.barge).map_err(|e| {
        format!("this instance's user data is not a barge job ({e}); it is written by the coordinator's EC2 launcher")
    })
}

/// Why this instance does not run a barge job.
#[derive(Debug, PartialEq, Eq)]
pub enum NotLaunched {
    /// User data holds no barge launch (it is absent, not JSON or has no `barge` object):
    /// the instance was not launched for a job (an image build's test instance, a debug
    /// instance).
    NoJob(&'static str),
    /// The metadata service could not be read.
    Unreadable(String),
}

impl std::fmt::Display for NotLaunched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotLaunched::NoJob(why) => write!(f, "no barge job in this instance's user data ({why})"),
            NotLaunched::Unreadable(e) => write!(f, "cannot tell whether this instance has a barge job: {e}"),
        }
    }
}

/// Whether `user_data` (`None`: the instance has none) is the launcher's document: a JSON
/// object with a `barge` object. What that object holds is `ec2`'s to judge, so a launch
/// this worker cannot parse still runs the worker, which fails and powers the machine off.
pub fn launched(user_data: Option<&str>) -> Result<(), NotLaunched> {
    let text = user_data.ok_or(NotLaunched::NoJob("it has none"))?;
    let document: serde_json::Value = serde_json::from_str(text).map_err(|_| NotLaunched::NoJob("it is not JSON"))?;
    match document.get("barge") {
        Some(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(NotLaunched::NoJob("it has no barge object")),
    }
}

/// This instance's user data from the instance metadata service (IMDSv2); `None` when it
/// has none (the service answers 404).
pub async fn user_data(client: &aws_config::imds::Client) -> Result<Option<String>, String> {
    match client.get("/latest/user-data").await {
        Ok(text) => Ok(Some(text.as_ref().to_string())),
        Err(aws_config::imds::client::error::ImdsError::ErrorResponse(e)) if e.response().status().as_u16() == 404 => {
            Ok(None)
        }
        Err(e) => Err(format!("cannot read user data from the instance metadata service: {e}")),
    }
}

/// Reads the launch from the instance metadata service (IMDSv2).
pub async fn launch(client: &aws_config::imds::Client) -> Result<Launch, String> {
    match user_data(client).await? {
        Some(text) => parse(&text),
        None => Err("this instance has no user data: it was not launched by the coordinator's EC2 launcher".into()),
    }
}

/// The instance's region, from the metadata service.
pub async fn region(client: &aws_config::imds::Client) -> Result<String, String> {
    client
        .get("/latest/meta-data/placement/region")
        .await
        .map(|region| region.as_ref().trim().to_string())
        .map_err(|e| format!("cannot read the region from the instance metadata service: {e}"))
}
