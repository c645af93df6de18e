//! The DynamoDB store against the conformance suite on DynamoDB Local; the KMS sealer, the
//! EC2 launcher and the CloudWatch Logs sink against moto, both started by the harness
//! (scripts/aws-local); and the launcher's answers to what moto cannot simulate (no capacity,
//! a broken launch template) against a stand-in for the EC2 API in the test itself.

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
        types::{
            HttpTokensState, Instance as Ec2Instance, InstanceAttributeName, LaunchTemplateHttpTokensState,
            LaunchTemplateInstanceMetadataOptionsRequest, RequestLaunchTemplateData,
        },
    };
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
        let template = client
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
        let id = template.launch_template().and_then(|t| t.launch_template_id()).unwrap().to_string();
        let fleet = Ec2LauncherConfig {
            launch_template: id,
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
    async fn a_job_sized_from_its_plan_launches_on_the_chosen_type_unless_the_user_named_one() {
        let (client, launcher) = moto("eu-west-1").await;
        let launched_type = |id: String| {
            let client = client.clone();
            async move {
                let described = client.describe_instances().instance_ids(&id).send().await.unwrap();
                described.reservations()[0].instances()[0].instance_type().map(|t| t.as_str().to_string())
            }
        };
        // GIVEN a job its first worker's plan sized to m7i.2xlarge, relaunched as attempt 2
        let mut job = conformance::job("alice", None, Timestamp::now());
        job.attempt = 2;
        job.sizing = Some(barge_jobs::sizing::InstanceSizing {
            instance_type: Some("m7i.2xlarge".into()),
            reason: "relaunched on m7i.2xlarge".into(),
        });
        // THEN its worker runs on that type, not the stage's first
        assert_eq!(launched_type(launcher.launch(&job).await.unwrap()).await.as_deref(), Some("m7i.2xlarge"));
        // AND a kept worker's decision changes nothing
        let mut kept = conformance::job("alice", None, Timestamp::now());
        kept.sizing = Some(barge_jobs::sizing::InstanceSizing { instance_type: None, reason: "enough".into() });
        assert_eq!(launched_type(launcher.launch(&kept).await.unwrap()).await.as_deref(), Some("m7i.large"));
        // AND a type the user named wins
        let mut named = job.clone();
        named.id = barge_jobs::JobId::random();
        named.options.instance_type = Some("m6i.large".into());
        assert_eq!(launched_type(launcher.launch(&named).await.unwrap()).await.as_deref(), Some("m6i.large"));
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
        // AND the instance of a job that finished two minutes ago but never powered off
        let done = conformance::job("alice", None, long_ago);
        store.create(&done, 10).await.unwrap();
        let done_instance = launcher.launch(&done).await.unwrap();
        let ended = Timestamp::now().plus_seconds(-120);
        let finished = done
            .apply(&Event::Launched { instance_id: done_instance.clone() }, deadlines, ended)
            .and_then(|j| j.apply(&Event::Claimed { instance_id: done_instance.clone() }, deadlines, ended))
            .and_then(|j| j.apply(&Event::Finished(Outcome::Succeeded), deadlines, ended))
            .unwrap();
        store.replace(&done, &finished).await.unwrap();
        // WHEN the reaper sweeps
        let report = sweep(&store, &launcher, &Policy { launch_grace: 0, ..Policy::default() }).await.unwrap();
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

    #[tokio::test]
    async fn one_stages_reaper_never_sees_nor_terminates_another_stages_workers() {
        // GIVEN two stages in one account and region, each with its launch template
        let (sdk, _, dev) = moto_fleet("ca-central-1").await;
        let (_, _, prod) = moto_fleet("ca-central-1").await;
        let (dev, prod) = (Ec2Launcher::new(&sdk, dev), Ec2Launcher::new(&sdk, prod));
        // AND a prod worker whose job dev's table has never heard of
        let job = conformance::job("alice", None, Timestamp::now());
        let prod_worker = prod.launch(&job).await.unwrap();
        let dev_worker = dev.launch(&conformance::job("bob", None, Timestamp::now())).await.unwrap();
        // WHEN dev's reaper sweeps with its own (empty) table (no grace for young instances:
        // both were launched a moment ago)
        let policy = Policy { launch_grace: 0, ..Policy::default() };
        let report = sweep(&MemoryStore::new(), &dev, &policy).await.unwrap();
        // THEN it terminated its own orphan only; prod's worker is not even listed by dev
        assert_eq!(report.terminated, vec![dev_worker], "{report:?}");
        assert!(dev.instances().await.unwrap().is_empty());
        let live: Vec<String> = prod.instances().await.unwrap().into_iter().map(|i| i.id).collect();
        assert_eq!(live, vec![prod_worker]);
        // AND a launcher configured by template name refuses to list rather than list all
        let named = Ec2Launcher::new(&sdk, Ec2LauncherConfig { launch_template: "barge-worker".into(), ..fleet() });
        assert!(named.instances().await.unwrap_err().message.contains("lt-"));
    }

    /// What the EC2 stand-in answers a request with.
    #[derive(Clone, Copy)]
    enum Reply {
        /// RunInstances started this instance.
        Instance(&'static str),
        /// RunInstances answered with this instance, terminated (a token EC2 has seen).
        Terminated(&'static str),
        /// An EC2 error: the HTTP status EC2 sends with it, and its code.
        Error(u16, &'static str),
    }

    /// The form parameters of one request the stand-in received.
    type Params = std::collections::HashMap<String, String>;

    /// A stand-in for the EC2 API on loopback, for answers moto cannot give (no capacity, a
    /// broken launch template). The launcher reaches it through the real SDK client, so the
    /// requests are EC2's wire format. It answers the n-th request (from 0) with `reply(n)`
    /// and records every request's parameters.
    struct StandIn {
        sdk: aws_config::SdkConfig,
        requests: std::sync::Arc<std::sync::Mutex<Vec<Params>>>,
    }

    impl StandIn {
        async fn start(reply: impl Fn(usize) -> Reply + Send + Sync + 'static) -> StandIn {
            use axum::{http::StatusCode, routing::post};
            let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Params>::new()));
            let seen = requests.clone();
            let reply = std::sync::Arc::new(reply);
            let answer = move |body: String| {
                let params: Params = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                let n = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(params);
                    seen.len() - 1
                };
                let (status, xml) = match reply(n) {
                    Reply::Instance(id) => (
                        200,
                        format!(
                            "<RunInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                             <requestId>r-{n}</requestId><reservationId>r-0{n}</reservationId>\
                             <instancesSet><item><instanceId>{id}</instanceId></item></instancesSet>\
                             </RunInstancesResponse>"
                        ),
                    ),
                    Reply::Terminated(id) => (
                        200,
                        format!(
                            "<RunInstancesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                             <requestId>r-{n}</requestId><reservationId>r-0{n}</reservationId>\
                             <instancesSet><item><instanceId>{id}</instanceId>\
                             <instanceState><code>48</code><name>terminated</name></instanceState></item></instancesSet>\
                             </RunInstancesResponse>"
                        ),
                    ),
                    Reply::Error(status, code) => (
                        status,
                        format!(
                            "<Response><Errors><Error><Code>{code}</Code><Message>try later</Message></Error>\
                             </Errors><RequestID>r-{n}</RequestID></Response>"
                        ),
                    ),
                };
                std::future::ready((StatusCode::from_u16(status).unwrap(), xml))
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, axum::Router::new().route("/", post(answer))).await });
            // The SDK's own retries off: every recorded request is one the launcher made.
            let sdk = local_config_in(&url, "us-east-1")
                .await
                .into_builder()
                .retry_config(aws_config::retry::RetryConfig::disabled())
                .build();
            StandIn { sdk, requests }
        }

        fn launcher(&self, config: Ec2LauncherConfig) -> Ec2Launcher {
            Ec2Launcher::new(&self.sdk, config)
        }

        fn requests(&self) -> Vec<Params> {
            self.requests.lock().unwrap().clone()
        }
    }

    /// A fleet of three instance types in the launch template's network.
    fn fleet() -> Ec2LauncherConfig {
        Ec2LauncherConfig {
            launch_template: "lt-0123456789abcdef0".into(),
            endpoint: "https://api.example.com".into(),
            instance_types: vec!["m7i.large".into(), "m6i.large".into(), "r7i.large".into()],
            subnets: vec![],
            log_group: None,
            spot: false,
            root_volume_gib: None,
        }
    }

    fn param<'a>(request: &'a Params, name: &str) -> Option<&'a str> {
        request.get(name).map(String::as_str)
    }

    /// EC2 sends InsufficientInstanceCapacity as a server error.
    const NO_CAPACITY: Reply = Reply::Error(500, "InsufficientInstanceCapacity");

    #[tokio::test]
    async fn run_instances_carries_an_idempotency_token_and_falls_back_on_capacity() {
        // GIVEN EC2 out of capacity for the first type
        let ec2 = StandIn::start(|n| if n == 0 { NO_CAPACITY } else { Reply::Instance("i-0feedfeedfeedfeed") }).await;
        let job = conformance::job("alice", None, Timestamp::now());
        // WHEN a worker is launched
        assert_eq!(ec2.launcher(fleet()).launch(&job).await.unwrap(), "i-0feedfeedfeedfeed");
        // THEN the next type was tried with its own token
        let requests = ec2.requests();
        assert_eq!(requests.len(), 2, "{requests:?}");
        let (refused, accepted) = (&requests[0], &requests[1]);
        assert_eq!(param(refused, "Action"), Some("RunInstances"));
        assert_eq!(param(refused, "ClientToken"), Some(format!("{}-1-o0", job.id).as_str()));
        assert_eq!(param(refused, "InstanceType"), Some("m7i.large"));
        assert_eq!(param(refused, "LaunchTemplate.LaunchTemplateId"), Some("lt-0123456789abcdef0"));
        assert_eq!(param(refused, "MetadataOptions.HttpTokens"), Some("required"));
        let tagged: Vec<&str> =
            (1..=2).filter_map(|i| param(refused, &format!("TagSpecification.{i}.ResourceType"))).collect();
        assert_eq!(tagged, ["instance", "volume"], "{refused:?}");
        assert_eq!(param(accepted, "ClientToken"), Some(format!("{}-1-o1", job.id).as_str()));
        assert_eq!(param(accepted, "InstanceType"), Some("m6i.large"));
    }

    #[tokio::test]
    async fn out_of_capacity_in_one_subnet_tries_the_others_before_the_next_type() {
        // GIVEN two subnets (two AZs), and no m7i.large capacity in either
        let ec2 = StandIn::start(|n| if n < 2 { NO_CAPACITY } else { Reply::Instance("i-0subnetsubnetsub") }).await;
        let job = conformance::job("alice", None, Timestamp::now());
        let launcher = ec2.launcher(Ec2LauncherConfig {
            instance_types: vec!["m7i.large".into(), "m6i.large".into()],
            subnets: vec!["subnet-0aaaaaaaaaaaaaaaa".into(), "subnet-0bbbbbbbbbbbbbbbb".into()],
            ..fleet()
        });
        // WHEN a worker is launched
        let id = launcher.launch(&job).await.unwrap();
        // THEN the first type was tried in each subnet, each with its own token, before the next type
        assert_eq!(id, "i-0subnetsubnetsub");
        let tried: Vec<(String, String, String)> = ec2
            .requests()
            .iter()
            .map(|r| {
                let p = |name| param(r, name).unwrap_or_default().to_string();
                (p("ClientToken"), p("InstanceType"), p("SubnetId"))
            })
            .collect();
        let expected =
            |token: &str, kind: &str, subnet: &str| (format!("{}-1-{token}", job.id), kind.into(), subnet.into());
        assert_eq!(
            tried,
            [
                expected("o0-0", "m7i.large", "subnet-0aaaaaaaaaaaaaaaa"),
                expected("o0-1", "m7i.large", "subnet-0bbbbbbbbbbbbbbbb"),
                expected("o1-0", "m6i.large", "subnet-0aaaaaaaaaaaaaaaa"),
            ]
        );
    }

    #[tokio::test]
    async fn launch_failures_say_whether_a_retry_may_help() {
        let job = conformance::job("alice", None, Timestamp::now());
        // No capacity for any type: retryable, naming every type tried
        let ec2 = StandIn::start(|_| NO_CAPACITY).await;
        let e = ec2.launcher(fleet()).launch(&job).await.unwrap_err();
        assert!(e.retryable, "{e}");
        assert!(e.message.contains("m7i.large") && e.message.contains("r7i.large"), "{e}");
        assert_eq!(ec2.requests().len(), 3);
        // A broken template: no fallback, and no point retrying
        let ec2 = StandIn::start(|_| Reply::Error(400, "InvalidLaunchTemplateId.NotFound")).await;
        let e = ec2.launcher(fleet()).launch(&job).await.unwrap_err();
        assert!(!e.retryable && e.message.contains("InvalidLaunchTemplateId.NotFound"), "{e}");
        assert_eq!(ec2.requests().len(), 1, "no fallback for a broken template");
    }

    #[tokio::test]
    async fn spot_first_for_resumable_jobs_then_on_demand_with_a_sized_encrypted_root_volume() {
        let ec2 = StandIn::start(|n| if n == 0 { NO_CAPACITY } else { Reply::Instance("i-0abcabcabcabcabca") }).await;
        let job = conformance::job("alice", None, Timestamp::now());
        let launcher = ec2.launcher(Ec2LauncherConfig {
            launch_template: "barge-worker".into(),
            instance_types: vec!["m7i.large".into()],
            spot: true,
            root_volume_gib: Some(20),
            ..fleet()
        });
        assert_eq!(launcher.launch(&job).await.unwrap(), "i-0abcabcabcabcabca");
        let requests = ec2.requests();
        assert_eq!(requests.len(), 2, "{requests:?}");
        let (spot, on_demand) = (&requests[0], &requests[1]);
        assert_eq!(param(spot, "ClientToken"), Some(format!("{}-1-s0", job.id).as_str()));
        assert_eq!(param(spot, "InstanceMarketOptions.MarketType"), Some("spot"));
        assert_eq!(param(spot, "LaunchTemplate.LaunchTemplateName"), Some("barge-worker"));
        assert_eq!(param(on_demand, "ClientToken"), Some(format!("{}-1-o0", job.id).as_str()));
        assert_eq!(param(on_demand, "InstanceMarketOptions.MarketType"), None);
        for request in [spot, on_demand] {
            let volume = |field: &str| param(request, &format!("BlockDeviceMapping.1.{field}"));
            assert_eq!(volume("DeviceName"), Some("/dev/xvda"), "{request:?}");
            assert_eq!(volume("Ebs.VolumeSize"), Some("20"));
            assert_eq!(volume("Ebs.Encrypted"), Some("true"));
            assert_eq!(volume("Ebs.DeleteOnTermination"), Some("true"));
            assert_eq!(volume("Ebs.VolumeType"), Some("gp3"));
        }
    }

    #[tokio::test]
    async fn a_token_ec2_answers_with_a_terminated_instance_is_replaced() {
        // GIVEN EC2 answering the job's first token with the instance the reaper terminated
        let ec2 = StandIn::start(|n| {
            if n == 0 { Reply::Terminated("i-0dead0dead0dead0de") } else { Reply::Instance("i-0a1a1a1a1a1a1a1a1") }
        })
        .await;
        let job = conformance::job("alice", None, Timestamp::now());
        // WHEN the job is launched again
        let launched = ec2.launcher(fleet()).launch(&job).await.unwrap();
        // THEN a new token starts a live worker
        assert_eq!(launched, "i-0a1a1a1a1a1a1a1a1");
        let tokens: Vec<String> =
            ec2.requests().iter().map(|r| param(r, "ClientToken").unwrap_or_default().to_string()).collect();
        assert_eq!(tokens, [format!("{}-1-o0", job.id), format!("{}-1-o0-r1", job.id)]);
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
            ("WORKER_LAUNCH_TEMPLATE", "barge-worker"),
            ("API_ENDPOINT", "https://x"),
            ("WORKER_INSTANCE_TYPES", "m7i.large"),
        ]))
        .unwrap_err();
        assert!(e.contains("id (lt-…)"), "{e}");
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
