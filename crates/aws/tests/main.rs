//! The DynamoDB store against the conformance suite on DynamoDB Local, and the KMS sealer
//! against moto; both started by the harness (scripts/aws-local).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use barge_aws::{DynamoJobStore, KmsSealer, local_config};
use barge_jobs::{Deadlines, Job, JobId, JobStore, Sealer, Timestamp};
use barge_jobs_testkit::conformance;

async fn fresh_store() -> DynamoJobStore {
    let config = local_config(&barge_testkit::aws_local("dynamodb")).await;
    let store = DynamoJobStore::new(&config, format!("jobs_{}", JobId::random()));
    store.create_table().await.unwrap();
    store
}

barge_jobs_testkit::store_conformance!(crate::fresh_store());

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

mod ec2 {
    use aws_sdk_ec2::{
        Client,
        operation::run_instances::{RunInstancesError, RunInstancesOutput},
        types::{
            HttpTokensState, Instance as Ec2Instance, InstanceAttributeName, LaunchTemplateHttpTokensState,
            LaunchTemplateInstanceMetadataOptionsRequest, RequestLaunchTemplateData, ResourceType,
        },
    };
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use barge_aws::{Ec2Launcher, Ec2LauncherConfig, local_config_in};
    use barge_jobs::{
        Event, JobStore, Launcher, Outcome, Timestamp,
        reaper::{Policy, sweep},
    };
    use barge_jobs_testkit::{conformance, memory::MemoryStore};
    use base64::{Engine, engine::general_purpose::STANDARD};

    /// A moto region with a launch template like the CDK app's (IMDSv2 required).
    async fn moto(region: &'static str) -> (Client, Ec2Launcher) {
        let (sdk, client, config) = moto_fleet(region).await;
        (client, Ec2Launcher::new(&sdk, config))
    }

    /// [`moto`]'s pieces, for a launcher configured otherwise.
    async fn moto_fleet(region: &'static str) -> (aws_config::SdkConfig, Client, Ec2LauncherConfig) {
        let config = local_config_in(&barge_testkit::aws_local("moto"), region).await;
        let client = Client::new(&config);
        let images = client.describe_images().send().await.unwrap();
        let image = images.images()[0].image_id().unwrap().to_string();
        let name = format!("barge-worker-{}", barge_jobs::JobId::random());
        client
            .create_launch_template()
            .launch_template_name(&name)
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id(image)
                    .metadata_options(
                        LaunchTemplateInstanceMetadataOptionsRequest::builder()
                            .http_tokens(LaunchTemplateHttpTokensState::Required)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let fleet = Ec2LauncherConfig {
            launch_template: name,
            endpoint: "https://api.example.com".into(),
            instance_types: vec!["m7i.large".into(), "m6i.large".into()],
            subnets: vec![],
            log_group: Some("/barge/workers".into()),
            spot: false,
            root_volume_gib: None,
        };
        (config, client, fleet)
    }

    #[tokio::test]
    async fn a_worker_instance_is_tagged_imdsv2_only_and_its_user_data_holds_no_secret() {
        let (client, launcher) = moto("eu-west-1").await;
        let job = conformance::job("alice", None, Timestamp::now());
        let id = launcher.launch(&job).await.unwrap();
        let described = client.describe_instances().instance_ids(&id).send().await.unwrap();
        let instance: &Ec2Instance = &described.reservations()[0].instances()[0];
        let tag = |key: &str| {
            instance.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value()).map(str::to_string)
        };
        assert_eq!(tag("JobId"), Some(job.id.to_string()));
        assert_eq!(tag("Attempt"), Some("1".into()));
        assert_eq!(tag("ManagedBy"), Some("barge".into()));
        assert_eq!(instance.instance_type().map(|t| t.as_str()), Some("m7i.large"));
        assert_eq!(instance.metadata_options().and_then(|m| m.http_tokens()), Some(&HttpTokensState::Required));
        let attribute = client
            .describe_instance_attribute()
            .instance_id(&id)
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await
            .unwrap();
        let encoded = attribute.user_data().and_then(|v| v.value()).unwrap();
        let user_data = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&user_data).unwrap();
        assert_eq!(parsed["barge"]["job_id"], serde_json::json!(job.id.to_string()));
        assert_eq!(parsed["barge"]["endpoint"], serde_json::json!("https://api.example.com"));
        assert_eq!(parsed["barge"]["log_group"], serde_json::json!("/barge/workers"));
        assert_eq!(parsed["barge"]["max_duration"], serde_json::json!(job.options.max_duration_seconds()));
        for secret in ["s3cr", "postgres://", "example.com:5432"] {
            assert!(!user_data.contains(secret), "{secret} in user data: {user_data}");
        }
        let listed = launcher.instances().await.unwrap();
        assert!(listed.iter().any(|i| i.id == id && i.job.as_ref() == Some(&job.id)), "{listed:?}");
        launcher.terminate(&id).await.unwrap();
        assert!(launcher.instances().await.unwrap().iter().all(|i| i.id != id));
        launcher.terminate(&id).await.unwrap();
        launcher.terminate("i-0123456789abcdef0").await.unwrap();
    }

    #[tokio::test]
    async fn a_worker_launches_into_the_configured_subnet() {
        // GIVEN a VPC with a subnet, and a fleet configured to launch there
        let (sdk, client, mut fleet) = moto_fleet("eu-central-1").await;
        let vpc = client.create_vpc().cidr_block("10.42.0.0/16").send().await.unwrap();
        let vpc = vpc.vpc().and_then(|v| v.vpc_id()).unwrap().to_string();
        let subnet = client.create_subnet().vpc_id(&vpc).cidr_block("10.42.1.0/24").send().await.unwrap();
        let subnet = subnet.subnet().and_then(|s| s.subnet_id()).unwrap().to_string();
        fleet.subnets = vec![subnet.clone()];
        let launcher = Ec2Launcher::new(&sdk, fleet);
        // WHEN a worker is launched
        let job = conformance::job("alice", None, Timestamp::now());
        let id = launcher.launch(&job).await.unwrap();
        // THEN it runs in that subnet, of that VPC
        let described = client.describe_instances().instance_ids(&id).send().await.unwrap();
        let instance: &Ec2Instance = &described.reservations()[0].instances()[0];
        assert_eq!(instance.subnet_id(), Some(subnet.as_str()));
        assert_eq!(instance.vpc_id(), Some(vpc.as_str()));
        launcher.terminate(&id).await.unwrap();
    }

    #[tokio::test]
    async fn the_reaper_terminates_orphans_and_stale_jobs_instances_on_ec2() {
        let (client, launcher) = moto("ap-southeast-2").await;
        let store = MemoryStore::new();
        // GIVEN a job whose worker went silent five minutes ago
        let long_ago = Timestamp::now().plus_seconds(-300);
        let stale = conformance::job("alice", None, long_ago);
        store.create(&stale, 10).await.unwrap();
        let old_instance = launcher.launch(&stale).await.unwrap();
        let deadlines = barge_jobs::Deadlines::default();
        let launched =
            stale.apply(&Event::Launched { instance_id: old_instance.clone() }, deadlines, long_ago).unwrap();
        let claimed =
            launched.apply(&Event::Claimed { instance_id: old_instance.clone() }, deadlines, long_ago).unwrap();
        store.replace(&stale, &launched).await.unwrap();
        store.replace(&launched, &claimed).await.unwrap();
        // AND the instance of a job that finished but never powered off
        let done = conformance::job("alice", None, Timestamp::now());
        store.create(&done, 10).await.unwrap();
        let done_instance = launcher.launch(&done).await.unwrap();
        let now = Timestamp::now();
        let finished = done
            .apply(&Event::Launched { instance_id: done_instance.clone() }, deadlines, now)
            .and_then(|j| j.apply(&Event::Claimed { instance_id: done_instance.clone() }, deadlines, now))
            .and_then(|j| j.apply(&Event::Finished(Outcome::Succeeded), deadlines, now))
            .unwrap();
        store.replace(&done, &finished).await.unwrap();
        // WHEN the reaper sweeps
        let report = sweep(&store, &launcher, &Policy::default()).await.unwrap();
        // THEN both old instances are terminated and the stale job runs on a new one
        assert!(report.terminated.contains(&old_instance), "{report:?}");
        assert!(report.terminated.contains(&done_instance), "{report:?}");
        let job = store.get(&stale.id).await.unwrap().unwrap();
        assert_eq!(job.attempt, 2);
        let new_instance = job.instance_id.clone().unwrap();
        let described = client.describe_instances().instance_ids(&new_instance).send().await.unwrap();
        let tags = described.reservations()[0].instances()[0].tags().to_vec();
        assert!(tags.iter().any(|t| t.key() == Some("Attempt") && t.value() == Some("2")));
        let live: Vec<String> = launcher.instances().await.unwrap().into_iter().map(|i| i.id).collect();
        assert_eq!(live, vec![new_instance]);
    }

    fn mocked(client: Client) -> Ec2Launcher {
        Ec2Launcher::with_client(
            client,
            Ec2LauncherConfig {
                launch_template: "lt-0123456789abcdef0".into(),
                endpoint: "https://api.example.com".into(),
                instance_types: vec!["m7i.large".into(), "m6i.large".into(), "r7i.large".into()],
                subnets: vec![],
                log_group: None,
                spot: false,
                root_volume_gib: None,
            },
        )
    }

    fn out_of(code: &'static str) -> RunInstancesError {
        RunInstancesError::generic(aws_sdk_ec2::error::ErrorMetadata::builder().code(code).message("try later").build())
    }

    #[tokio::test]
    async fn run_instances_carries_an_idempotency_token_and_falls_back_on_capacity() {
        // GIVEN EC2 out of capacity for the first type
        let job = conformance::job("alice", None, Timestamp::now());
        let first_token = format!("{}-1-o0", job.id);
        let second_token = format!("{}-1-o1", job.id);
        let refused = mock!(Client::run_instances)
            .match_requests(move |r| {
                r.client_token() == Some(first_token.as_str())
                    && r.instance_type().map(|t| t.as_str()) == Some("m7i.large")
                    && r.launch_template().and_then(|t| t.launch_template_id()) == Some("lt-0123456789abcdef0")
                    && r.metadata_options().and_then(|m| m.http_tokens()) == Some(&HttpTokensState::Required)
                    && r.tag_specifications().iter().any(|t| t.resource_type() == Some(&ResourceType::Volume))
            })
            .then_error(|| out_of("InsufficientInstanceCapacity"));
        let accepted = mock!(Client::run_instances)
            .match_requests(move |r| {
                r.client_token() == Some(second_token.as_str())
                    && r.instance_type().map(|t| t.as_str()) == Some("m6i.large")
            })
            .then_output(|| {
                RunInstancesOutput::builder()
                    .instances(Ec2Instance::builder().instance_id("i-0feedfeedfeedfeed").build())
                    .build()
            });
        let client = mock_client!(aws_sdk_ec2, RuleMode::Sequential, [&refused, &accepted]);
        // WHEN a worker is launched THEN the next type is tried with its own token
        assert_eq!(mocked(client).launch(&job).await.unwrap(), "i-0feedfeedfeedfeed");
        assert_eq!((refused.num_calls(), accepted.num_calls()), (1, 1));
    }

    #[tokio::test]
    async fn out_of_capacity_in_one_subnet_tries_the_others_before_the_next_type() {
        // GIVEN two subnets (two AZs), and no m7i.large capacity in either
        let job = conformance::job("alice", None, Timestamp::now());
        let attempt = |token: String, kind: &'static str, subnet: &'static str| {
            move |r: &aws_sdk_ec2::operation::run_instances::RunInstancesInput| {
                r.client_token() == Some(token.as_str())
                    && r.instance_type().map(|t| t.as_str()) == Some(kind)
                    && r.subnet_id() == Some(subnet)
            }
        };
        let first = mock!(Client::run_instances)
            .match_requests(attempt(format!("{}-1-o0-0", job.id), "m7i.large", "subnet-0aaaaaaaaaaaaaaaa"))
            .then_error(|| out_of("InsufficientInstanceCapacity"));
        let second = mock!(Client::run_instances)
            .match_requests(attempt(format!("{}-1-o0-1", job.id), "m7i.large", "subnet-0bbbbbbbbbbbbbbbb"))
            .then_error(|| out_of("InsufficientInstanceCapacity"));
        let third = mock!(Client::run_instances)
            .match_requests(attempt(format!("{}-1-o1-0", job.id), "m6i.large", "subnet-0aaaaaaaaaaaaaaaa"))
            .then_output(|| {
                RunInstancesOutput::builder()
                    .instances(Ec2Instance::builder().instance_id("i-0subnetsubnetsub").build())
                    .build()
            });
        let client = mock_client!(aws_sdk_ec2, RuleMode::Sequential, [&first, &second, &third]);
        let launcher = Ec2Launcher::with_client(
            client,
            Ec2LauncherConfig {
                launch_template: "lt-0123456789abcdef0".into(),
                endpoint: "https://api.example.com".into(),
                instance_types: vec!["m7i.large".into(), "m6i.large".into()],
                subnets: vec!["subnet-0aaaaaaaaaaaaaaaa".into(), "subnet-0bbbbbbbbbbbbbbbb".into()],
                log_group: None,
                spot: false,
                root_volume_gib: None,
            },
        );
        // WHEN a worker is launched
        let id = launcher.launch(&job).await.unwrap();
        // THEN the first type was tried in each subnet, each with its own token, before the next type
        assert_eq!(id, "i-0subnetsubnetsub");
        assert_eq!((first.num_calls(), second.num_calls(), third.num_calls()), (1, 1, 1));
    }

    #[tokio::test]
    async fn launch_failures_say_whether_a_retry_may_help() {
        let job = conformance::job("alice", None, Timestamp::now());
        let none_left = mock!(Client::run_instances).then_error(|| out_of("InsufficientInstanceCapacity"));
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&none_left]);
        let e = mocked(client).launch(&job).await.unwrap_err();
        assert!(e.retryable, "{e}");
        assert!(e.message.contains("m7i.large") && e.message.contains("r7i.large"), "{e}");
        assert_eq!(none_left.num_calls(), 3);
        let broken = mock!(Client::run_instances).then_error(|| out_of("InvalidLaunchTemplateId.NotFound"));
        let client = mock_client!(aws_sdk_ec2, RuleMode::MatchAny, [&broken]);
        let e = mocked(client).launch(&job).await.unwrap_err();
        assert!(!e.retryable && e.message.contains("InvalidLaunchTemplateId.NotFound"), "{e}");
        assert_eq!(broken.num_calls(), 1, "no fallback for a broken template");
    }

    #[tokio::test]
    async fn spot_first_for_resumable_jobs_then_on_demand_with_a_sized_encrypted_root_volume() {
        let job = conformance::job("alice", None, Timestamp::now());
        let spot_token = format!("{}-1-s0", job.id);
        let on_demand_token = format!("{}-1-o0", job.id);
        let volume = |r: &aws_sdk_ec2::operation::run_instances::RunInstancesInput| {
            r.block_device_mappings().iter().any(|m| {
                m.device_name() == Some("/dev/xvda")
                    && m.ebs().is_some_and(|e| {
                        e.volume_size() == Some(20)
                            && e.encrypted() == Some(true)
                            && e.delete_on_termination() == Some(true)
                            && e.volume_type() == Some(&aws_sdk_ec2::types::VolumeType::Gp3)
                    })
            })
        };
        let no_spot = mock!(Client::run_instances)
            .match_requests(move |r| {
                r.client_token() == Some(spot_token.as_str())
                    && r.instance_market_options().and_then(|m| m.market_type())
                        == Some(&aws_sdk_ec2::types::MarketType::Spot)
                    && volume(r)
            })
            .then_error(|| out_of("InsufficientInstanceCapacity"));
        let on_demand = mock!(Client::run_instances)
            .match_requests(move |r| {
                r.client_token() == Some(on_demand_token.as_str()) && r.instance_market_options().is_none() && volume(r)
            })
            .then_output(|| {
                RunInstancesOutput::builder()
                    .instances(Ec2Instance::builder().instance_id("i-0abcabcabcabcabca").build())
                    .build()
            });
        let client = mock_client!(aws_sdk_ec2, RuleMode::Sequential, [&no_spot, &on_demand]);
        let launcher = Ec2Launcher::with_client(
            client,
            Ec2LauncherConfig {
                launch_template: "barge-worker".into(),
                endpoint: "https://api.example.com".into(),
                instance_types: vec!["m7i.large".into()],
                subnets: vec![],
                log_group: None,
                spot: true,
                root_volume_gib: Some(20),
            },
        );
        assert_eq!(launcher.launch(&job).await.unwrap(), "i-0abcabcabcabcabca");
        assert_eq!((no_spot.num_calls(), on_demand.num_calls()), (1, 1));
    }

    #[test]
    fn the_fleet_config_comes_from_the_environment_with_clear_errors() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        };
        let config = Ec2LauncherConfig::from_vars(vars(&[
            ("WORKER_LAUNCH_TEMPLATE", "lt-1"),
            ("API_ENDPOINT", "https://x.execute-api.eu-west-1.amazonaws.com"),
            ("WORKER_INSTANCE_TYPES", "m7i.large, m6i.large"),
            ("WORKER_SPOT", "true"),
            ("WORKER_ROOT_VOLUME_GIB", "30"),
            ("WORKER_LOG_GROUP", "/barge/workers"),
        ]))
        .unwrap();
        assert_eq!(config.instance_types, vec!["m7i.large", "m6i.large"]);
        assert!(config.spot);
        assert_eq!((config.root_volume_gib, config.log_group.as_deref()), (Some(30), Some("/barge/workers")));
        let e = Ec2LauncherConfig::from_vars(vars(&[("WORKER_INSTANCE_TYPES", "m7i.large")])).unwrap_err();
        assert!(e.contains("WORKER_LAUNCH_TEMPLATE"), "{e}");
        let e = Ec2LauncherConfig::from_vars(vars(&[
            ("WORKER_LAUNCH_TEMPLATE", "lt-1"),
            ("API_ENDPOINT", "https://x"),
            ("WORKER_INSTANCE_TYPES", "m7i.large"),
            ("WORKER_SPOT", "yes"),
        ]))
        .unwrap_err();
        assert!(e.contains("WORKER_SPOT"), "{e}");
    }

    #[test]
    fn worker_subnets_come_from_the_environment() {
        let vars = |subnets: Option<&'static str>| {
            move |name: &str| match name {
                "WORKER_LAUNCH_TEMPLATE" => Some("lt-1".to_string()),
                "API_ENDPOINT" => Some("https://x".to_string()),
                "WORKER_INSTANCE_TYPES" => Some("m7i.large".to_string()),
                "WORKER_SUBNETS" => subnets.map(str::to_string),
                _ => None,
            }
        };
        let config = Ec2LauncherConfig::from_vars(vars(Some(" subnet-0aaa, subnet-0bbb ,"))).unwrap();
        assert_eq!(config.subnets, vec!["subnet-0aaa", "subnet-0bbb"]);
        for none in [None, Some(""), Some(" , ")] {
            assert_eq!(Ec2LauncherConfig::from_vars(vars(none)).unwrap().subnets, Vec::<String>::new(), "{none:?}");
        }
        let e = Ec2LauncherConfig::from_vars(vars(Some("subnet-0aaa,sg-0bbb"))).unwrap_err();
        assert!(e.contains("WORKER_SUBNETS") && e.contains("sg-0bbb"), "{e}");
    }
}

#[tokio::test]
async fn job_logs_read_back_attempt_after_attempt_from_cloudwatch() {
    use barge_aws::{CloudWatchLogSink, CloudWatchLogs};
    use barge_jobs::{LogError, LogLine, LogSink, LogSource, Timestamp};
    let config = barge_aws::local_config_in(&barge_testkit::aws_local("moto"), "eu-west-1").await;
    let client = aws_sdk_cloudwatchlogs::Client::new(&config);
    let group = format!("/barge/workers-{}", barge_testkit::unique("read"));
    client.create_log_group().log_group_name(&group).send().await.unwrap();
    let job = barge_jobs::JobId::random();
    let reader = CloudWatchLogs::new(client.clone(), &group);
    // Nothing written yet: an empty page, and a cursor to follow from
    let page = reader.read(&job, 1, None, 100).await.unwrap();
    assert!(page.lines.is_empty());
    // GIVEN attempt 1 wrote two lines and attempt 2 one
    let line = |text: &str| LogLine { at: Timestamp::now(), text: text.into() };
    let mut first = CloudWatchLogSink::new(client.clone(), &group, &job, 1);
    first.ship(&[line("one"), line("two")]).await.unwrap();
    let mut second = CloudWatchLogSink::new(client.clone(), &group, &job, 2);
    second.ship(&[line("three")]).await.unwrap();
    // WHEN they are read page after page
    let mut texts = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = reader.read(&job, 2, after.as_deref(), 1).await.unwrap();
        texts.extend(page.lines.iter().map(|l| l.text.clone()));
        after = Some(page.next);
    }
    // THEN every line came once, in order, across the attempts
    assert_eq!(texts, ["one", "two", "three"]);
    // AND a follower sees a line written later
    second.ship(&[line("four")]).await.unwrap();
    let page = reader.read(&job, 2, after.as_deref(), 100).await.unwrap();
    assert_eq!(page.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["four"]);
    // AND cursors it did not make are refused
    for bad in ["", "x:y", "0:", "9:"] {
        assert!(matches!(reader.read(&job, 2, Some(bad), 10).await, Err(LogError::BadCursor)), "{bad:?}");
    }
}
