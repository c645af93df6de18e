//! [`Ec2Launcher`]: one EC2 instance per job attempt, from the worker launch template.
//!
//! - `ClientToken` = job id + attempt (+ the fallback index), so a retried request never
//!   starts a second worker (PITFALLS 5);
//! - tags `JobId`, `Attempt`, `ManagedBy=barge` on the instance and its volume, which is how
//!   the reaper finds orphans;
//! - user data holds only the job id, the attempt and the coordinator endpoint, never a
//!   credential (PITFALLS 8); IMDSv2 is required;
//! - `InsufficientInstanceCapacity` (and kin) moves on to the next instance type of the list;
//!   when every type is out of capacity the failure is retryable (the reaper tries again).

use aws_sdk_ec2::{
    Client,
    error::ProvideErrorMetadata,
    types::{
        Filter, HttpTokensState, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceType,
        LaunchTemplateSpecification, ResourceType, Tag, TagSpecification,
    },
};
use barge_jobs::{Job, JobId, LaunchError, Launcher, ports::Instance};
use base64::{Engine, engine::general_purpose::STANDARD};

/// The tag every barge instance carries.
pub const MANAGED_BY: (&str, &str) = ("ManagedBy", "barge");

/// Errors that mean "this instance type, here, now": try the next type.
const CAPACITY_CODES: &[&str] =
    &["InsufficientInstanceCapacity", "InstanceLimitExceeded", "Unsupported", "InsufficientCapacity"];
/// Errors worth retrying later with the same request.
const TRANSIENT_CODES: &[&str] = &["RequestLimitExceeded", "Throttling", "ServiceUnavailable", "InternalError"];

/// Where and how workers launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ec2LauncherConfig {
    /// The worker launch template: its id (`lt-…`) or name. Its `$Default` version is used.
    pub launch_template: String,
    /// The coordinator's endpoint the worker calls (written into user data).
    pub endpoint: String,
    /// Instance types to try in order when the job does not name one.
    pub instance_types: Vec<String>,
}

/// Launches workers on EC2.
#[derive(Clone)]
pub struct Ec2Launcher {
    client: Client,
    config: Ec2LauncherConfig,
}

/// The user data a worker reads through IMDSv2: no secrets, just where to ask.
pub fn user_data(job: &JobId, attempt: u32, endpoint: &str) -> String {
    serde_json::json!({"barge": {"job_id": job, "attempt": attempt, "endpoint": endpoint}}).to_string()
}

fn described<E: ProvideErrorMetadata + std::fmt::Debug>(e: &aws_sdk_ec2::error::SdkError<E>) -> (String, String) {
    match e.as_service_error() {
        Some(service) => {
            (service.code().unwrap_or("Unknown").to_string(), service.message().unwrap_or("no message").to_string())
        }
        None => ("Unreachable".to_string(), "EC2 could not be reached".to_string()),
    }
}

impl Ec2Launcher {
    /// A launcher with `config`.
    pub fn new(sdk: &aws_config::SdkConfig, config: Ec2LauncherConfig) -> Self {
        Ec2Launcher { client: Client::new(sdk), config }
    }

    /// A launcher over an existing client (tests with mocked responses).
    pub fn with_client(client: Client, config: Ec2LauncherConfig) -> Self {
        Ec2Launcher { client, config }
    }

    fn template(&self) -> LaunchTemplateSpecification {
        let spec = LaunchTemplateSpecification::builder().version("$Default");
        if self.config.launch_template.starts_with("lt-") {
            spec.launch_template_id(&self.config.launch_template).build()
        } else {
            spec.launch_template_name(&self.config.launch_template).build()
        }
    }

    fn tags(job: &Job, resource: ResourceType) -> TagSpecification {
        let tag = |key: &str, value: String| Tag::builder().key(key).value(value).build();
        TagSpecification::builder()
            .resource_type(resource)
            .tags(tag("JobId", job.id.to_string()))
            .tags(tag("Attempt", job.attempt.to_string()))
            .tags(tag(MANAGED_BY.0, MANAGED_BY.1.to_string()))
            .tags(tag("Name", format!("barge-worker-{}", job.id)))
            .build()
    }
}

impl Launcher for Ec2Launcher {
    async fn launch(&self, job: &Job) -> Result<String, LaunchError> {
        let types: Vec<String> = match &job.options.instance_type {
            Some(kind) => vec![kind.clone()],
            None => self.config.instance_types.clone(),
        };
        if types.is_empty() {
            return Err(LaunchError { message: "no instance type is configured".into(), retryable: false });
        }
        let user_data = STANDARD.encode(user_data(&job.id, job.attempt, &self.config.endpoint));
        let mut out_of_capacity = Vec::new();
        for (i, kind) in types.iter().enumerate() {
            let result = self
                .client
                .run_instances()
                .launch_template(self.template())
                .instance_type(InstanceType::from(kind.as_str()))
                .min_count(1)
                .max_count(1)
                .client_token(format!("{}-{}-{i}", job.id, job.attempt))
                .user_data(&user_data)
                .metadata_options(
                    InstanceMetadataOptionsRequest::builder()
                        .http_tokens(HttpTokensState::Required)
                        .http_endpoint(InstanceMetadataEndpointState::Enabled)
                        .http_put_response_hop_limit(1)
                        .build(),
                )
                .tag_specifications(Self::tags(job, ResourceType::Instance))
                .tag_specifications(Self::tags(job, ResourceType::Volume))
                .send()
                .await;
            match result {
                Ok(out) => {
                    return out
                        .instances()
                        .first()
                        .and_then(|instance| instance.instance_id().map(str::to_string))
                        .ok_or_else(|| LaunchError {
                            message: "RunInstances returned no instance".into(),
                            retryable: true,
                        });
                }
                Err(e) => {
                    let (code, message) = described(&e);
                    if CAPACITY_CODES.contains(&code.as_str()) {
                        out_of_capacity.push(format!("{kind} ({code})"));
                        continue;
                    }
                    let retryable = TRANSIENT_CODES.contains(&code.as_str()) || code == "Unreachable";
                    return Err(LaunchError { message: format!("EC2 RunInstances {code}: {message}"), retryable });
                }
            }
        }
        Err(LaunchError {
            message: format!("no capacity for any instance type: {}", out_of_capacity.join(", ")),
            retryable: true,
        })
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), LaunchError> {
        match self.client.terminate_instances().instance_ids(instance_id).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let (code, message) = described(&e);
                if code == "InvalidInstanceID.NotFound" {
                    return Ok(());
                }
                Err(LaunchError { message: format!("EC2 TerminateInstances {code}: {message}"), retryable: true })
            }
        }
    }

    async fn instances(&self) -> Result<Vec<Instance>, LaunchError> {
        let mut instances = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .describe_instances()
                .filters(Filter::builder().name(format!("tag:{}", MANAGED_BY.0)).values(MANAGED_BY.1).build())
                .filters(Filter::builder().name("instance-state-name").values("pending").values("running").build())
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| {
                    let (code, message) = described(&e);
                    LaunchError { message: format!("EC2 DescribeInstances {code}: {message}"), retryable: true }
                })?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = instance.instance_id() else { continue };
                let job = instance
                    .tags()
                    .iter()
                    .find(|tag| tag.key() == Some("JobId"))
                    .and_then(|tag| tag.value())
                    .and_then(JobId::parse);
                instances.push(Instance { id: id.to_string(), job });
            }
            token = page.next_token;
            if token.is_none() {
                return Ok(instances);
            }
        }
    }
}
