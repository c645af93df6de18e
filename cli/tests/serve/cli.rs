//! The `barge` command line against `barge serve`, as users run it: remote init, verify and
//! validate watched to the end with the job's exit code; detach and watch again; Ctrl-C
//! detaches without stopping the job; cancel (with confirmation); list, show, logs; the
//! progress display on a real pseudo-terminal; usage, credential and unreachable-API errors;
//! `barge configure` with an endpoint or a CloudFormation stack (moto).

use std::{
    process::{Command, Output, Stdio},
    time::Duration,
};

use barge_jobs::{Command as JobCommand, JobId, JobStatus};
use barge_testkit::{PASSWORD, PASSWORD_ENCODED, aws_local, dst18, src18, unique};

use crate::harness::{Serve, copy_options, count, slow_source};

/// Exit code, stdout, stderr.
fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = cmd.output().expect("run barge");
    (status.code().unwrap_or(-1), String::from_utf8_lossy(&stdout).into(), String::from_utf8_lossy(&stderr).into())
}

/// The job id in "submitted job <id> (…)".
fn submitted_id(stderr: &str) -> JobId {
    let rest = stderr.split("submitted job ").nth(1).unwrap_or_else(|| panic!("no job submitted:\n{stderr}"));
    JobId::parse(rest.split_whitespace().next().unwrap()).unwrap()
}

fn no_password(text: &str) {
    assert!(!text.contains(PASSWORD) && !text.contains(PASSWORD_ENCODED), "a password was printed:\n{text}");
}

const COPY_FLAGS: [&str; 6] = ["-j", "1", "--index-jobs", "1", "--split-tables-larger-than", "256kB"];

#[tokio::test]
async fn remote_commands_are_watched_to_their_outcome_and_listed() {
    let (src, dst) = (src18(), dst18());
    let serve = Serve::start();
    let src_db = slow_source(&src, "cli").await;
    let dst_db = unique("cli_copy");
    let urls = |cmd: &mut Command| {
        cmd.env("BARGE_SOURCE", src.url(&src_db)).env("BARGE_TARGET", dst.url(&dst_db));
    };
    // WHEN `barge init --remote` runs (no terminal: plain lines)
    let mut init = serve.barge();
    init.args(["init", "--remote"]).args(COPY_FLAGS);
    urls(&mut init);
    let (code, out, err) = run(&mut init);
    // THEN it submitted, showed the phases, and ended with the job's outcome and exit code 0
    assert_eq!(code, 0, "{out}\n{err}");
    let init_id = submitted_id(&err);
    assert!(err.contains("copying rows"), "{err}");
    assert!(out.contains(&format!("job {init_id} (init) succeeded")), "{out}");
    assert_eq!(count(&dst, &dst_db, "select count(*) from items").await, 150_000);
    no_password(&format!("{out}{err}"));

    // AND verify as JSON lines: submitted, job views, the end
    let mut verify = serve.barge();
    verify.args(["verify", "--remote", "--output", "json"]);
    urls(&mut verify);
    let (code, out, err) = run(&mut verify);
    assert_eq!(code, 0, "{out}\n{err}");
    let events: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.first().unwrap()["event"], "submitted", "{out}");
    let end = events.last().unwrap();
    assert_eq!((end["event"].as_str(), end["status"]["state"].as_str()), (Some("end"), Some("succeeded")), "{out}");

    // AND a verify that finds differences exits 1, naming the table and where the log is
    dst.run_sql(&dst_db, "delete from notes where id <= 10").await;
    let mut verify = serve.barge();
    verify.args(["verify", "--remote"]);
    urls(&mut verify);
    let (code, out, err) = run(&mut verify);
    assert_eq!(code, 1, "{out}\n{err}");
    let failed_id = submitted_id(&err);
    assert!(out.contains("failed") && out.contains("notes") && out.contains("barge jobs logs"), "{out}");

    // AND validate with the same flags as locally
    let mut validate = serve.barge();
    validate
        .args(["validate", "--remote"])
        .env("BARGE_SOURCE", src.url(&src_db))
        .env("BARGE_TARGET", dst.url(&unique("cli_validate")));
    let (code, out, err) = run(&mut validate);
    assert_eq!(code, 0, "{out}\n{err}");

    // AND the jobs are listed, newest first, with their states
    let (code, out, err) = run(serve.barge().args(["jobs", "list"]));
    assert_eq!(code, 0, "{err}");
    let header = out.lines().next().unwrap();
    for column in ["ID", "COMMAND", "STATUS", "PHASE", "PROGRESS", "AGE"] {
        assert!(header.contains(column), "{out}");
    }
    let row = |id: &JobId| out.lines().find(|l| l.starts_with(id.as_str())).unwrap_or_else(|| panic!("{id}:\n{out}"));
    assert!(row(&init_id).contains("init") && row(&init_id).contains("succeeded") && row(&init_id).contains("100%"));
    assert!(row(&failed_id).contains("verify") && row(&failed_id).contains("failed"));
    assert_eq!(out.lines().count(), 5, "{out}");
    let (code, out, _) = run(serve.barge().args(["jobs", "list", "--status", "failed", "--output", "json"]));
    assert_eq!(code, 0);
    let failed: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert_eq!(failed[0]["id"], failed_id.as_str());

    // AND show has the details and the next steps
    let (code, out, _) = run(serve.barge().args(["jobs", "show", init_id.as_str()]));
    assert_eq!(code, 0);
    assert!(
        out.contains("attempt   1 of 3") && out.contains("worker    proc-") && out.contains("source    postgres://")
    );
    assert!(out.contains("sizing    ") && out.contains("COPY stream(s): "), "{out}");
    // serve runs workers as local processes: there is no type to choose, and it says so
    assert!(out.contains("size      kept this worker's ") && out.contains("lists no instance types"), "{out}");
    no_password(&out);
    let (code, out, _) = run(serve.barge().args(["jobs", "show", failed_id.as_str()]));
    assert_eq!(code, 0);
    assert!(out.contains("next:"), "{out}");

    // AND logs: readable lines by default, the worker's JSON with --raw, of the last job
    // when no id is given
    let (code, out, err) = run(serve.barge().args(["jobs", "logs", init_id.as_str()]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("claimed") && out.contains("succeeded") && !out.starts_with('{'), "{out}");
    no_password(&out);
    let (code, out, _) = run(serve.barge().args(["jobs", "logs", "--raw"]));
    assert_eq!(code, 0);
    assert!(!out.is_empty());
    for line in out.lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(line.get("level").is_some() && line.get("timestamp").is_some(), "{line}");
    }
    let (code, out, _) = run(serve.barge().args(["jobs", "logs", "-f", init_id.as_str()]));
    assert_eq!(code, 0, "a follow of an ended job returns once its log is read");
    assert!(out.contains("succeeded"));
}

#[tokio::test]
async fn detach_watch_interrupt_and_cancel() {
    let (src, dst) = (src18(), dst18());
    let serve = Serve::start();
    let src_db = slow_source(&src, "detach").await;
    let dst_db = unique("detach_copy");
    // WHEN `--detach` submits
    let (code, out, err) = run(serve
        .barge()
        .args(["init", "--remote", "--detach"])
        .args(COPY_FLAGS)
        .env("BARGE_SOURCE", src.url(&src_db))
        .env("BARGE_TARGET", dst.url(&dst_db)));
    // THEN it returns at once with the job id alone on stdout
    assert_eq!(code, 0, "{err}");
    let id = JobId::parse(out.trim()).unwrap_or_else(|| panic!("{out:?}"));
    assert!(err.contains(&format!("barge jobs watch {id}")), "{err}");
    // AND `barge jobs watch` (the last job) follows it; Ctrl-C stops watching, not the job
    let watcher = serve.barge().args(["jobs", "watch"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    serve.watch(&id, Duration::from_secs(120), |v| v.progress.as_ref().is_some_and(|p| p.bytes_copied > 0)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(Command::new("kill").args(["-INT", &watcher.id().to_string()]).status().unwrap().success());
    let Output { status, stderr, .. } = watcher.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&stderr);
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("copying rows") && stderr.contains(&format!("barge jobs watch {id}")), "{stderr}");
    let view = serve.client.get(&id).await.unwrap();
    assert!(matches!(view.status, JobStatus::Running { .. }), "the job stopped with its watcher: {view:#?}");
    // AND a cancel without a terminal wants --yes
    let (code, _, err) = run(serve.barge().args(["jobs", "cancel", id.as_str()]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--yes"), "{err}");
    let (code, out, err) = run(serve.barge().args(["jobs", "cancel", id.as_str(), "--yes"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cancel requested"), "{out}");
    // AND watching it again ends with the cancelled exit code
    let (code, out, err) = run(serve.barge().args(["jobs", "watch", id.as_str()]));
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(out.contains("was cancelled"), "{out}");
}

#[tokio::test]
async fn watching_rides_out_an_api_outage_and_follows_the_next_attempt() {
    let (src, dst) = (src18(), dst18());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let serve = Serve::start_on(tempfile::tempdir().unwrap(), port);
    let (_, dst_db, running) = serve.copy_under_way(&src, &dst, "outage").await;
    // GIVEN a user watching the copy
    let mut watcher = serve.barge();
    watcher.args(["jobs", "watch", running.id.as_str()]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let watcher = watcher.spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // WHEN the API goes away for a while (barge serve stops) and comes back on the same port
    let (data, _) = serve.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let serve = Serve::start_on(data, port);
    // THEN the watcher kept trying, said so, and followed the job to its end on attempt 2
    let Output { status, stdout, stderr } =
        tokio::task::spawn_blocking(move || watcher.wait_with_output().unwrap()).await.unwrap();
    let (out, err) = (String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
    assert_eq!(status.code(), Some(0), "{out}\n{err}");
    assert!(err.contains("reconnecting…") && err.contains("reconnected"), "{err}");
    assert!(err.contains("attempt 2 of 3") && err.contains("barge serve stopped"), "{err}");
    assert!(out.contains(&format!("job {} (init) succeeded", running.id)), "{out}");
    assert_eq!(count(&dst, &dst_db, "select count(*) from items").await, 150_000);
    drop(serve);
}

/// `barge jobs watch` on a pseudo-terminal (util-linux script): exit code, output, errors.
fn watch_on_a_terminal(serve: &Serve, job: &barge_jobs::JobId) -> (i32, String, String) {
    let barge = env!("CARGO_BIN_EXE_barge");
    let mut script = Command::new("script");
    serve.user_env(&mut script);
    script.env("TERM", "xterm-256color").env("COLUMNS", "120");
    run(script.args(["--quiet", "--return", "--command", &format!("{barge} jobs watch {job}"), "/dev/null"]))
}

#[tokio::test]
async fn the_progress_display_renders_on_a_terminal_and_ends_cleanly() {
    let (src, dst) = (src18(), dst18());
    let serve = Serve::start();
    let src_db = slow_source(&src, "tty").await;
    let job = serve.submit(JobCommand::Init, &src.url(&src_db), &dst.url(&unique("tty_copy")), copy_options()).await;
    // WHEN the job is watched on a pseudo-terminal (util-linux script)
    let (code, out, err) = watch_on_a_terminal(&serve, &job.id);
    // THEN bars were drawn (cursor movement, the byte counter), and it ended with the outcome
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("\u{1b}["), "no terminal control sequences:\n{out:?}");
    assert!(out.contains("copying rows") && out.contains("/s"), "{out:?}");
    let last = out.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains(&format!("job {} (init) succeeded", job.id)), "{out:?}");
}

#[tokio::test]
async fn a_remote_jobs_bars_show_hostile_table_names_escaped() {
    // GIVEN a remote copy whose slow table is named with a terminal title sequence
    let (src, dst) = (src18(), dst18());
    let serve = Serve::start();
    let src_db = slow_source(&src, "tty_evil").await;
    src.run_sql(&src_db, "alter table items rename to \"evil\u{1b}]0;pwned\u{7}\"").await;
    let job =
        serve.submit(JobCommand::Init, &src.url(&src_db), &dst.url(&unique("tty_evil_copy")), copy_options()).await;
    // WHEN it is watched on a pseudo-terminal
    let (code, out, err) = watch_on_a_terminal(&serve, &job.id);
    // THEN the name was shown, escaped, and the sequence never reached the terminal
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("evil\\u{1b}]0;pwned"), "{out:?}");
    assert!(!out.contains("\u{1b}]0;pwned"), "{out:?}");
}

#[tokio::test]
async fn usage_credential_and_reachability_errors_have_their_exit_codes() {
    let (src, dst) = (src18(), dst18());
    let serve = Serve::start();
    let source = src.url("postgres");
    let target = dst.url(&unique("never"));
    let nowhere = tempfile::tempdir().unwrap();
    // No endpoint anywhere (no flag, profile or barge serve): --remote says how to get one
    let (code, _, err) = run(serve
        .barge()
        .env("BARGE_DATA_DIR", nowhere.path())
        .args(["validate", "--remote", "--source", &source, "--target", &target]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no barge API is configured") && err.contains("barge configure"), "{err}");
    // A remote-only flag on a local run
    let (code, _, err) = run(serve.barge().args(["validate", "--detach", "--source", &source, "--target", &target]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--detach applies to remote jobs"), "{err}");
    // A local-only flag on a remote run; a bad value named by its flag
    let (code, _, err) =
        run(serve.barge().args(["init", "--remote", "--dry-run", "--source", &source, "--target", &target]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--dry-run"), "{err}");
    let (code, _, err) =
        run(serve.barge().args(["init", "--remote", "--source", &source, "--target", &target, "--jobs", "100000"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--jobs"), "{err}");
    // Unreachable API → 5
    let (code, _, err) = run(serve.barge().args(["jobs", "list", "--api", "http://127.0.0.1:9"]));
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("cannot reach") && err.contains("barge serve"), "{err}");
    // A token that is not this barge serve's → 1, saying so
    let token = nowhere.path().join("token");
    std::fs::write(&token, "not-the-token").unwrap();
    let (code, _, err) = run(serve.barge().env("BARGE_TOKEN_FILE", &token).args(["jobs", "list"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("did not accept the credentials") && err.contains("token"), "{err}");
    // An AWS endpoint without AWS credentials: nothing is sent, and the error says what to set
    let mut aws = serve.barge();
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION"] {
        aws.env_remove(name);
    }
    aws.env("AWS_EC2_METADATA_DISABLED", "true").args([
        "jobs",
        "list",
        "--api",
        "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com",
    ]);
    let (code, _, err) = run(&mut aws);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot sign the request") && err.contains("aws sso login"), "{err}");
    // Not a job id; no such job
    let (code, _, err) = run(serve.barge().args(["jobs", "show", "nope"]));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(serve.barge().args(["jobs", "show", JobId::random().as_str()]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("barge jobs list"), "{err}");
    // No last job yet
    let (code, _, err) = run(serve.barge().args(["jobs", "watch"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("give a job id"), "{err}");
}

#[test]
fn shell_completions_cover_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run(Command::new(env!("CARGO_BIN_EXE_barge")).args(["completions", shell]));
        assert_eq!(code, 0, "{err}");
        for word in ["init", "verify", "jobs", "watch", "remote", "max-duration"] {
            assert!(out.contains(word), "{shell} completions lack {word}");
        }
    }
    let (code, _, err) = run(Command::new(env!("CARGO_BIN_EXE_barge")).args(["completions", "tcsh"]));
    assert_eq!(code, 2, "{err}");
}

#[tokio::test]
async fn configure_makes_remote_the_default_and_reads_a_stacks_endpoint() {
    let (src, dst) = (src18(), dst18());
    let serve = Serve::start();
    let source = src.url("postgres");
    // Plain http is for loopback only
    let (code, _, err) = run(serve.barge().args(["configure", "--endpoint", "http://barge.example.com"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("https"), "{err}");
    // WHEN the endpoint is configured
    let (code, out, err) = run(serve.barge().args(["configure", "--endpoint", &serve.endpoint]));
    assert_eq!(code, 0, "{err}");
    let config = serve.home.path().join(".config/barge/config.json");
    assert!(out.contains(&config.display().to_string()), "{out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
    // THEN commands run remotely by default, and --local runs them here
    let target = dst.url(&unique("configured"));
    let (code, out, err) = run(serve.barge().args(["validate", "--source", &source, "--target", &target]));
    assert_eq!(code, 0, "{out}\n{err}");
    let id = submitted_id(&err);
    assert!(matches!(serve.client.get(&id).await.unwrap().status, JobStatus::Succeeded));
    let (code, out, err) = run(serve
        .barge()
        .env("BARGE_PG_BIN", src.bin())
        .args(["validate", "--local", "--source", &source, "--target", &target]));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains("submitted job") && out.contains("validate: ready to copy"), "{out}\n{err}");
    // AND a profile can come from a deployed stack's ApiEndpoint output
    let moto = aws_local("moto");
    let stack = unique("barge-stack").replace('_', "-");
    let url = "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com";
    create_stack(&moto, &stack, url).await;
    let aws = |cmd: &mut Command| {
        cmd.env("AWS_ENDPOINT_URL_CLOUDFORMATION", &moto)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE");
    };
    let mut configure = serve.barge();
    configure.args(["configure", "--profile", "prod", "--stack", &stack, "--region", "eu-west-1"]);
    aws(&mut configure);
    let (code, out, err) = run(&mut configure);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, _) = run(serve.barge().args(["configure", "--profile", "prod"]));
    assert_eq!(code, 0);
    assert!(out.contains(url) && out.contains(&stack), "{out}");
    let mut missing = serve.barge();
    missing.args(["configure", "--stack", "no-such-stack", "--region", "eu-west-1"]);
    aws(&mut missing);
    let (code, _, err) = run(&mut missing);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no-such-stack"), "{err}");
    // AND an unknown profile is an error that says how to create it
    let (code, _, err) = run(serve.barge().args(["jobs", "list", "--profile", "staging"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("barge configure --profile staging"), "{err}");
}

/// A CloudFormation stack on moto whose `ApiEndpoint` output is `url`.
async fn create_stack(moto: &str, name: &str, url: &str) {
    let config = aws_sdk_cloudformation::Config::builder()
        .behavior_version(aws_sdk_cloudformation::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudformation::config::Region::new("eu-west-1"))
        .endpoint_url(moto)
        .credentials_provider(aws_credential_types::Credentials::new("testing", "testing", None, None, "test"))
        .build();
    let template = serde_json::json!({
        "Resources": {
            "Marker": { "Type": "AWS::SSM::Parameter", "Properties": { "Type": "String", "Value": "barge" } }
        },
        "Outputs": { "ApiEndpoint": { "Value": url } }
    });
    let created = aws_sdk_cloudformation::Client::from_conf(config)
        .create_stack()
        .stack_name(name)
        .template_body(template.to_string())
        .send()
        .await;
    // moto's first CloudFormation call can be slow enough for the SDK to retry it.
    if let Err(e) = created {
        assert!(e.as_service_error().is_some_and(|e| e.is_already_exists_exception()), "{e:?}");
    }
}
