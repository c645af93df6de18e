//! [`Ec2Launcher`]: one EC2 instance per job attempt, from the worker launch template.
//!
//! - `ClientToken` = job id + attempt (+ the market, the instance type's index and, with
//!   subnets configured, the subnet's index), so a retried request never starts a second
//!   worker (docs/design-notes.md 5);
//! - optionally spot first for resumable jobs, on-demand when spot has no capacity;
//! - tags `JobId`, `Attempt`, `ManagedBy=barge` on the instance and its volume; the reaper
//!   finds orphans among the instances launched from **this stage's** launch template (EC2's
//!   own `aws:ec2launchtemplate:id` tag, which no caller can set or change), so stages that
//!   share an account and region never see, nor terminate, each other's workers;
//! - user data holds only the job id, the attempt and the coordinator endpoint, never a
//!   credential (docs/design-notes.md 8); IMDSv2 is required;
//! - `InsufficientInstanceCapacity` (and kin) moves on to the next subnet (another AZ often
//!   has capacity), then to the next instance type of the list; when every pair is out of
//!   capacity the failure is retryable (the reaper tries again).

use aws_sdk_ec2::{
    Client,
    error::ProvideErrorMetadata,
    operation::run_instances::builders::RunInstancesFluentBuilder,
    types::{
        BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, InstanceInterruptionBehavior,
        InstanceMarketOptionsRequest, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest, InstanceStateName,
        InstanceType, LaunchTemplateSpecification, MarketType, ResourceType, SpotInstanceType, SpotMarketOptions, Tag,
        TagSpecification, VolumeType,
    },
};
use barge_jobs::{Command, Job, JobId, LaunchError, Launcher, ports::Instance};
use base64::{Engine, engine::general_purpose::STANDARD};

/// The tag every barge instance carries.
pub const MANAGED_BY: (&str, &str) = ("ManagedBy", "barge");
/// The tag EC2 puts on every instance launched from a launch template: the template's id.
/// Callers cannot set or change `aws:` tags, so it tells one stage's workers from another's
/// (the reaper's IAM policy conditions `ec2:TerminateInstances` on it too).
pub const LAUNCH_TEMPLATE_TAG: &str = "aws:ec2launchtemplate:id";

/// Errors that mean "this instance type, here, now": try the next type.
const CAPACITY_CODES: &[&str] =
    &["InsufficientInstanceCapacity", "InstanceLimitExceeded", "Unsupported", "InsufficientCapacity"];
/// Errors worth retrying later with the same request.
const TRANSIENT_CODES: &[&str] = &["RequestLimitExceeded", "Throttling", "ServiceUnavailable", "InternalError"];

/// Where and how workers launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ec2LauncherConfig {
    /// The worker launch template: its id (`lt-…`; a name launches, but cannot scope the
    /// reaper's listing). Its `$Default` version is used.
    pub launch_template: String,
    /// The coordinator's endpoint the worker calls (written into user data).
    pub endpoint: String,
    /// Instance types to try in order when the job does not name one.
    pub instance_types: Vec<String>,
    /// Subnets to launch into, in order of preference (put the databases' AZ first: traffic
    /// across AZs is billed); each instance type is tried in every subnet before the next
    /// type. Empty: the launch template's network settings (or the default VPC's).
    pub subnets: Vec<String>,
    /// The CloudWatch Logs group workers log to (written into user data).
    pub log_group: Option<String>,
    /// Try spot capacity first for jobs that resume after an interruption, then on-demand.
    pub spot: bool,
    /// Root volume size in GiB (gp3, encrypted); the launch template's when unset. The
    /// worker streams without temporary files, so this holds the OS, tools and logs only,
    /// whatever the size of the databases.
    pub root_volume_gib: Option<i32>,
}

impl Ec2LauncherConfig {
    /// From the Lambdas' environment: `WORKER_LAUNCH_TEMPLATE`, `API_ENDPOINT`,
    /// `WORKER_INSTANCE_TYPES` (comma-separated), optional `WORKER_SUBNETS` (comma-separated
    /// subnet ids, `subnet-…`; unset or empty: none), `WORKER_LOG_GROUP`, `WORKER_SPOT`
    /// (`true`/`false`) and `WORKER_ROOT_VOLUME_GIB`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Ec2LauncherConfig, String> {
        let required = |name: &str| var(name).filter(|v| !v.trim().is_empty()).ok_or(format!("{name} is not set"));
        let list = |text: &str| -> Vec<String> {
            text.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect()
        };
        let instance_types = list(&required("WORKER_INSTANCE_TYPES")?);
        let subnets = list(&var("WORKER_SUBNETS").unwrap_or_default());
        if let Some(bad) = subnets.iter().find(|id| !id.starts_with("subnet-")) {
            return Err(format!("WORKER_SUBNETS must list subnet ids (subnet-…), not {bad:?}"));
        }
        let spot = match var("WORKER_SPOT").as_deref().map(str::trim) {
            None | Some("" | "false") => false,
            Some("true") => true,
            Some(other) => return Err(format!("WORKER_SPOT must be true or false, not {other:?}")),
        };
        let root_volume_gib = match var("WORKER_ROOT_VOLUME_GIB") {
            None => None,
            Some(text) => Some(
                text.trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|gib| (8..=16_384).contains(gib))
                    .ok_or(format!("WORKER_ROOT_VOLUME_GIB must be 8 to 16384, not {text:?}"))?,
            ),
        };
        let launch_template = required("WORKER_LAUNCH_TEMPLATE")?;
        if !launch_template.starts_with("lt-") {
            return Err(format!(
                "WORKER_LAUNCH_TEMPLATE must be the launch template's id (lt-…), not {launch_template:?}: the reaper lists only the instances launched from it"
            ));
        }
        Ok(Ec2LauncherConfig {
            launch_template,
            endpoint: required("API_ENDPOINT")?,
            instance_types,
            subnets,
            log_group: var("WORKER_LOG_GROUP").filter(|v| !v.trim().is_empty()),
            spot,
            root_volume_gib,
        })
    }
}

/// Launches workers on EC2.
#[derive(Clone)]
pub struct Ec2Launcher {
    client: Client,
    config: Ec2LauncherConfig,
}

/// The user data a worker reads through IMDSv2: no secrets, just where to ask.
pub fn user_data(job: &Job, endpoint: &str, log_group: Option<&str>) -> String {
    let mut launch = serde_json::json!({
        "job_id": job.id,
        "attempt": job.attempt,
        "endpoint": endpoint,
        "max_duration": job.options.max_duration_seconds(),
    });
    if let Some(group) = log_group {
        launch["log_group"] = serde_json::json!(group);
    }
    serde_json::json!({ "barge": launch }).to_string()
}

/// Jobs that may run on spot capacity: an interruption costs a new attempt that resumes
/// (init keeps its progress marks; validate and verify start over cheaply). Streaming
/// replication (sync) stays on-demand.
fn resumable(command: Command) -> bool {
    !matches!(command, Command::Sync)
}

/// Spot errors that mean "no spot here now": fall back to on-demand.
const SPOT_CODES: &[&str] = &["SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded", "InsufficientInstanceCapacity"];

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

    fn template(&self) -> LaunchTemplateSpecification {
        let spec = LaunchTemplateSpecification::builder().version("$Default");
        if self.config.launch_template.starts_with("lt-") {
            spec.launch_template_id(&self.config.launch_template).build()
        } else {
            spec.launch_template_name(&self.config.launch_template).build()
        }
    }

    /// One RunInstances request: `kind` on spot or on-demand, in `subnet` when given.
    fn run_instances(
        &self,
        job: &Job,
        kind: &str,
        spot: bool,
        subnet: Option<&str>,
        token: &str,
        user_data: &str,
    ) -> RunInstancesFluentBuilder {
        let mut request = self
            .client
            .run_instances()
            .launch_template(self.template())
            .instance_type(InstanceType::from(kind))
            .set_subnet_id(subnet.map(str::to_string))
            .min_count(1)
            .max_count(1)
            .client_token(token)
            .user_data(user_data)
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .http_endpoint(InstanceMetadataEndpointState::Enabled)
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            .tag_specifications(Self::tags(job, ResourceType::Instance))
            .tag_specifications(Self::tags(job, ResourceType::Volume));
        if spot {
            request = request.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(
                        SpotMarketOptions::builder()
                            .spot_instance_type(SpotInstanceType::OneTime)
                            .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                            .build(),
                    )
                    .build(),
            );
        }
        if let Some(gib) = self.config.root_volume_gib {
            request = request.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(gib)
                            .volume_type(VolumeType::Gp3)
                            .encrypted(true)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            );
        }
        request
    }

    /// RunInstances with `base` as its `ClientToken`. EC2 answers a token it has seen (for
    /// 24 hours) with the instance it started then, even terminated: when the reaper took
    /// that instance for an orphan, the launch is asked again under a new token
    /// (`base-r1`, `base-r2`), so the job gets a live worker instead of a dead one.
    async fn run_once(
        &self,
        job: &Job,
        kind: &str,
        spot: bool,
        subnet: Option<&str>,
        base: &str,
        user_data: &str,
    ) -> Result<Option<String>, aws_sdk_ec2::error::SdkError<aws_sdk_ec2::operation::run_instances::RunInstancesError>>
    {
        let mut last = None;
        for retry in 0..3 {
            let token = if retry == 0 { base.to_string() } else { format!("{base}-r{retry}") };
            let out = self.run_instances(job, kind, spot, subnet, &token, user_data).send().await?;
            let Some(instance) = out.instances().first() else { return Ok(None) };
            let Some(id) = instance.instance_id() else { return Ok(None) };
            let gone = instance.state().and_then(|s| s.name()).is_some_and(|state| {
                matches!(
                    state,
                    InstanceStateName::ShuttingDown
                        | InstanceStateName::Terminated
                        | InstanceStateName::Stopping
                        | InstanceStateName::Stopped
                )
            });
            if !gone {
                return Ok(Some(id.to_string()));
            }
            last = Some(id.to_string());
        }
        // Three tokens, three dead instances: hand back the last; the reaper's launch
        // timeout gives the job another attempt (with new tokens).
        Ok(last)
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
        // Named by the user, else chosen from the first worker's plan, else the stage's list.
        let chosen = job.sizing.as_ref().and_then(|s| s.instance_type.as_ref());
        let types: Vec<String> = match job.options.instance_type.as_ref().or(chosen) {
            Some(kind) => vec![kind.clone()],
            None => self.config.instance_types.clone(),
        };
        if types.is_empty() {
            return Err(LaunchError { message: "no instance type is configured".into(), retryable: false });
        }
        // `None`: the launch template's network; its token has no subnet index, as before
        // subnets could be configured.
        let subnets: Vec<Option<(usize, &str)>> = if self.config.subnets.is_empty() {
            vec![None]
        } else {
            self.config.subnets.iter().map(String::as_str).enumerate().map(Some).collect()
        };
        let user_data = STANDARD.encode(user_data(job, &self.config.endpoint, self.config.log_group.as_deref()));
        let markets: &[bool] = if self.config.spot && resumable(job.command) { &[true, false] } else { &[false] };
        let mut out_of_capacity = Vec::new();
        for &spot in markets {
            for (i, kind) in types.iter().enumerate() {
                for &subnet in &subnets {
                    let market = if spot { "s" } else { "o" };
                    let mut base = format!("{}-{}-{market}{i}", job.id, job.attempt);
                    if let Some((j, _)) = subnet {
                        base.push_str(&format!("-{j}"));
                    }
                    match self.run_once(job, kind, spot, subnet.map(|(_, id)| id), &base, &user_data).await {
                        Ok(Some(id)) => return Ok(id),
                        Ok(None) => {
                            return Err(LaunchError {
                                message: "RunInstances returned no instance".into(),
                                retryable: true,
                            });
                        }
                        Err(e) => {
                            let (code, message) = described(&e);
                            let capacity = CAPACITY_CODES.contains(&code.as_str())
                                || (spot && SPOT_CODES.contains(&code.as_str()));
                            if capacity {
                                let spot = if spot { " spot" } else { "" };
                                let place = subnet.map(|(_, id)| format!(" in {id}")).unwrap_or_default();
                                out_of_capacity.push(format!("{kind}{spot}{place} ({code})"));
                                continue;
                            }
                            let retryable = TRANSIENT_CODES.contains(&code.as_str()) || code == "Unreachable";
                            return Err(LaunchError {
                                message: format!("EC2 RunInstances {code}: {message}"),
                                retryable,
                            });
                        }
                    }
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
        let template = &self.config.launch_template;
        if !template.starts_with("lt-") {
            return Err(LaunchError {
                message: format!(
                    "the launch template {template:?} is named, not given by id (lt-…): its instances cannot be told from other stages'"
                ),
                retryable: false,
            });
        }
        let mut instances = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .describe_instances()
                .filters(Filter::builder().name(format!("tag:{}", MANAGED_BY.0)).values(MANAGED_BY.1).build())
                .filters(Filter::builder().name(format!("tag:{LAUNCH_TEMPLATE_TAG}")).values(template).build())
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
                let launched_at =
                    instance.launch_time().and_then(|at| at.to_millis().ok()).map(barge_jobs::Timestamp::from_millis);
                instances.push(Instance { id: id.to_string(), job, launched_at });
            }
            token = page.next_token;
            if token.is_none() {
                return Ok(instances);
            }
        }
    }
}
