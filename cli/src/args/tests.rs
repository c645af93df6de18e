//! Flags → spec → engine request: every flag reaches the engine, the same way here and
//! remotely; what cannot run remotely is refused, naming the flag.

use clap::Parser;

use barge_engine::Request;
use barge_jobs::JobSpec;

use super::{lower::Lower, *};

#[test]
fn sizes() {
    assert_eq!(parse_size("256MB"), Ok(256 << 20));
    assert_eq!(parse_size("1.5GB"), Ok(3 << 29));
    assert_eq!(parse_size("64kB"), Ok(64 << 10));
    assert_eq!(parse_size("0"), Ok(0));
    assert!(parse_size("12 parsecs").is_err());
    assert!(parse_size("MB").is_err());
}

#[test]
fn every_init_flag_reaches_the_request() {
    let head = ["barge", "init", "--source", "postgres://u@s/a", "--target", "postgres://u@t/b"];
    let tools = ["--pg-bin", "/opt/pg"];
    let cli = Cli::parse_from(head.iter().chain(&EVERY_SELECTION_FLAG).chain(&EVERY_INIT_FLAG).chain(&tools));
    let Command::Init(args) = &cli.command else { panic!("not init") };
    let req = args.local_request().unwrap();
    assert!(req.options.all_databases);
    assert_eq!(req.filter.include_databases, ["a*"]);
    assert_eq!(req.filter.exclude_databases, ["x"]);
    assert_eq!(req.filter.include_schemas, ["s"]);
    assert_eq!(req.filter.exclude_schemas, ["t"]);
    assert_eq!(req.filter.include_tables, ["s.*"]);
    assert_eq!(req.filter.exclude_tables, ["s.logs"]);
    assert_eq!(req.filter.schema_only_tables, ["s.big"]);
    let o = &req.options;
    assert_eq!((o.jobs, o.index_jobs, o.split_tables_larger_than), (Some(3), Some(5), Some(1 << 30)));
    assert!(
        o.drop_existing && o.roles && o.no_owner && o.no_acl && o.no_tablespaces && o.skip_large_objects && o.analyze
    );
    assert_eq!(o.maintenance_work_mem, Some(512 << 20));
    assert_eq!(req.local.pg_bin.as_deref(), Some(std::path::Path::new("/opt/pg")));
}

/// Every flag of `args`, run remotely: the spec the CLI submits becomes, on the worker,
/// the same engine request the local run builds (the client tools aside: the worker's own).
fn same_request_remotely<A: Lower>(args: &A, local: Request) {
    let spec = args.remote_spec().unwrap();
    // Through the API's JSON, as the worker receives it.
    let spec: JobSpec = JobSpec::from_json(
        &serde_json::to_vec(&serde_json::json!({
            "command": spec.command,
            "source_url": spec.source_url.expose(),
            "target_url": spec.target_url.expose(),
            "filter": spec.filter,
            "options": spec.options,
        }))
        .unwrap(),
    )
    .unwrap();
    let mut remote = barge_worker::execute::request(&spec, 1, barge_jobs::Reach::Anywhere).unwrap();
    remote.local.pg_bin = local.local.pg_bin.clone();
    assert_eq!(format!("{remote:?}"), format!("{local:?}"));
}

const EVERY_INIT_FLAG: [&str; 15] = [
    "-j",
    "3",
    "--index-jobs",
    "5",
    "--split-tables-larger-than",
    "1GB",
    "--drop-existing",
    "--roles",
    "--no-owner",
    "--no-acl",
    "--no-tablespaces",
    "--skip-large-objects",
    "--analyze",
    "--maintenance-work-mem",
    "512MB",
];

const EVERY_SELECTION_FLAG: [&str; 15] = [
    "--all-databases",
    "--include-database",
    "a*",
    "--exclude-database",
    "x",
    "--include-schema",
    "s",
    "--exclude-schema",
    "t",
    "--include-table",
    "s.*",
    "--exclude-table",
    "s.logs",
    "--schema-only-table",
    "s.big",
];

#[test]
fn every_flag_reaches_the_worker() {
    let endpoints = ["--source", "postgres://u:pw@s/a", "--target", "postgres://u:pw@t/b"];
    let init = ["--remote", "--max-duration", "6h", "--instance-type", "m7i.2xlarge"];
    let cli = Cli::parse_from(
        ["barge", "init"].iter().chain(&endpoints).chain(&EVERY_SELECTION_FLAG).chain(&EVERY_INIT_FLAG).chain(&init),
    );
    let Command::Init(args) = &cli.command else { panic!("not init") };
    same_request_remotely(args, args.local_request().unwrap());
    let spec = args.remote_spec().unwrap();
    assert_eq!(spec.options.max_duration, Some(6 * 3600));
    assert_eq!(spec.options.instance_type.as_deref(), Some("m7i.2xlarge"));
    // resume instead of drop
    let cli = Cli::parse_from(["barge", "init", "--resume"].iter().chain(&endpoints));
    let Command::Init(args) = &cli.command else { panic!("not init") };
    same_request_remotely(args, args.local_request().unwrap());

    let validate = ["--sync", "--resume", "--roles", "--no-owner", "-j", "7", "--remote"];
    let cli =
        Cli::parse_from(["barge", "validate"].iter().chain(&endpoints).chain(&EVERY_SELECTION_FLAG).chain(&validate));
    let Command::Validate(args) = &cli.command else { panic!("not validate") };
    same_request_remotely(args, args.local_request().unwrap());

    let selection = &EVERY_SELECTION_FLAG[..EVERY_SELECTION_FLAG.len() - 2];
    let cli = Cli::parse_from(["barge", "verify", "-j", "9"].iter().chain(&endpoints).chain(selection));
    let Command::Verify(args) = &cli.command else { panic!("not verify") };
    same_request_remotely(args, args.local_request().unwrap());
}

#[test]
fn sync_flags_reach_the_worker_and_need_a_sync() {
    let endpoints = ["--source", "postgres://u:pw@s/a", "--target", "postgres://u:pw@t/b"];
    let cli =
        Cli::parse_from(["barge", "init", "--sync", "--replica-identity-full", "--remote"].iter().chain(&endpoints));
    let Command::Init(args) = &cli.command else { panic!("not init") };
    let local = args.local_request().unwrap();
    assert!(local.options.sync && local.options.replica_identity_full);
    same_request_remotely(args, local);
    assert!(args.remote_spec().unwrap().syncs());
    // `barge sync` is `init --sync`, submitted as a sync job.
    let cli = Cli::parse_from(["barge", "sync", "start", "-j", "2", "--remote"].iter().chain(&endpoints));
    let Command::Sync(SyncAction::Start(args)) = &cli.command else { panic!("not sync start") };
    same_request_remotely(args.as_ref(), args.local_request().unwrap());
    assert_eq!(args.remote_spec().unwrap().command, barge_jobs::Command::Sync);
    // Its actions take only the endpoints.
    let cli = Cli::parse_from(["barge", "sync", "status", "--watch", "--sync-id", "abc1"].iter().chain(&endpoints));
    let Command::Sync(SyncAction::Status(status)) = &cli.command else { panic!("not sync status") };
    assert!(status.watch);
    assert_eq!(status.sync.request(None).unwrap().local.sync_id.as_deref(), Some("abc1"));
    let cli = Cli::parse_from(["barge", "cutover", "--timeout", "90s", "--sync-id", "Bad!"].iter().chain(&endpoints));
    let Command::Cutover(cutover) = &cli.command else { panic!("not cutover") };
    assert_eq!(cutover.timeout, 90);
    assert!(cutover.sync.request(None).unwrap_err().to_string().contains("sync id"));
    // Sync-only flags without a sync are refused, naming the flag.
    let cli = Cli::parse_from(["barge", "init", "--replica-identity-full"].iter().chain(&endpoints));
    let Command::Init(args) = &cli.command else { panic!("not init") };
    assert!(args.local_request().unwrap_err().to_string().contains("--sync"));
    assert!(args.remote_spec().unwrap_err().contains("--replica-identity-full"), "{}", args.remote_spec().unwrap_err());
    let cli = Cli::parse_from(["barge", "init", "--sync", "--sync-id", "x1", "--remote"].iter().chain(&endpoints));
    let Command::Init(args) = &cli.command else { panic!("not init") };
    assert!(args.remote_spec().unwrap_err().contains("--sync-id"));
    // A sync whose copy died resumes from its slot (docs/sync.md).
    let cli = Cli::parse_from(["barge", "init", "--sync", "--resume", "--remote"].iter().chain(&endpoints));
    let Command::Init(args) = &cli.command else { panic!("not init") };
    assert!(args.remote_spec().unwrap().options.resume);
}

#[test]
fn the_wal_guard_is_a_syncs_and_its_thresholds_are_ordered() {
    let endpoints = ["--source", "postgres://u:pw@s/a", "--target", "postgres://u:pw@t/b"];
    let parse = |extra: &[&str]| {
        let cli = Cli::parse_from(["barge", "init"].iter().chain(extra).chain(&endpoints));
        let Command::Init(args) = cli.command else { panic!("not init") };
        args
    };
    let args = parse(&["--sync", "--wal-warn", "10GB", "--wal-limit", "50GB", "--on-wal-limit", "pause", "--remote"]);
    let local = args.local_request().unwrap();
    assert_eq!(local.options.wal_warn, Some(10 << 30));
    assert_eq!(local.options.wal_limit, Some(50 << 30));
    assert_eq!(local.options.on_wal_limit, Some(barge_jobs::WalLimitAction::Pause));
    same_request_remotely(&args, local);
    for (flags, says) in [
        (&["--wal-warn", "1GB"][..], "--wal-warn applies to a sync"),
        (&["--sync", "--wal-warn", "5GB", "--wal-limit", "5GB"][..], "--wal-warn: must be below wal_limit"),
        (&["--sync", "--on-wal-limit", "stop"][..], "--on-wal-limit: says what reaching wal_limit does"),
        (&["--sync", "--wal-limit", "0"][..], "--wal-limit: give a size above 0"),
    ] {
        let e = parse(flags).local_request().unwrap_err().to_string();
        assert!(e.contains(says), "{flags:?}: {e}");
    }
    let bad = Cli::try_parse_from(["barge", "init", "--sync", "--on-wal-limit", "drop"].iter().chain(&endpoints));
    assert!(bad.unwrap_err().to_string().contains("use stop or pause"));
    // pause and resume take only the sync's endpoints
    let cli = Cli::parse_from(["barge", "sync", "pause", "--sync-id", "abc1"].iter().chain(&endpoints));
    let Command::Sync(SyncAction::Pause(pause)) = &cli.command else { panic!("not sync pause") };
    assert_eq!(pause.sync.request(None).unwrap().local.sync_id.as_deref(), Some("abc1"));
    let cli = Cli::parse_from(["barge", "sync", "resume", "--output", "json"].iter().chain(&endpoints));
    assert!(matches!(cli.command, Command::Sync(SyncAction::Resume(_))));
}

#[test]
fn remote_refuses_what_it_cannot_honour_naming_the_flag() {
    let parse = |extra: &[&str]| {
        Cli::parse_from(
            ["barge", "init", "--source", "postgres://u@s/a", "--target", "postgres://u@t/b"].iter().chain(extra),
        )
    };
    let spec_error = |extra: &[&str]| {
        let cli = parse(extra);
        let Command::Init(args) = &cli.command else { panic!("not init") };
        args.remote_spec().unwrap_err()
    };
    assert!(spec_error(&["--dry-run"]).contains("--dry-run"));
    assert!(spec_error(&["--jobs", "100000"]).starts_with("--jobs"));
    assert!(spec_error(&["--max-duration", "20d"]).starts_with("--max-duration"));
    assert!(spec_error(&["--instance-type", "huge"]).starts_with("--instance-type"));
    assert!(spec_error(&["--include-table", "a.b.c.d"]).starts_with("--include-table"));
    let cli = Cli::parse_from(["barge", "verify", "--source", "postgres://u@s/a", "--target", "postgres://u@s/a"]);
    let Command::Verify(args) = &cli.command else { panic!("not verify") };
    assert!(args.remote_spec().unwrap_err().starts_with("--target"));
}

#[test]
fn durations() {
    assert_eq!(parse_duration("90m"), Ok(5400));
    assert_eq!(parse_duration("6h"), Ok(21_600));
    assert_eq!(parse_duration("2d"), Ok(172_800));
    assert_eq!(parse_duration("3600"), Ok(3600));
    assert!(parse_duration("1w").is_err());
    assert!(parse_duration("h").is_err());
}

#[test]
fn bad_input_is_refused_with_the_flag() {
    let cli =
        Cli::parse_from(["barge", "init", "--source", "postgres://u@s/a", "--target", "postgres://u@t/b", "-j", "0"]);
    let Command::Init(args) = &cli.command else { panic!("not init") };
    assert!(args.local_request().unwrap_err().to_string().contains("--jobs"));
    let cli = Cli::parse_from(["barge", "verify", "--source", "mysql://u:pw@s/a", "--target", "postgres://u@t/b"]);
    let Command::Verify(args) = &cli.command else { panic!("not verify") };
    let err = args.local_request().unwrap_err().to_string();
    assert!(err.contains("source URL") && !err.contains("pw@"), "{err}");
    assert!(
        Cli::try_parse_from(["barge", "init", "--source", "x", "--target", "y", "--drop-existing", "--resume"])
            .is_err()
    );
}
