//! `barge-worker`: runs one job. On EC2 (`barge-worker ec2`, started by systemd at boot when
//! `barge-worker launched` finds a job in user data) it learns its job from user data and
//! signs its calls with the instance role; under `barge serve` (`barge-worker job`) it gets a
//! one-job token on standard input; `barge-worker run --spec job.json` runs a spec with no
//! control plane at all.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use barge_client::{ApiClient, Auth, Backoff, SigV4, retry};
use barge_jobs::{JobId, JobSpec, Outcome, Reach, Timestamp, exit};
use barge_worker::{
    execute::{self, Attempt, Ending, Timing},
    imds::NotLaunched,
    logs::{Logs, Redactor},
    report::{ApiReporter, Reporter, StdoutReporter},
};
use clap::{Parser, Subcommand};
use tokio::time::Instant;

const EXIT_CODES: &str = "Exit codes: 0 succeeded, 1 failed, 2 usage, 3 cancelled, 4 timed out, 5 the API could not be reached or the job could not be claimed.";

/// barge's worker: claims a job, runs the engine, reports progress and the outcome.
#[derive(Parser)]
#[command(name = "barge-worker", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// On an EC2 instance (systemd runs this at boot): read the job id, attempt and endpoint
    /// from user data (IMDSv2), sign calls with the instance role, log to CloudWatch Logs.
    Ec2 {
        /// The instance metadata endpoint (for tests; the SDK's default otherwise).
        #[arg(long, env = "BARGE_IMDS_ENDPOINT", hide = true)]
        imds_endpoint: Option<String>,
        /// How far the job's URLs may reach: `remote` (no metadata or loopback addresses, no
        /// local files) or `anywhere` (for tests against loopback clusters).
        #[arg(long, env = "BARGE_WORKER_REACH", hide = true, default_value = "remote",
              value_parser = ["remote", "anywhere"])]
        reach: String,
    },
    /// On an EC2 instance, before `limits` and `ec2` (the boot units' condition): exit 0 when
    /// user data (IMDSv2) holds a barge job, 1 with the reason when it holds none or cannot be
    /// read, so an instance started from the image without a job does not run the worker
    /// (whose unit powers the machine off).
    Launched {
        /// The instance metadata endpoint (for tests; the SDK's default otherwise).
        #[arg(long, env = "BARGE_IMDS_ENDPOINT", hide = true)]
        imds_endpoint: Option<String>,
    },
    /// On an EC2 instance, before `ec2` (a boot unit runs this): write the systemd drop-in
    /// that limits the worker unit's runtime to the job's max_duration plus a grace period.
    Limits {
        /// Where the worker unit's drop-ins live.
        #[arg(long, default_value = "/run/systemd/system/barge-worker.service.d")]
        dropin_dir: PathBuf,
        /// The instance metadata endpoint (for tests; the SDK's default otherwise).
        #[arg(long, env = "BARGE_IMDS_ENDPOINT", hide = true)]
        imds_endpoint: Option<String>,
    },
    /// Run job JOB for the coordinator at ENDPOINT; the one-job token is read from standard
    /// input (as barge serve's process launcher passes it).
    Job {
        /// The coordinator's endpoint.
        #[arg(long)]
        endpoint: String,
        /// The job's id.
        #[arg(long)]
        job: String,
        /// Append the job's log here (JSON lines).
        #[arg(long)]
        log_file: PathBuf,
        /// Seconds between heartbeats.
        #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=300))]
        heartbeat_seconds: u64,
    },
    /// Run a job spec with no control plane: progress and logs as JSON lines on standard
    /// output, the exit code from the result. For debugging a worker or a fresh AMI.
    Run {
        /// The job spec (JSON, as `POST /jobs` takes it); `-` reads standard input.
        #[arg(long)]
        spec: PathBuf,
        /// Run as this attempt (2 or more resumes an interrupted init).
        #[arg(long, default_value_t = 1)]
        attempt: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("barge-worker: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Mode::Run { spec, attempt } => run_spec(&spec, attempt).await,
            Mode::Job { endpoint, job, log_file, heartbeat_seconds } => {
                local_job(&endpoint, &job, &log_file, heartbeat_seconds).await
            }
            Mode::Ec2 { imds_endpoint, reach } => {
                let reach = if reach == "anywhere" { Reach::Anywhere } else { Reach::Remote };
                ec2(imds_endpoint.as_deref(), reach).await
            }
            Mode::Launched { imds_endpoint } => launched(imds_endpoint.as_deref()).await,
            Mode::Limits { dropin_dir, imds_endpoint } => limits(&dropin_dir, imds_endpoint.as_deref()).await,
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    ExitCode::from(code)
}

/// A SIGTERM (systemd stopping the unit, the machine shutting down): the job gets another
/// attempt, which resumes what this one committed.
async fn terminated() -> Outcome {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
    Outcome::Failed { reason: "the worker was stopped (its machine is shutting down)".into(), retryable: true }
}

async fn run_spec(path: &PathBuf, attempt: u32) -> u8 {
    let redactor = Redactor::default();
    let logs = Logs::start(barge_worker::logs::StdoutSink, redactor.clone());
    logs.install(false);
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
    } else {
        tokio::fs::read_to_string(path).await
    };
    let spec = match text
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
        .and_then(|text| JobSpec::from_json(text.as_bytes()).map_err(|e| format!("{}: {e}", path.display())))
    {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("barge-worker: {}", redactor.redact(&e));
            return exit::USAGE;
        }
    };
    redactor.add_urls([spec.source_url.expose(), spec.target_url.expose()]);
    let deadline = Some(Instant::now() + Duration::from_secs(spec.options.max_duration_seconds()));
    // A spec run by hand on the operator's machine reaches what that machine reaches.
    let job =
        Attempt { spec, attempt: attempt.max(1), deadline, sync_id: None, reach: Reach::Anywhere, sizable: false };
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
        Outcome::Cancelled
    };
    let ending = execute::supervise(&job, &StdoutReporter, Timing::default(), interrupted).await;
    let code = match ending {
        Ending::Outcome(outcome) => {
            let _ = StdoutReporter.finish(&outcome).await;
            exit::of_outcome(&outcome)
        }
        Ending::Abandoned(_) | Ending::Relaunched(_) => 1,
    };
    logs.flush(Duration::from_secs(5)).await;
    code
}

async fn local_job(endpoint: &str, job: &str, log_file: &std::path::Path, heartbeat_seconds: u64) -> u8 {
    let Some(job) = JobId::parse(job) else {
        eprintln!("barge-worker: {job:?} is not a job id");
        return exit::USAGE;
    };
    let mut token = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut token) {
        eprintln!("barge-worker: cannot read the job token from standard input: {e}");
        return exit::USAGE;
    }
    let token = token.trim().to_string();
    if token.is_empty() {
        eprintln!("barge-worker: no job token on standard input (barge serve passes it there)");
        return exit::USAGE;
    }
    let redactor = Redactor::default();
    redactor.add(&token);
    let sink = match barge_local::FileLogSink::open(log_file).await {
        Ok(sink) => sink,
        Err(e) => {
            eprintln!("barge-worker: cannot open the log file {}: {e}", log_file.display());
            return exit::USAGE;
        }
    };
    let logs = Logs::start(sink, redactor.clone());
    logs.install(false);
    let client = match ApiClient::new(endpoint, Auth::Bearer(token)) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "bad endpoint");
            logs.flush(Duration::from_secs(5)).await;
            return exit::USAGE;
        }
    };
    let timing = Timing { heartbeat_every: Duration::from_secs(heartbeat_seconds), ..Timing::default() };
    // barge serve runs jobs for the user of this machine, on this machine.
    let code = claim_and_run(client, job, &redactor, timing, Reach::Anywhere).await;
    logs.flush(Duration::from_secs(10)).await;
    code
}

fn imds_client(endpoint: Option<&str>) -> Result<aws_config::imds::Client, String> {
    let mut imds = aws_config::imds::Client::builder();
    if let Some(endpoint) = endpoint {
        imds = imds.endpoint(endpoint).map_err(|e| format!("bad metadata endpoint {endpoint}: {e}"))?;
    }
    Ok(imds.build())
}

/// Exit code 0 when this instance was launched for a barge job, 1 otherwise (a systemd
/// `ExecCondition=` skips the unit on 1 to 254; 255 would fail it).
async fn launched(imds_endpoint: Option<&str>) -> u8 {
    let checked = async {
        let imds = imds_client(imds_endpoint).map_err(NotLaunched::Unreadable)?;
        let user_data = retry_imds(|| barge_worker::imds::user_data(&imds)).await.map_err(NotLaunched::Unreadable)?;
        barge_worker::imds::launched(user_data.as_deref())
    };
    match checked.await {
        Ok(()) => 0,
        Err(why) => {
            eprintln!("barge-worker: {why}: not starting");
            1
        }
    }
}

async fn limits(dropin_dir: &std::path::Path, imds_endpoint: Option<&str>) -> u8 {
    let written = async {
        let imds = imds_client(imds_endpoint)?;
        let launch = retry_imds(|| barge_worker::imds::launch(&imds)).await?;
        let Some(dropin) = barge_worker::imds::runtime_dropin(&launch) else {
            return Ok::<String, String>("user data names no max_duration: the unit's own limit applies".into());
        };
        let path = dropin_dir.join("50-runtime.conf");
        std::fs::create_dir_all(dropin_dir)
            .and_then(|()| std::fs::write(&path, dropin))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(format!("wrote {}", path.display()))
    };
    match written.await {
        Ok(what) => {
            eprintln!("barge-worker: {what}");
            0
        }
        Err(e) => {
            eprintln!("barge-worker: {e}");
            exit::UNREACHABLE
        }
    }
}

async fn ec2(imds_endpoint: Option<&str>, reach: Reach) -> u8 {
    let imds = match imds_client(imds_endpoint) {
        Ok(imds) => imds,
        Err(e) => {
            eprintln!("barge-worker: {e}");
            return exit::USAGE;
        }
    };
    let launch = match retry_imds(|| barge_worker::imds::launch(&imds)).await {
        Ok(launch) => launch,
        Err(e) => {
            eprintln!("barge-worker: {e}");
            return exit::USAGE;
        }
    };
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let region = match config.region() {
        Some(region) => region.to_string(),
        None => match barge_worker::imds::region(&imds).await {
            Ok(region) => region,
            Err(e) => {
                eprintln!("barge-worker: {e}");
                return exit::UNREACHABLE;
            }
        },
    };
    let redactor = Redactor::default();
    let logs = match &launch.log_group {
        Some(group) => {
            let client = aws_sdk_cloudwatchlogs::Client::new(&config);
            let sink = barge_aws::CloudWatchLogSink::new(client, group, &launch.job_id, launch.attempt);
            Logs::start(sink, redactor.clone())
        }
        None => Logs::start(barge_worker::logs::NullSink, redactor.clone()),
    };
    // The journal keeps a copy on the instance (`journalctl -u barge-worker`).
    logs.install(true);
    let Some(credentials) = config.credentials_provider() else {
        tracing::error!("no AWS credentials provider: the instance needs its instance profile");
        logs.flush(Duration::from_secs(10)).await;
        return exit::UNREACHABLE;
    };
    let signer = SigV4::new(credentials, SigV4::region_of(&launch.endpoint).unwrap_or(region));
    let client = match ApiClient::new(&launch.endpoint, Auth::SigV4(signer)) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "bad endpoint in user data");
            logs.flush(Duration::from_secs(10)).await;
            return exit::USAGE;
        }
    };
    let code = claim_and_run(client, launch.job_id, &redactor, Timing::default(), reach).await;
    logs.flush(Duration::from_secs(30)).await;
    code
}

async fn retry_imds<T, F, Fut>(call: F) -> Result<T, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let mut last = String::new();
    for wait in [1, 2, 4, 8] {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    Err(last)
}

/// A cleanup run: the job ended with its sync's replication objects left (its worker died);
/// remove them and say so.
async fn clean_up(client: &ApiClient, job: &JobId, spec: &JobSpec, attempt: u32, reach: Reach) -> u8 {
    tracing::info!(job = %job, "removing the replication objects the sync left");
    let outcome = match execute::remove_replication(spec, attempt, reach, job.as_str()).await {
        Ok(_) => Outcome::Succeeded,
        Err(reason) => Outcome::Failed { reason, retryable: true },
    };
    let code = exit::of_outcome(&outcome);
    let backoff = Backoff { budget: Duration::from_secs(600), ..Backoff::default() };
    if let Err(e) = retry("finish", backoff, || client.finish(job, &outcome)).await {
        tracing::error!(job = %job, error = %e, "cannot report the cleanup; the reaper launches another");
        return exit::UNREACHABLE;
    }
    code
}

/// Claims `job`, runs it, reports the outcome; returns the exit code.
async fn claim_and_run(client: ApiClient, job: JobId, redactor: &Redactor, timing: Timing, reach: Reach) -> u8 {
    let backoff = Backoff { budget: Duration::from_secs(300), ..Backoff::default() };
    let claim = match retry("claim", backoff, || client.claim(&job)).await {
        Ok(claim) => claim,
        Err(e) => {
            tracing::error!(job = %job, error = %e, "cannot claim the job");
            return exit::UNREACHABLE;
        }
    };
    redactor.add_urls([claim.spec.source_url.expose(), claim.spec.target_url.expose()]);
    let attempt = claim.job.attempt;
    if claim.cleanup {
        return clean_up(&client, &job, &claim.spec, attempt, reach).await;
    }
    tracing::info!(job = %job, attempt, command = %claim.spec.command, source = %claim.job.source, target = %claim.job.target, "claimed");
    let deadline = claim.job.deadline.map(|at| {
        let left = at.millis().saturating_sub(Timestamp::now().millis()).max(0);
        Instant::now() + Duration::from_millis(u64::try_from(left).unwrap_or(0))
    });
    let reporter = ApiReporter::new(client, job.clone());
    // Sized once per job, by its first worker's plan, unless the user named the type.
    let sizable = claim.job.sizing.is_none() && claim.spec.options.instance_type.is_none();
    let run = Attempt { spec: claim.spec, attempt, deadline, sync_id: Some(job.as_str().to_owned()), reach, sizable };
    match execute::supervise(&run, &reporter, timing, terminated()).await {
        Ending::Outcome(outcome) => {
            let code = exit::of_outcome(&outcome);
            if let Err(e) = reporter.finish(&outcome).await {
                tracing::error!(job = %job, error = %e, ?outcome, "cannot report the outcome; the reaper will end the job");
                return exit::UNREACHABLE;
            }
            code
        }
        Ending::Abandoned(why) => {
            tracing::warn!(job = %job, %why, "stopped without reporting");
            1
        }
        // The job's next worker, on the larger type, reports it.
        Ending::Relaunched(kind) => {
            tracing::info!(job = %job, instance_type = %kind, "handed the job to a larger worker");
            0
        }
    }
}
