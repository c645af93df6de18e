//! The `barge` binary as users run it, against real PostgreSQL clusters started by the
//! harness: output formats, exit codes, resume after `kill -9`, and no password anywhere.

// Test code: a failed unwrap is the failed test, with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use barge_testkit::{Cluster, PASSWORD, PASSWORD_ENCODED, dst18, src18, unique};

fn barge() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_barge"));
    cmd.env("BARGE_PG_BIN", src18().bin()).env_remove("BARGE_SOURCE").env_remove("BARGE_TARGET");
    cmd
}

fn run(cmd: &mut Command) -> (i32, String) {
    let Output { status, stdout, stderr } = cmd.output().expect("run barge");
    let text = format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
    (status.code().unwrap_or(-1), text)
}

fn assert_no_password(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "output holds a password ({secret}):\n{text}");
    }
}

async fn count(cluster: &Cluster, db: &str, sql: &str) -> i64 {
    cluster.connect(db).await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn resume_after_kill_copies_every_row_once() {
    // GIVEN a source with two tables split into many parts (one keyed, one without a key)
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("resume").await;
    src.run_sql(
        &src_db,
        "create table keyed (id bigint primary key, payload text);
         insert into keyed select g, repeat(md5(g::text), 5) from generate_series(1, 120000) g;
         create table nokey (n int, payload text);
         insert into nokey select g % 1000, repeat(md5(g::text), 5) from generate_series(1, 120000) g;
         create index nokey_n on nokey (n);
         create sequence uncalled; select setval('uncalled', 500, false);
         create sequence down increment -2 maxvalue -1 cycle; select nextval('down'), nextval('down');
         analyze;",
    )
    .await;
    let dst_db = unique("resume_copy");
    let args = |extra: &[&str]| {
        let mut cmd = barge();
        cmd.args([
            "init",
            "--output",
            "json",
            "--jobs",
            "1",
            "--index-jobs",
            "1",
            "--split-tables-larger-than",
            "256kB",
        ])
        .args(["--source", &src.url(&src_db), "--target", &dst.url(&dst_db)])
        .args(extra);
        cmd
    };
    // WHEN the copy is killed with SIGKILL after a few parts committed
    let mut child = args(&[]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut finished = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.contains("\"table_finished\"") {
            finished += 1;
            if finished == 3 {
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    assert_eq!(finished, 3, "the copy ended before it could be killed mid-way");
    let done = count(&dst, &dst_db, "select count(*) from _barge.done where step like 'data:%'").await;
    let total_rows = count(&dst, &dst_db, "select count(*) from keyed").await
        + count(&dst, &dst_db, "select count(*) from nokey").await;
    assert!(done >= 3 && total_rows < 240_000, "killed mid-way: {done} parts marked, {total_rows} rows in");
    let paused = "select count(*) from pg_class where relname in ('keyed', 'nokey') \
                  and array_to_string(reloptions, ',') like '%autovacuum_enabled=false%'";
    assert_eq!(count(&dst, &dst_db, paused).await, 2, "autovacuum is paused while the copy is incomplete");
    // A second run without --resume refuses to touch the half-copied database.
    let (code, text) = run(&mut args(&[]));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("--resume"), "{text}");
    // THEN --resume finishes the copy without copying committed parts again
    let (code, text) = run(&mut args(&["--resume"]));
    assert_eq!(code, 0, "{text}");
    let report = text.lines().find(|l| l.contains("\"event\":\"report\"")).expect("a report line");
    let report: serde_json::Value = serde_json::from_str(report).unwrap();
    let resumed = report["databases"][0]["resumed_steps"].as_u64().unwrap();
    assert!(resumed as i64 >= done, "{report}");
    let rows = report["databases"][0]["rows"].as_u64().unwrap();
    assert!(rows < 240_000, "committed parts were copied again: {rows} rows");
    assert_eq!(count(&dst, &dst_db, "select count(*) from keyed").await, 120_000);
    assert_eq!(count(&dst, &dst_db, "select count(*) from nokey").await, 120_000, "rows duplicated or lost");
    assert_eq!(count(&dst, &dst_db, "select count(*) from pg_namespace where nspname = '_barge'").await, 0);
    assert_eq!(count(&dst, &dst_db, paused).await, 0, "autovacuum is restored once the copy is complete");
    // AND the sequences stand where the source's do, set-but-not-called included
    let position = "select last_value::text || ' ' || is_called::text from uncalled \
                    union all select last_value::text || ' ' || is_called::text from down";
    let read = async |cluster: &Cluster, db: &str| -> Vec<String> {
        cluster.connect(db).await.query(position, &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
    };
    let want = read(&src, &src_db).await;
    assert_eq!(want, ["500 false", "-3 true"]);
    assert_eq!(read(&dst, &dst_db).await, want);
    let (code, text) = run(barge().args(["verify", "--source", &src.url(&src_db), "--target", &dst.url(&dst_db)]));
    assert_eq!(code, 0, "{text}");
}

#[tokio::test]
async fn a_copy_killed_between_schema_batches_resumes_from_the_next_batch() {
    // GIVEN 400 tables (identity key, serial, check, comment, trigger, two rows each) and a
    // target whose lock table makes their pre-data schema several transactions
    let (src, dst) = (src18(), barge_testkit::small_lock_table());
    let src_db = src.create_db("prekill").await;
    src.run_sql(&src_db, &barge_testkit::small_tables_sql(400)).await;
    let dst_db = unique("prekill_copy");
    let (s, t) = (src.url(&src_db), dst.url(&dst_db));
    let init = |extra: &[&str]| {
        let mut cmd = barge();
        cmd.args(["init", "--output", "json", "--source", &s, "--target", &t]).args(extra).stdin(Stdio::null());
        cmd
    };
    // WHEN barge is killed with SIGKILL once some schema batches committed, before the last
    let mut child = init(&[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let marks = "select count(*) filter (where step like 'pre-data:%'), count(*) filter (where step = 'pre-data') \
                 from _barge.done";
    let deadline = Instant::now() + Duration::from_secs(60);
    let committed = loop {
        assert!(child.try_wait().unwrap().is_none(), "the copy ended before it could be killed mid-schema");
        assert!(Instant::now() < deadline, "no schema batch committed within a minute");
        if let Ok((client, connection)) = tokio_postgres::connect(&t, tokio_postgres::NoTls).await {
            let connection = tokio::spawn(connection);
            let row = client.query_one(marks, &[]).await;
            drop(client);
            let _ = connection.await;
            if let Ok(row) = row {
                let (batches, done): (i64, i64) = (row.get(0), row.get(1));
                if batches >= 2 && done == 0 {
                    child.kill().unwrap();
                    break batches;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    child.wait().unwrap();
    let batches_in = count(&dst, &dst_db, "select count(*) from _barge.done where step like 'pre-data:%'").await;
    let whole = count(&dst, &dst_db, "select count(*) from _barge.done where step = 'pre-data'").await;
    assert!(batches_in >= committed && whole == 0, "killed mid-schema: {batches_in} batches in, pre-data done {whole}");
    let tables_in = count(&dst, &dst_db, "select count(*) from pg_tables where schemaname = 'public'").await;
    assert!(tables_in > 0 && tables_in < 400, "killed mid-schema: {tables_in} of 400 tables exist");
    // THEN a plain second run refuses the half-made database and names the ways out
    let (code, text) = run(&mut init(&[]));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("--resume") && text.contains("--drop-existing"), "{text}");
    // AND --resume skips the committed batches and finishes: every table, comment, trigger and row
    let (code, text) = run(&mut init(&["--resume"]));
    assert_eq!(code, 0, "{text}");
    let report = text.lines().find(|l| l.contains("\"event\":\"report\"")).expect("a report line");
    let report: serde_json::Value = serde_json::from_str(report).unwrap();
    let resumed = report["databases"][0]["resumed_steps"].as_u64().unwrap();
    assert!(resumed as i64 >= batches_in, "committed schema batches applied again: {report}");
    let shape = "select (select count(*) from pg_tables where schemaname = 'public') \
                 + (select count(*) from pg_description d join pg_class c on c.oid = d.objoid \
                    where c.relnamespace = 'public'::regnamespace and d.objsubid = 0) \
                 + (select count(*) from pg_trigger where tgname = 'touch')";
    assert_eq!(count(&dst, &dst_db, shape).await, 1200);
    let (code, text) = run(barge().args(["verify", "--source", &s, "--target", &t]));
    assert_eq!(code, 0, "{text}");
    assert_eq!(count(&dst, &dst_db, "select count(*) from pg_namespace where nspname = '_barge'").await, 0);
}

#[tokio::test]
async fn passwords_never_reach_any_output() {
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("secrets").await;
    src.run_sql(&src_db, "create table t (id int primary key); insert into t select generate_series(1, 100);").await;
    let dst_db = unique("secrets_copy");
    let (s, t) = (src.url(&src_db), dst.url(&dst_db));
    let wrong = "wr0ng;p@ss";
    let wrong_url = src.url_as("postgres", wrong, &src_db);
    let secrets = [PASSWORD, PASSWORD_ENCODED, wrong, "wr0ng%3Bp%40ss", "wr0ng"];
    let mut outputs = Vec::new();
    // A copy with debug logs, in both output formats.
    outputs.push(run(barge().args(["-vv", "init", "--source", &s, "--target", &t])));
    outputs.push(run(barge().args(["-vv", "verify", "--output", "json", "--source", &s, "--target", &t])));
    // URLs from the environment.
    outputs.push(run(barge().args(["validate", "--sync"]).env("BARGE_SOURCE", &s).env("BARGE_TARGET", &t)));
    // Failures: wrong password, refused target, malformed URL, a URL where a flag belongs.
    outputs.push(run(barge().args(["init", "--source", &wrong_url, "--target", &t])));
    outputs.push(run(barge().args(["validate", "--source", &wrong_url, "--target", &t, "--output", "json"])));
    outputs.push(run(barge().args(["init", "--source", &s, "--target", &t])));
    outputs.push(run(barge().args(["init", "--source", &s.replace("postgres://", "mysql://"), "--target", &t])));
    outputs.push(run(barge().args(["init", &s, "--target", &t])));
    outputs.push(run(barge().args(["init", "--source", &format!("{s}?sslmode=bogus"), "--target", &t])));
    let codes: Vec<i32> = outputs.iter().map(|(c, _)| *c).collect();
    assert_eq!(codes, vec![0, 0, 1, 1, 1, 1, 2, 2, 2], "{outputs:#?}");
    assert!(outputs[3].1.contains("password authentication failed"), "{}", outputs[3].1);
    assert!(outputs[3].1.contains("source server at 127.0.0.1"), "{}", outputs[3].1);
    for (_, text) in &outputs {
        assert_no_password(text, &secrets);
    }
    // Passwords with characters that should have been percent-encoded: the URL does not
    // parse, and nothing of it is echoed.
    for pw in ["se#cr3t", "se/cr3t", "se?cr3t&", "se cr3t", "se%cr3t", "se@cr3t/x"] {
        let url = format!("postgresql://postgres:{pw}@127.0.0.1:5432/app");
        for args in
            [vec!["validate", "--source", &url, "--target", &t], vec!["validate", "--source", &t, "--target", &url]]
        {
            let (code, text) = run(barge().args(&args));
            assert_eq!(code, 2, "{pw}: {text}");
            assert!(!text.contains("cr3t"), "{pw}: {text}");
            assert!(text.contains("percent-encode") || text.contains("%25"), "{pw}: {text}");
        }
    }
    // Nor into the target's stored items: the progress marks are gone, and no catalog of the
    // target holds the source's password.
    let client = dst.connect(&dst_db).await;
    for sql in [
        "select coalesce(string_agg(d::text, ''), '') from pg_db_role_setting d",
        "select coalesce(string_agg(s::text, ''), '') from pg_subscription s",
    ] {
        let text: String = client.query_one(sql, &[]).await.unwrap().get(0);
        assert_no_password(&text, &secrets);
    }
}

#[tokio::test]
async fn output_formats_and_exit_codes() {
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("formats").await;
    src.run_sql(
        &src_db,
        "create table t (id int primary key, v text); insert into t select g, 'v' from generate_series(1, 500) g;",
    )
    .await;
    let dst_db = unique("formats_copy");
    let (s, t) = (src.url(&src_db), dst.url(&dst_db));
    // --dry-run prints the plan and creates nothing.
    let (code, text) = run(barge().args(["init", "--dry-run", "--source", &s, "--target", &t]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("{src_db} → {dst_db}   create")), "{text}");
    assert!(text.contains("public.t") && text.contains("dry run: nothing was changed"), "{text}");
    // with the COPY streams it would run, and why
    assert!(text.contains("1 COPY stream(s): ") && text.contains("other limits: "), "{text}");
    // and the worker a remote job would want for them
    assert!(text.contains("a remote worker would want 1 vCPU(s): 1 COPY stream(s) at "), "{text}");
    let exists = count(&dst, "postgres", &format!("select count(*) from pg_database where datname = '{dst_db}'")).await;
    assert_eq!(exists, 0, "--dry-run created the database");
    // JSON lines: a plan, progress events, a report.
    let (code, text) = run(barge().args(["init", "--output", "json", "--source", &s, "--target", &t]));
    assert_eq!(code, 0, "{text}");
    let events: Vec<serde_json::Value> =
        text.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"plan"));
    assert_eq!(kinds.last(), Some(&"report"));
    for kind in ["phase", "table_started", "table_finished", "progress", "database_finished"] {
        assert!(kinds.contains(&kind), "no {kind} event in {kinds:?}");
    }
    // verify: 0 when equal, 1 on a difference, with the key named.
    let (code, _) = run(barge().args(["verify", "--source", &s, "--target", &t]));
    assert_eq!(code, 0);
    dst.run_sql(&dst_db, "update t set v = 'changed' where id = 321").await;
    let (code, text) = run(barge().args(["verify", "--source", &s, "--target", &t]));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("(321) differs"), "{text}");
    // validate: 1 with a failing check (the target is no longer empty), in JSON too.
    let (code, text) = run(barge().args(["validate", "--output", "json", "--source", &s, "--target", &t]));
    assert_eq!(code, 1, "{text}");
    let report: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(report["ok"], false);
    let refused = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["status"] == "fail" && c["detail"].as_str().unwrap_or("").contains("--drop-existing"));
    assert!(refused, "{report}");
    // Usage errors: 2.
    let (code, _) = run(barge().args(["init", "--source", &s]));
    assert_eq!(code, 2);
    let (code, text) = run(barge().args(["init", "--source", &s, "--target", &t, "--include-table", "a.b.c.d"]));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--include-table"), "{text}");
}

#[test]
fn help_documents_exit_codes_and_every_flag() {
    let (code, text) = run(barge().args(["init", "--help"]));
    assert_eq!(code, 0);
    for flag in [
        "--source",
        "--target",
        "--all-databases",
        "--include-database",
        "--exclude-database",
        "--include-schema",
        "--exclude-schema",
        "--include-table",
        "--exclude-table",
        "--schema-only-table",
        "--jobs",
        "--index-jobs",
        "--split-tables-larger-than",
        "--drop-existing",
        "--resume",
        "--dry-run",
        "--roles",
        "--no-owner",
        "--no-acl",
        "--output",
        "Exit codes",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    let started = Instant::now();
    let (code, _) = run(barge().arg("--version"));
    assert_eq!(code, 0);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn filters_that_match_nothing_stop_before_anything_changes() {
    // GIVEN a source with customers and orders
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("typo").await;
    src.run_sql(&src_db, "create table customers (id int primary key); create table orders (id int);").await;
    let dst_db = unique("typo_copy");
    let (s, t) = (src.url(&src_db), dst.url(&dst_db));
    // WHEN a pattern is misspelt: exit 2, the pattern and the closest name, nothing created
    let (code, text) = run(barge().args(["init", "--source", &s, "--target", &t, "--include-table", "custmers"]));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--include-table \"custmers\" matches no table; did you mean public.customers?"), "{text}");
    let exists = count(&dst, "postgres", &format!("select count(*) from pg_database where datname = '{dst_db}'")).await;
    assert_eq!(exists, 0);
    // AND of several patterns, only the ones that matched nothing are named
    let (code, text) = run(barge().args([
        "init",
        "--source",
        &s,
        "--target",
        &t,
        "--include-table",
        "customers",
        "--include-table",
        "ordrs",
        "--exclude-schema",
        "audit",
    ]));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("\"ordrs\" matches no table; did you mean public.orders?"), "{text}");
    assert!(text.contains("--exclude-schema \"audit\" matches no schema"), "{text}");
    assert!(!text.contains("\"customers\" matches"), "{text}");
    // AND validate fails the same way
    let (code, text) =
        run(barge().args(["validate", "--source", &s, "--target", &t, "--schema-only-table", "public.order"]));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("--schema-only-table \"public.order\" matches no table; did you mean public.orders?"),
        "{text}"
    );
    // AND database patterns too
    let (code, text) = run(barge().args([
        "init",
        "--all-databases",
        "--source",
        &src.url(""),
        "--target",
        &dst.url(""),
        "--include-database",
        &format!("{src_db}x"),
    ]));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("matches no database; did you mean") && text.contains(&src_db), "{text}");
}

#[tokio::test]
async fn the_database_mapping_is_never_guessed() {
    let (src, dst) = (src18(), dst18());
    let dst_db = unique("mapping");
    // A source URL without a database: both choices, exit 2.
    let (code, text) = run(barge().args(["init", "--source", &src.url(""), "--target", &dst.url(&dst_db)]));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("names no database") && text.contains(&dst_db), "{text}");
    assert!(text.contains("name it in the source URL") && text.contains("--all-databases"), "{text}");
    let (code, text) = run(barge().args(["validate", "--source", &src.url(""), "--target", &dst.url("")]));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("add --all-databases"), "{text}");
    // --all-databases with a target database it would ignore.
    let (code, text) =
        run(barge().args(["init", "--all-databases", "--source", &src.url(""), "--target", &dst.url(&dst_db)]));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("remove the database from the target URL"), "{text}");
    let exists = count(&dst, "postgres", &format!("select count(*) from pg_database where datname = '{dst_db}'")).await;
    assert_eq!(exists, 0);
}

#[tokio::test]
async fn drop_existing_names_the_databases_and_needs_yes_without_a_terminal() {
    // GIVEN a target database that holds a table
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("dropq").await;
    src.run_sql(&src_db, "create table t (id int primary key); insert into t values (1);").await;
    let dst_db = dst.create_db("dropq_copy").await;
    dst.run_sql(&dst_db, "create table precious (id int); insert into precious values (42);").await;
    let (s, t) = (src.url(&src_db), dst.url(&dst_db));
    // WHEN --drop-existing runs with no terminal and no --yes
    let (code, text) =
        run(barge().args(["init", "--drop-existing", "--source", &s, "--target", &t]).stdin(Stdio::null()));
    // THEN the plan names the database it would drop, nothing is dropped, and --yes is asked for
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(&dst_db) && text.contains("will be dropped"), "{text}");
    assert!(text.contains("--drop-existing needs confirmation: pass --yes"), "{text}");
    assert_eq!(count(&dst, &dst_db, "select count(*) from precious").await, 1);
    // (the runtime closes that connection only when it runs again; barge would wait on it)
    tokio::time::sleep(Duration::from_millis(200)).await;
    // AND with --yes it is replaced
    let (code, text) =
        run(barge().args(["init", "--drop-existing", "--yes", "--source", &s, "--target", &t]).stdin(Stdio::null()));
    assert_eq!(code, 0, "{text}");
    assert_eq!(count(&dst, &dst_db, "select count(*) from t").await, 1);
}

#[tokio::test]
async fn names_with_terminal_escapes_are_shown_escaped() {
    // GIVEN a source whose owner named a table with terminal escape sequences and a
    // right-to-left override
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("escapes").await;
    src.run_sql(
        &src_db,
        "create table \"evil\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}txt\" (id int primary key);
         insert into \"evil\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}txt\" select generate_series(1, 10);",
    )
    .await;
    let (s, t) = (src.url(&src_db), dst.url(&unique("escapes_copy")));
    // WHEN barge shows the plan, copies and verifies
    for args in [vec!["init", "--dry-run"], vec!["init"], vec!["verify"]] {
        let (code, text) = run(barge().args(&args).args(["--source", &s, "--target", &t]));
        assert_eq!(code, 0, "{args:?}: {text}");
        // THEN no control character or override reaches the terminal, and the name is legible
        assert!(
            !text.chars().any(|c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{202e}'),
            "{args:?}: {text:?}"
        );
        if args == ["init", "--dry-run"] {
            assert!(text.contains("evil\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{202e}txt"), "{text}");
        }
    }
}

#[tokio::test]
async fn a_sync_is_paused_resumed_and_changes_tables_from_the_command_line() {
    // GIVEN a sync started with the WAL guard's thresholds
    let (src, dst) = (src18(), dst18());
    let src_db = src.create_db("cli_sync").await;
    src.run_sql(
        &src_db,
        "create table a (id int primary key, v text); insert into a select g, 'a' from generate_series(1, 500) g;
         create table b (id int primary key, v text); insert into b select g, 'b' from generate_series(1, 300) g;
         create table later (id int primary key, v text); insert into later select g, 'l' from generate_series(1, 200) g;",
    )
    .await;
    let dst_db = unique("cli_sync_copy");
    let (s, t) = (src.url(&src_db), dst.url(&dst_db));
    let id = format!("cli{}", std::process::id());
    let sync = |args: &[&str]| {
        let mut cmd = barge();
        cmd.args(args).args(["--sync-id", &id]).env("BARGE_SOURCE", &s).env("BARGE_TARGET", &t);
        run(&mut cmd)
    };
    let mut outputs = Vec::new();
    let started = sync(&["sync", "start", "--exclude-table", "later", "--wal-warn", "1GB", "--wal-limit", "4GB"]);
    assert_eq!(started.0, 0, "{}", started.1);
    outputs.push(started);
    // WHEN it is paused, THEN status says so and shows the WAL the source keeps (exit 0:
    // paused as asked), and changing its tables waits for a resume
    let paused = sync(&["sync", "pause"]);
    assert_eq!(paused.0, 0, "{}", paused.1);
    assert!(paused.1.contains(&format!("paused barge_{id}_0")), "{}", paused.1);
    let status = sync(&["sync", "status"]);
    assert_eq!(status.0, 0, "{}", status.1);
    assert!(status.1.contains("(paused)") && status.1.contains("source WAL kept for the slot"), "{}", status.1);
    let refused = sync(&["sync", "add", "--include-table", "later"]);
    assert_eq!(refused.0, 1, "{}", refused.1);
    assert!(refused.1.contains("barge sync resume"), "{}", refused.1);
    let json = sync(&["sync", "resume", "--output", "json"]);
    assert_eq!(json.0, 0, "{}", json.1);
    let line: serde_json::Value = serde_json::from_str(json.1.lines().next().unwrap()).unwrap();
    assert_eq!(line["event"], "resumed");
    assert_eq!(line["changed"][0], format!("barge_{id}_0"));
    outputs.extend([paused, status, refused, json]);
    // WHEN a table is added, one copied again and one removed
    let added = sync(&["sync", "add", "--include-table", "public.later"]);
    assert_eq!(added.0, 0, "{}", added.1);
    assert!(added.1.contains("added: public.later"), "{}", added.1);
    assert_eq!(count(&dst, &dst_db, "select count(*) from later").await, 200);
    dst.run_sql(&dst_db, "delete from a where id > 250").await;
    let resynced = sync(&["sync", "resync", "public.a"]);
    assert_eq!(resynced.0, 0, "{}", resynced.1);
    assert_eq!(count(&dst, &dst_db, "select count(*) from a").await, 500);
    let removed = sync(&["sync", "remove", "--table", "b", "--output", "json"]);
    assert_eq!(removed.0, 0, "{}", removed.1);
    assert!(removed.1.contains(r#""removed":["public.b"]"#), "{}", removed.1);
    let nothing = sync(&["sync", "remove", "--table", "nosuch*"]);
    assert_eq!(nothing.0, 2, "{}", nothing.1);
    outputs.extend([added, resynced, removed, nothing]);
    // WHEN the source's schema changes: status names the column and exits 1; apply-ddl
    // applies what adds, and names the statement for a rename (exit 1) until --destructive
    src.run_sql(&src_db, "alter table a add column w int default 7; alter table later rename column v to label").await;
    let changed = sync(&["sync", "status"]);
    assert_eq!(changed.0, 1, "{}", changed.1);
    assert!(changed.1.contains(r#"public.a: column "w" added (integer with a default)"#), "{}", changed.1);
    let waiting = sync(&["sync", "apply-ddl"]);
    assert_eq!(waiting.0, 1, "{}", waiting.1);
    assert!(waiting.1.contains(r#"applied: cli_sync"#) && waiting.1.contains(r#"column "w" added"#), "{}", waiting.1);
    assert!(waiting.1.contains(r#"RENAME COLUMN "v" TO "label";"#), "{}", waiting.1);
    let applied = sync(&["sync", "apply-ddl", "--destructive", "--output", "json"]);
    assert_eq!(applied.0, 0, "{}", applied.1);
    let line: serde_json::Value = serde_json::from_str(applied.1.lines().next().unwrap()).unwrap();
    assert_eq!(line["event"], "apply_ddl", "{}", applied.1);
    assert_eq!(line["applied"].as_array().unwrap().len(), 1, "{}", applied.1);
    assert_eq!(count(&dst, &dst_db, "select count(*) from a where w = 7").await, 500);
    outputs.extend([changed, waiting, applied]);
    // THEN the cutover compares what the sync carries, and nothing leaks a password
    src.run_sql(&src_db, "insert into later values (1001, 'streamed'); insert into b values (1001, 'not carried')")
        .await;
    let cut = sync(&["cutover", "--timeout", "60s"]);
    assert_eq!(cut.0, 0, "{}", cut.1);
    assert_eq!(count(&dst, &dst_db, "select count(*) from later").await, 201);
    assert_eq!(count(&dst, &dst_db, "select count(*) from b").await, 300);
    outputs.push(cut);
    for (_, text) in &outputs {
        assert_no_password(text, &[PASSWORD, PASSWORD_ENCODED]);
    }
}
