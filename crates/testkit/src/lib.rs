//! Test harness: real PostgreSQL clusters, started on first use by `scripts/pg` (initdb as an
//! unprivileged user, loopback ports, password authentication, wal_level=logical), and a
//! fresh, uniquely named database for each test. Clusters stay up between test processes
//! (nextest runs each test in its own), so only the first test pays for starting them;
//! `make test` stops them at the end.

// A harness: a failed setup step is a failed test, so it panics with the reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use tokio_postgres::{Client, NoTls};

/// The superuser password of every test cluster; it needs percent-encoding in a URL.
pub const PASSWORD: &str = "b@rge;pa$s:w/rd";
/// The same, percent-encoded, as it appears in URLs.
pub const PASSWORD_ENCODED: &str = "b%40rge%3Bpa%24s%3Aw%2Frd";

/// A running cluster.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Its name under `scripts/pg`.
    pub name: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its major version.
    pub version: u32,
}

/// The repository root. Cargo and nextest set `CARGO_MANIFEST_DIR` when they run a test; it
/// wins over the compile-time path, which is stale when a shared target directory holds a
/// build made from another clone.
pub fn repo_root() -> PathBuf {
    let manifest =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    // Test binaries of every package run from their own directory; the root holds `scripts/`.
    manifest.ancestors().find(|dir| dir.join("scripts/pg").is_file()).map_or(manifest.join("../.."), Path::to_path_buf)
}

fn scripts_pg() -> PathBuf {
    repo_root().join("scripts/pg")
}

/// Starts (or finds running) the cluster `name` of PostgreSQL `version` (18 or 15).
pub fn cluster(name: &str, version: u32) -> Cluster {
    start(name, version, false, &[])
}

/// A PostgreSQL 18 cluster serving TLS with a certificate for `localhost` only, signed by a
/// CA of its own ([`Cluster::tls_ca`]).
pub fn tls_cluster(name: &str) -> Cluster {
    start(name, 18, true, &[])
}

/// A PostgreSQL 18 target with a small lock table: `max_locks_per_transaction=10` and
/// `max_connections=40`, room for 400 locked objects across all sessions (PostgreSQL's
/// defaults give 6,400), so a test can copy a schema larger than the lock table quickly.
pub fn small_lock_table() -> Cluster {
    start("dst18locks", 18, false, &["-c", "max_locks_per_transaction=10", "-c", "max_connections=40"])
}

fn start(name: &str, version: u32, tls: bool, settings: &[&str]) -> Cluster {
    static STARTED: OnceLock<Mutex<Vec<Cluster>>> = OnceLock::new();
    let started = STARTED.get_or_init(|| Mutex::new(Vec::new()));
    let mut started = started.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = started.iter().find(|c| c.name == name) {
        return c.clone();
    }
    let mut command = Command::new(scripts_pg());
    command.args(["start", name, &version.to_string()]).args(settings);
    if tls {
        command.env("BARGE_PG_TLS", "1");
    }
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", scripts_pg().display()));
    assert!(
        output.status.success(),
        "scripts/pg start {name} {version} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let port: u16 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("scripts/pg printed no port: {}", String::from_utf8_lossy(&output.stdout)));
    let cluster = Cluster { name: name.to_owned(), port, version };
    started.push(cluster.clone());
    cluster
}

/// The PostgreSQL 18 source cluster.
pub fn src18() -> Cluster {
    cluster("src18", 18)
}
/// The PostgreSQL 18 target cluster.
pub fn dst18() -> Cluster {
    cluster("dst18", 18)
}
/// Debian's PostgreSQL 15, as an old source.
pub fn src15() -> Cluster {
    cluster("src15", 15)
}

/// SQL creating `slow(n bigint) → true`, which sleeps `seconds` every 1,000th `n` in any
/// database but `source_db`: a `CHECK (slow(id))` makes a table slow to copy into a target
/// and nothing else.
pub fn slow_function(source_db: &str, seconds: f64) -> String {
    format!(
        "create function slow(n bigint) returns boolean language plpgsql as $$
         begin
           if n % 1000 = 0 and current_database() <> '{source_db}' then perform pg_sleep({seconds}); end if;
           return true;
         end $$;"
    )
}

/// A name no other test uses: `prefix_<pid>_<n>_<time>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}_{}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), nanos % 100_000)
}

impl Cluster {
    /// A superuser URL for `db`, with the percent-encoded password. The clusters have no
    /// TLS, so the URL says `sslmode=disable`: barge sends a password unencrypted only when
    /// told to.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres:{PASSWORD_ENCODED}@127.0.0.1:{}/{db}?sslmode=disable", self.port)
    }

    /// A superuser URL through another host name, with extra query parameters.
    pub fn url_via(&self, host: &str, db: &str, query: &str) -> String {
        format!("postgres://postgres:{PASSWORD_ENCODED}@{host}:{}/{db}?{query}", self.port)
    }

    /// The CA certificate of a [`tls_cluster`].
    pub fn tls_ca(&self) -> PathBuf {
        self.dir().join("tls/ca.pem")
    }

    /// The server's log so far (every test's: search it for what must never be there).
    pub fn server_log(&self) -> String {
        let bytes = std::fs::read(self.dir().join("server.log")).expect("read the server log");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn dir(&self) -> PathBuf {
        let out = Command::new(scripts_pg()).arg("root").output().expect("scripts/pg root");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("clusters").join(&self.name)
    }

    /// A URL for another user and password.
    pub fn url_as(&self, user: &str, password: &str, db: &str) -> String {
        let encode = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
        format!("postgres://{user}:{}@127.0.0.1:{}/{db}?sslmode=disable", encode(password), self.port)
    }

    /// The directory of this version's server and client tools.
    pub fn bin(&self) -> PathBuf {
        let out = Command::new(scripts_pg()).args(["bin", &self.version.to_string()]).output().expect("scripts/pg bin");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    }

    /// Connects as the superuser.
    pub async fn connect(&self, db: &str) -> Client {
        let (client, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .password(PASSWORD)
            .dbname(db)
            .connect(NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {} {db}: {e}", self.name));
        tokio::spawn(conn);
        client
    }

    /// Creates a fresh database and returns its name.
    pub async fn create_db(&self, prefix: &str) -> String {
        let name = unique(prefix);
        self.connect("postgres")
            .await
            .batch_execute(&format!("create database {name}"))
            .await
            .expect("create database");
        name
    }

    /// Runs a SQL script (plain SQL, no psql meta-commands) in `db`.
    pub async fn run_sql(&self, db: &str, sql: &str) {
        self.connect(db).await.batch_execute(sql).await.unwrap_or_else(|e| panic!("script failed in {db}: {e:?}"));
    }

    /// Creates a database loaded with the fidelity fixture (every object kind barge carries).
    pub async fn fidelity_db(&self, prefix: &str) -> String {
        let db = self.create_db(prefix).await;
        self.run_sql(db.as_str(), &fidelity_sql()).await;
        db
    }

    /// Makes sure roles the fixtures grant to exist on this cluster.
    pub async fn ensure_fixture_roles(&self) {
        self.run_sql(
            "postgres",
            "do $$ begin if not exists (select from pg_roles where rolname = 'barge_lo_reader') then \
             create role barge_lo_reader; end if; exception when duplicate_object then null; end $$",
        )
        .await;
    }

    /// `pg_dump --schema-only` of `db`, normalised for comparing two databases: PostgreSQL 18's
    /// random `\restrict` keys and the version banner removed.
    pub fn schema_dump(&self, db: &str) -> String {
        let tools = src18().bin();
        let out = Command::new(tools.join("pg_dump"))
            .arg("--schema-only")
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGPASSWORD", PASSWORD)
            .env("PGDATABASE", db)
            .output()
            .expect("run pg_dump");
        assert!(out.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict") && !l.starts_with("-- Dumped from")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Per-table row counts and content hashes of `db`, independent of barge's own verify:
    /// every user table's rows as text, sorted, hashed.
    pub async fn table_fingerprints(&self, db: &str) -> Vec<(String, i64, String)> {
        let client = self.connect(db).await;
        client
            .batch_execute(
                "set extra_float_digits = 3; set datestyle = 'ISO'; set timezone = 'UTC'; set search_path = ''",
            )
            .await
            .expect("session");
        let tables = client
            .query(
                "select quote_ident(n.nspname) || '.' || quote_ident(c.relname) from pg_class c \
                 join pg_namespace n on n.oid = c.relnamespace \
                 where c.relkind = 'r' and n.nspname not in ('pg_catalog', 'information_schema') \
                   and n.nspname !~ '^pg_toast' order by 1",
                &[],
            )
            .await
            .expect("list tables");
        let mut out = Vec::new();
        for row in tables {
            let table: String = row.get(0);
            let r = client
                .query_one(
                    &format!("select count(*), coalesce(md5(string_agg(t::text, '|' order by t::text)), '') from only {table} t"),
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("fingerprint {table}: {e}"));
            out.push((table, r.get(0), r.get(1)));
        }
        out
    }
}

/// SQL creating `count` small tables `t1`…`tN` in `public`, each with an identity key, a
/// serial column, a check, a comment, a trigger (function `touch`) and two rows: five locked
/// objects per table when created in one transaction (table, two sequences, TOAST table and
/// index), several schema entries each.
pub fn small_tables_sql(count: usize) -> String {
    format!(
        "create function touch() returns trigger language plpgsql as $$ begin return new; end $$;
         do $$ begin
           for i in 1..{count} loop
             execute format('create table t%s (id int generated always as identity primary key, n serial, v text check (v <> ''''))', i);
             execute format('comment on table t%s is ''table %s''', i, i);
             execute format('create trigger touch before update on t%s for each row execute function touch()', i);
             execute format('insert into t%s (v) values (''a''), (''b'')', i);
           end loop;
         end $$;
         analyze;"
    )
}

/// The fidelity fixture's SQL.
pub fn fidelity_sql() -> String {
    std::fs::read_to_string(repo_root().join("crates/engine/tests/fixtures/fidelity.sql")).expect("read fidelity.sql")
}

/// The endpoint URL of a local AWS stand-in, started by `scripts/aws-local` on first use
/// (once per machine; `scripts/test` stops it): `"dynamodb"` (DynamoDB Local) or `"moto"`
/// (moto server for EC2, KMS, SSM, IAM).
pub fn aws_local(service: &str) -> String {
    static STARTED: OnceLock<Mutex<Vec<(String, String)>>> = OnceLock::new();
    let started = STARTED.get_or_init(|| Mutex::new(Vec::new()));
    let mut started = started.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, url)) = started.iter().find(|(name, _)| name == service) {
        return url.clone();
    }
    let script = repo_root().join("scripts/aws-local");
    let output = Command::new(&script)
        .args(["start", service])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "scripts/aws-local start {service} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let url = String::from_utf8_lossy(&output.stdout).trim().lines().last().unwrap_or_default().to_string();
    assert!(url.starts_with("http://"), "scripts/aws-local printed {url:?}");
    started.push((service.to_string(), url.clone()));
    url
}
