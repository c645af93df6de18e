//! The store conformance suite: the same cases run unchanged against
//! every [`JobStore`]. An adapter's tests call [`store_conformance!`](crate::store_conformance)
//! with an expression that makes a fresh, empty store.

use std::{collections::HashSet, sync::Arc};

use barge_jobs::{
    job::{Deadlines, Event, Job, JobId, Outcome, Phase, State, Timestamp},
    ports::{Created, JobStore, StoreError},
    spec::{Command, ConnUrl, Filter, JobSpec, Options},
};

/// The password every job in the suite carries, for adapters' secret-grepping tests.
pub const PASSWORD: &str = "s3cr;et$pw`x";

/// A spec whose URLs hold [`PASSWORD`] (percent-encoded).
pub fn spec() -> JobSpec {
    JobSpec {
        command: Command::Init,
        source_url: ConnUrl::new("postgres://app:s3cr%3Bet%24pw%60x@source.example.com:5432/shop"),
        target_url: ConnUrl::new("postgres://app:s3cr%3Bet%24pw%60x@target.example.com:5432/shop"),
        filter: Filter { exclude_tables: vec!["public.logs".into()], ..Filter::default() },
        options: Options { jobs: Some(4), ..Options::default() },
    }
}

/// A queued job of `owner`, created at `now`, its credentials "sealed" as opaque bytes.
pub fn job(owner: &str, key: Option<&str>, now: Timestamp) -> Job {
    let id = key.map_or_else(JobId::random, |key| JobId::for_key(owner, key));
    Job::new(id, owner, &spec(), b"opaque sealed bytes".to_vec(), key, Deadlines::default(), now)
}

fn running(job: &Job, now: Timestamp) -> (Job, Job) {
    let launched = job.apply(&Event::Launched { instance_id: "i-0123456789abcdef0".into() }, Deadlines::default(), now);
    let launched = launched.unwrap_or_else(|e| panic!("launch: {e}"));
    let claimed =
        launched.apply(&Event::Claimed { instance_id: "i-0123456789abcdef0".into() }, Deadlines::default(), now);
    (launched, claimed.unwrap_or_else(|e| panic!("claim: {e}")))
}

async fn stored_running<S: JobStore>(store: &S, owner: &str, now: Timestamp) -> Job {
    let queued = job(owner, None, now);
    store.create(&queued, 1000).await.unwrap_or_else(|e| panic!("create: {e}"));
    let (launched, claimed) = running(&queued, now);
    store.replace(&queued, &launched).await.unwrap_or_else(|e| panic!("replace: {e}"));
    store.replace(&launched, &claimed).await.unwrap_or_else(|e| panic!("replace: {e}"));
    claimed
}

/// A job created, read back whole, and unknown ids not found.
pub async fn create_and_get<S: JobStore>(store: S) {
    let now = Timestamp::now();
    let job = job("alice", None, now);
    let created = store.create(&job, 10).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(created, Created::New(job.clone()));
    let read = store.get(&job.id).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.as_ref(), Some(&job), "a stored job reads back identical");
    assert_eq!(store.get(&JobId::random()).await.unwrap_or_else(|e| panic!("{e}")), None);
    // Progress and every status round-trip too.
    let (_, mut running) = running(&job, now);
    running.progress = Some(barge_jobs::progress::Progress {
        phase: Some(Phase::Copying),
        bytes_copied: 1 << 40,
        bytes_per_second: 123.5,
        eta_seconds: Some(0.25),
        running: vec![barge_jobs::progress::TableProgress {
            database: "shop".into(),
            table: "public.\"odd name\"".into(),
            part: 2,
            parts: 4,
            bytes: 7,
            bytes_estimated: 9,
        }],
        message: Some("ünïcødé".into()),
        ..Default::default()
    });
    store.replace(&job, &Job { revision: 1, ..running.clone() }).await.unwrap_or_else(|e| panic!("{e}"));
    let read = store.get(&job.id).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read, Some(Job { revision: 1, ..running }));
}

/// A second create with the same id returns the first job, unchanged.
pub async fn create_is_idempotent<S: JobStore>(store: S) {
    let now = Timestamp::now();
    let first = job("alice", Some("key-1"), now);
    assert!(matches!(store.create(&first, 10).await, Ok(Created::New(_))));
    let mut again = job("alice", Some("key-1"), now.plus_seconds(5));
    again.options.jobs = Some(8);
    match store.create(&again, 10).await {
        Ok(Created::Existing(existing)) => assert_eq!(existing, first),
        other => panic!("{other:?}"),
    }
    // Another owner with the same key gets a job of their own.
    assert!(matches!(store.create(&job("bob", Some("key-1"), now), 10).await, Ok(Created::New(_))));
    assert_eq!(store.active_count().await.unwrap_or_else(|e| panic!("{e}")), 2);
}

/// Replace is conditional on the revision and state it was computed from; a late writer
/// cannot resurrect a finished job.
pub async fn replace_is_conditional<S: JobStore>(store: S) {
    let now = Timestamp::now();
    let job = stored_running(&store, "alice", now).await;
    let heartbeat = job.apply(&Event::Heartbeat, Deadlines::default(), now).unwrap_or_else(|e| panic!("{e}"));
    store.replace(&job, &heartbeat).await.unwrap_or_else(|e| panic!("{e}"));
    // A writer still holding the old revision loses.
    let stale = job.apply(&Event::Phase(Phase::Copying), Deadlines::default(), now).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(store.replace(&job, &stale).await, Err(StoreError::Conflict)));
    let done = heartbeat
        .apply(&Event::Finished(Outcome::Succeeded), Deadlines::default(), now)
        .unwrap_or_else(|e| panic!("{e}"));
    store.replace(&heartbeat, &done).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(store.replace(&heartbeat, &stale).await, Err(StoreError::Conflict)));
    let read = store.get(&job.id).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read.map(|j| j.state()), Some(State::Succeeded));
    // Replacing a job that was never stored is a conflict, not an insert.
    let ghost = crate::conformance::job("alice", None, now);
    let launched = ghost.apply(&Event::Launched { instance_id: "i-1".into() }, Deadlines::default(), now);
    let launched = launched.unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(store.replace(&ghost, &launched).await, Err(StoreError::Conflict)));
    assert_eq!(store.get(&ghost.id).await.unwrap_or_else(|e| panic!("{e}")), None);
}

/// Sixteen writers race to finish the same job differently: exactly one wins.
pub async fn concurrent_transitions_have_one_winner<S: JobStore>(store: S) {
    let store = Arc::new(store);
    let now = Timestamp::now();
    let job = stored_running(store.as_ref(), "alice", now).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (store, job) = (Arc::clone(&store), job.clone());
            tokio::spawn(async move {
                let outcome = match i % 4 {
                    0 => Outcome::Succeeded,
                    1 => Outcome::Failed { reason: format!("writer {i}"), retryable: false },
                    2 => Outcome::Cancelled,
                    _ => Outcome::TimedOut,
                };
                let next = job.apply(&Event::Finished(outcome), Deadlines::default(), now);
                let next = next.unwrap_or_else(|e| panic!("{e}"));
                match store.replace(&job, &next).await {
                    Ok(()) => Some(next),
                    Err(StoreError::Conflict) => None,
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        if let Some(next) = task.await.unwrap_or_else(|e| panic!("{e}")) {
            winners.push(next);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins");
    let stored = store.get(&job.id).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored.as_ref(), winners.first());
    assert_eq!(store.active_count().await.unwrap_or_else(|e| panic!("{e}")), 0, "capacity released once");
}

/// 200 concurrent creates, 50 of them with the same idempotency key: 151 jobs, one of
/// them made by exactly one of the 50, and the other 49 get that same job.
pub async fn concurrent_creates_with_shared_keys<S: JobStore>(store: S) {
    let store = Arc::new(store);
    let now = Timestamp::now();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let job = if i % 4 == 0 { job("alice", Some("shared"), now) } else { job("alice", None, now) };
                (i % 4 == 0, store.create(&job, 1000).await.unwrap_or_else(|e| panic!("create {i}: {e}")))
            })
        })
        .collect();
    let (mut shared_ids, mut shared_new, mut ids) = (HashSet::new(), 0, HashSet::new());
    for task in tasks {
        let (shared, created) = task.await.unwrap_or_else(|e| panic!("{e}"));
        ids.insert(created.job().id.clone());
        if shared {
            shared_ids.insert(created.job().id.clone());
            shared_new += usize::from(matches!(created, Created::New(_)));
        } else {
            assert!(matches!(created, Created::New(_)));
        }
    }
    assert_eq!(shared_ids.len(), 1, "the 50 creates sharing a key share one job");
    assert_eq!(shared_new, 1, "exactly one of them created it");
    assert_eq!(ids.len(), 151);
    assert_eq!(store.active_count().await.unwrap_or_else(|e| panic!("{e}")), 151);
    assert_eq!(store.active().await.unwrap_or_else(|e| panic!("{e}")).len(), 151);
}

/// The active-job limit is exact, replays still answer at the limit, and every terminal
/// transition gives capacity back (docs/design-notes.md 3, 4).
pub async fn active_limit_is_exact_and_released<S: JobStore>(store: S) {
    let store = Arc::new(store);
    let now = Timestamp::now();
    let jobs: Vec<Job> = (0..3).map(|i| job("alice", Some(&format!("k{i}")), now.plus_seconds(i))).collect();
    for job in &jobs {
        store.create(job, 3).await.unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(matches!(store.create(&job("bob", None, now), 3).await, Err(StoreError::LimitReached { limit: 3 })));
    assert!(matches!(store.create(&jobs[1], 3).await, Ok(Created::Existing(_))), "a replay answers at the limit");
    // Racing creates for the last free slot: one wins.
    let cancelled = jobs[0].apply(&Event::CancelRequested, Deadlines::default(), now).unwrap_or_else(|e| panic!("{e}"));
    store.replace(&jobs[0], &cancelled).await.unwrap_or_else(|e| panic!("{e}"));
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.create(&job("carol", None, now), 3).await })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap_or_else(|e| panic!("{e}")) {
            Ok(Created::New(_)) => won += 1,
            Err(StoreError::LimitReached { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one create takes the freed slot");
    assert_eq!(store.active_count().await.unwrap_or_else(|e| panic!("{e}")), 3);
    // Every kind of terminal transition releases capacity, from every active state.
    let active = store.active().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(active.len(), 3);
    assert!(active.windows(2).all(|w| w[0].created_at <= w[1].created_at), "oldest first");
    assert!(active.iter().all(|j| j.id != jobs[0].id), "terminal jobs leave the active index");
    let launched = active[0]
        .apply(&Event::Launched { instance_id: "i-1".into() }, Deadlines::default(), now)
        .unwrap_or_else(|e| panic!("{e}"));
    store.replace(&active[0], &launched).await.unwrap_or_else(|e| panic!("{e}"));
    let mut overdue = launched.clone();
    overdue.deadline = Some(now.plus_seconds(-1));
    let timed_out = overdue.apply(&Event::DeadlinePassed, Deadlines::default(), now).unwrap_or_else(|e| panic!("{e}"));
    store.replace(&launched, &timed_out).await.unwrap_or_else(|e| panic!("{e}"));
    let failed = active[1]
        .apply(&Event::LaunchFailed { reason: "no such template".into(), retryable: false }, Deadlines::default(), now)
        .unwrap_or_else(|e| panic!("{e}"));
    store.replace(&active[1], &failed).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.active_count().await.unwrap_or_else(|e| panic!("{e}")), 1);
    assert_eq!(store.active().await.unwrap_or_else(|e| panic!("{e}")).len(), 1);
    for i in 0..2 {
        store.create(&job("dave", None, now.plus_seconds(10 + i)), 3).await.unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(matches!(store.create(&job("dave", None, now), 3).await, Err(StoreError::LimitReached { .. })));
}

/// An owner's jobs, newest first, in pages, optionally by state; nobody else's.
pub async fn list_pages_newest_first<S: JobStore>(store: S) {
    let now = Timestamp::now();
    let mut mine = Vec::new();
    for i in 0..7 {
        let new = job("alice", None, now.plus_seconds(i));
        store.create(&new, 100).await.unwrap_or_else(|e| panic!("{e}"));
        mine.push(new);
        store.create(&job("bob", None, now.plus_seconds(i)), 100).await.unwrap_or_else(|e| panic!("{e}"));
    }
    // Two jobs created in the same millisecond still page without loss or repeat.
    let twin = job("alice", None, now.plus_seconds(3));
    store.create(&twin, 100).await.unwrap_or_else(|e| panic!("{e}"));
    mine.push(twin);
    let (mut seen, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let page = store.list("alice", None, 3, cursor.as_deref()).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(page.jobs.len() <= 3);
        seen.extend(page.jobs);
        pages += 1;
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10, "pagination ends");
    }
    assert_eq!(seen.len(), mine.len(), "every job once: {:?}", seen.iter().map(|j| &j.id).collect::<Vec<_>>());
    assert!(seen.iter().all(|j| j.owner == "alice"));
    assert!(seen.windows(2).all(|w| w[0].created_at >= w[1].created_at), "newest first");
    let unique: HashSet<_> = seen.iter().map(|j| j.id.clone()).collect();
    assert_eq!(unique.len(), seen.len());
    // By state.
    let cancelled = mine[2].apply(&Event::CancelRequested, Deadlines::default(), now).unwrap_or_else(|e| panic!("{e}"));
    store.replace(&mine[2], &cancelled).await.unwrap_or_else(|e| panic!("{e}"));
    let page = store.list("alice", Some(State::Cancelled), 10, None).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), vec![mine[2].id.clone()]);
    assert_eq!(page.next, None);
    let page = store.list("alice", Some(State::Queued), 100, None).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.jobs.len(), mine.len() - 1);
    let page = store.list("nobody", None, 10, None).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(page.jobs.is_empty() && page.next.is_none());
}

/// Jobs past their retention are hidden from every read, though the store's TTL may not
/// have deleted them yet (docs/design-notes.md 7).
pub async fn expired_jobs_are_hidden<S: JobStore>(store: S) {
    let long_ago = Timestamp::now().plus_seconds(-40 * 24 * 3600);
    let old = job("alice", Some("old"), long_ago);
    store.create(&old, 10).await.unwrap_or_else(|e| panic!("{e}"));
    let cancelled =
        old.apply(&Event::CancelRequested, Deadlines::default(), long_ago).unwrap_or_else(|e| panic!("{e}"));
    store.replace(&old, &cancelled).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(cancelled.is_expired(Timestamp::now()));
    assert_eq!(store.get(&old.id).await.unwrap_or_else(|e| panic!("{e}")), None);
    let page = store.list("alice", None, 10, None).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(page.jobs.is_empty());
    assert!(store.active().await.unwrap_or_else(|e| panic!("{e}")).is_empty());
    // Its idempotency key cannot silently make a second job with the same id.
    assert!(matches!(
        store.create(&job("alice", Some("old"), Timestamp::now()), 10).await,
        Err(StoreError::KeyExpired)
    ));
}

/// Generates one `#[tokio::test]` per conformance case; `$make` is an expression whose
/// `.await` gives a fresh, empty store.
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::store_conformance!(@cases $make;
            create_and_get,
            create_is_idempotent,
            replace_is_conditional,
            concurrent_transitions_have_one_winner,
            concurrent_creates_with_shared_keys,
            active_limit_is_exact_and_released,
            list_pages_newest_first,
            expired_jobs_are_hidden,
        );
    };
    (@cases $make:expr; $($case:ident,)*) => {
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    $crate::conformance::$case($make.await).await;
                }
            )*
        }
    };
}
