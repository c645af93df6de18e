//! The in-memory store against the store conformance suite (the same cases SQLite and
//! DynamoDB Local run in their crates), and the reaper's decisions and sweeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

barge_jobs_testkit::store_conformance!(async { barge_jobs_testkit::memory::MemoryStore::new() });

mod reaper {
    use barge_jobs::{
        Deadlines, Event, Job, JobStatus, JobStore, Launcher, Outcome, State, Timestamp,
        ports::Instance,
        reaper::{Decision, Policy, decide, sweep},
    };
    use barge_jobs_testkit::{
        conformance,
        memory::{MemoryLauncher, MemoryStore},
    };

    const MIN: i64 = 60;

    fn at(job: &Job, event: Event, seconds_ago: i64) -> Job {
        job.apply(&event, Deadlines::default(), Timestamp::now().plus_seconds(-seconds_ago)).unwrap()
    }

    /// A stored job that was launched and claimed `minutes` ago and is running.
    async fn running(store: &MemoryStore, launcher: &MemoryLauncher, minutes: i64) -> Job {
        let queued = conformance::job("alice", None, Timestamp::now().plus_seconds(-minutes * MIN));
        store.create(&queued, 100).await.unwrap();
        let instance = launcher.launch(&queued).await.unwrap();
        let launched = at(&queued, Event::Launched { instance_id: instance.clone() }, minutes * MIN);
        let claimed = at(&launched, Event::Claimed { instance_id: instance }, minutes * MIN);
        store.replace(&queued, &launched).await.unwrap();
        store.replace(&launched, &claimed).await.unwrap();
        claimed
    }

    #[test]
    fn decisions_follow_deadlines_heartbeats_and_cancel_requests() {
        let policy = Policy::default();
        let now = Timestamp::now();
        let queued = conformance::job("alice", None, now);
        assert_eq!(decide(&queued, &policy, now), Decision::Launch);
        assert_eq!(decide(&queued, &policy, now.plus_seconds(16 * MIN)), Decision::TimedOut);
        let launched = queued.apply(&Event::Launched { instance_id: "i-1".into() }, Deadlines::default(), now).unwrap();
        assert_eq!(decide(&launched, &policy, now.plus_seconds(5 * MIN)), Decision::Wait);
        assert!(
            matches!(decide(&launched, &policy, now.plus_seconds(11 * MIN)), Decision::WorkerLost(r) if r.contains("did not claim"))
        );
        let running = launched.apply(&Event::Claimed { instance_id: "i-1".into() }, Deadlines::default(), now).unwrap();
        assert_eq!(decide(&running, &policy, now.plus_seconds(MIN)), Decision::Wait);
        assert!(
            matches!(decide(&running, &policy, now.plus_seconds(3 * MIN)), Decision::WorkerLost(r) if r.contains("heartbeat"))
        );
        let beating = running.apply(&Event::Heartbeat, Deadlines::default(), now.plus_seconds(2 * MIN)).unwrap();
        assert_eq!(decide(&beating, &policy, now.plus_seconds(3 * MIN)), Decision::Wait);
        assert_eq!(decide(&beating, &policy, now.plus_seconds(25 * 3600)), Decision::TimedOut, "max_duration");
        let cancelling =
            beating.apply(&Event::CancelRequested, Deadlines::default(), now.plus_seconds(2 * MIN)).unwrap();
        assert_eq!(decide(&cancelling, &policy, now.plus_seconds(3 * MIN)), Decision::Wait, "grace period");
        assert_eq!(decide(&cancelling, &policy, now.plus_seconds(5 * MIN)), Decision::CancelUnanswered);
        let done = beating.apply(&Event::Finished(Outcome::Succeeded), Deadlines::default(), now).unwrap();
        assert_eq!(decide(&done, &policy, now.plus_seconds(48 * 3600)), Decision::Wait);
    }

    #[test]
    fn a_sync_job_gets_time_past_its_deadline_to_remove_its_replication() {
        // GIVEN a sync job whose worker heartbeats, one hour from its deadline
        let policy = Policy::default();
        let now = Timestamp::now();
        let mut queued = conformance::job("alice", None, now);
        queued.command = barge_jobs::Command::Sync;
        queued.options.max_duration = Some(3600);
        let d = Deadlines::default();
        let running = queued
            .apply(&Event::Launched { instance_id: "i-1".into() }, d, now)
            .and_then(|j| j.apply(&Event::Claimed { instance_id: "i-1".into() }, d, now))
            .unwrap();
        let beating_at = |seconds: i64| running.apply(&Event::Heartbeat, d, now.plus_seconds(seconds)).unwrap();
        // WHEN the deadline passes while the worker removes the slot (and keeps heartbeating)
        let cleaning = beating_at(3600 + 60);
        // THEN the reaper waits for it
        assert_eq!(decide(&cleaning, &policy, now.plus_seconds(3600 + 90)), Decision::Wait);
        // AND times the job out after the cleanup grace, or as soon as it goes silent: never a
        // new attempt past the deadline
        assert_eq!(decide(&cleaning, &policy, now.plus_seconds(3600 + 301)), Decision::TimedOut);
        let silent = beating_at(3500);
        assert_eq!(decide(&silent, &policy, now.plus_seconds(3600 + 130)), Decision::TimedOut);
        // AND a copy job has no such grace
        let mut copy = cleaning.clone();
        copy.command = barge_jobs::Command::Init;
        assert_eq!(decide(&copy, &policy, now.plus_seconds(3600 + 1)), Decision::TimedOut);
    }

    #[tokio::test]
    async fn a_sync_that_ends_without_its_worker_gets_a_cleanup_worker_until_nothing_is_left() {
        // GIVEN a sync job on its last attempt whose worker claimed it (objects may exist) …
        let (store, launcher) = (MemoryStore::new(), MemoryLauncher::new());
        let mut queued = conformance::job("alice", None, Timestamp::now().plus_seconds(-10 * MIN));
        queued.command = barge_jobs::Command::Sync;
        queued.max_attempts = 1;
        store.create(&queued, 100).await.unwrap();
        let instance = launcher.launch(&queued).await.unwrap();
        let launched = at(&queued, Event::Launched { instance_id: instance.clone() }, 10 * MIN);
        let claimed = at(&launched, Event::Claimed { instance_id: instance.clone() }, 10 * MIN);
        store.replace(&queued, &launched).await.unwrap();
        store.replace(&launched, &claimed).await.unwrap();
        assert_eq!(claimed.replication.as_ref().map(|r| r.sync_id.as_str()), Some(queued.id.as_str()));
        // … and then went silent
        let report = sweep(&store, &launcher, &Policy::default()).await.unwrap();
        assert_eq!(report.lost, vec![queued.id.clone()]);
        let failed = store.get(&queued.id).await.unwrap().unwrap();
        assert_eq!(failed.state(), barge_jobs::State::Failed);
        // WHEN the reaper sweeps the ended job
        assert!(failed.is_active(), "an ended job with replication left stays active");
        let report = sweep(&store, &launcher, &Policy::default()).await.unwrap();
        // THEN it launches a cleanup worker, as an attempt of its own, and keeps it alive
        assert_eq!(report.cleanups, vec![queued.id.clone()]);
        let cleaning = store.get(&queued.id).await.unwrap().unwrap();
        let cleaner = cleaning.replication.as_ref().and_then(|r| r.cleaner.clone()).unwrap();
        assert_ne!(cleaner, instance);
        let report = sweep(&store, &launcher, &Policy::default()).await.unwrap();
        assert!(report.cleanups.is_empty() && !report.terminated.contains(&cleaner), "{report:?}");
        // AND a failed cleanup is retried; a successful one ends it all
        let d = Deadlines::default();
        let now = Timestamp::now();
        let retry = cleaning
            .apply(&Event::CleanupFinished(Outcome::Failed { reason: "down".into(), retryable: true }), d, now)
            .unwrap();
        assert_eq!(decide(&retry, &Policy::default(), now), Decision::LaunchCleanup);
        let done = cleaning.apply(&Event::CleanupFinished(Outcome::Succeeded), d, now).unwrap();
        assert!(done.replication.is_none() && !done.is_active());
        assert_eq!(decide(&done, &Policy::default(), now), Decision::Wait);
        // AND after as many cleanups as attempts, the job records what may be left
        let mut exhausted = retry.clone();
        exhausted.replication.as_mut().unwrap().cleanups = Policy::default().deadlines.max_attempts;
        assert_eq!(decide(&exhausted, &Policy::default(), now), Decision::AbandonCleanup);
        let given_up = exhausted.apply(&Event::CleanupAbandoned, d, now).unwrap();
        let leftover = given_up.leftover.clone().unwrap();
        assert!(
            leftover.contains(&format!("barge sync stop --sync-id {}", queued.id)) && leftover.contains("down"),
            "{leftover}"
        );
        assert!(!given_up.is_active());
    }

    #[test]
    fn a_worker_that_removed_its_replication_needs_no_cleanup() {
        let d = Deadlines::default();
        let now = Timestamp::now();
        let mut job = conformance::job("alice", None, now);
        job.command = barge_jobs::Command::Sync;
        let running = job
            .apply(&Event::Launched { instance_id: "i-1".into() }, d, now)
            .and_then(|j| j.apply(&Event::Claimed { instance_id: "i-1".into() }, d, now))
            .unwrap();
        assert!(running.replication.is_some());
        let progress = barge_jobs::Progress { replication_removed: true, ..barge_jobs::Progress::default() };
        let reported = running.apply(&Event::Progress(Box::new(progress)), d, now).unwrap();
        let cancelled = reported.apply(&Event::Finished(Outcome::Cancelled), d, now).unwrap();
        assert!(cancelled.replication.is_none() && !cancelled.is_active());
        // A copy job never has any.
        let copy = conformance::job("alice", None, now)
            .apply(&Event::Launched { instance_id: "i-1".into() }, d, now)
            .and_then(|j| j.apply(&Event::Claimed { instance_id: "i-1".into() }, d, now))
            .unwrap();
        assert!(copy.replication.is_none());
    }

    #[tokio::test]
    async fn a_silent_worker_is_replaced_and_its_instance_terminated() {
        let (store, launcher) = (MemoryStore::new(), MemoryLauncher::new());
        let job = running(&store, &launcher, 5).await;
        let old = job.instance_id.clone().unwrap();
        let report = sweep(&store, &launcher, &Policy::default()).await.unwrap();
        assert_eq!(report.lost, vec![job.id.clone()]);
        assert_eq!(report.launched, vec![job.id.clone()]);
        assert!(report.terminated.contains(&old));
        let now = store.get(&job.id).await.unwrap().unwrap();
        assert_eq!((now.state(), now.attempt), (State::Launching, 2));
        assert_ne!(now.instance_id.as_deref(), Some(old.as_str()));
        // A second sweep right after changes nothing.
        let again = sweep(&store, &launcher, &Policy::default()).await.unwrap();
        assert_eq!(again, Default::default());
    }

    #[tokio::test]
    async fn the_last_attempt_fails_and_unanswered_cancels_and_overruns_end_the_job() {
        let (store, launcher) = (MemoryStore::new(), MemoryLauncher::new());
        // GIVEN a job on its last attempt whose worker went silent
        let mut last = running(&store, &launcher, 5).await;
        let stored = last.clone();
        last.attempt = last.max_attempts;
        last.revision += 1;
        store.replace(&stored, &last).await.unwrap();
        // AND a job whose owner cancelled 3 minutes ago, with a worker still heartbeating
        let cancelled = running(&store, &launcher, 10).await;
        let flagged = at(&cancelled, Event::CancelRequested, 3 * MIN);
        let beating = at(&flagged, Event::Heartbeat, 0);
        store.replace(&cancelled, &flagged).await.unwrap();
        store.replace(&flagged, &beating).await.unwrap();
        // AND a job running past its max_duration
        let long = running(&store, &launcher, 25 * 60).await;
        let beating_long = at(&long, Event::Heartbeat, 0);
        store.replace(&long, &beating_long).await.unwrap();
        // WHEN the reaper sweeps
        let report = sweep(&store, &launcher, &Policy::default()).await.unwrap();
        // THEN each ends as it should, and every worker is terminated
        let state = |job: &Job| {
            let store = &store;
            let id = job.id.clone();
            async move { store.get(&id).await.unwrap().unwrap().status }
        };
        assert!(matches!(state(&last).await, JobStatus::Failed { retryable: true, .. }));
        assert_eq!(state(&cancelled).await, JobStatus::Cancelled);
        assert_eq!(state(&long).await, JobStatus::TimedOut);
        for job in [&last, &cancelled, &long] {
            assert!(report.terminated.contains(job.instance_id.as_ref().unwrap()), "{report:?}");
        }
        assert!(report.launched.is_empty());
        assert!(launcher.instances().await.unwrap().is_empty());
        assert_eq!(store.active_count().await.unwrap(), 0, "capacity released");
    }

    #[tokio::test]
    async fn an_instance_launched_moments_ago_is_not_an_orphan_yet() {
        // GIVEN a queued job whose worker was just launched, its id not yet on the job (the
        // coordinator writes it after RunInstances answers)
        let (store, launcher) = (MemoryStore::new(), MemoryLauncher::new());
        let job = conformance::job("alice", None, Timestamp::now());
        store.create(&job, 100).await.unwrap();
        launcher.add_stray(Instance {
            id: "i-00000000000000fresh".into(),
            job: Some(job.id.clone()),
            launched_at: Some(Timestamp::now().plus_seconds(-20)),
        });
        // AND an unknown instance launched long ago
        launcher.add_stray(Instance {
            id: "i-0000000000000old".into(),
            job: None,
            launched_at: Some(Timestamp::now().plus_seconds(-3600)),
        });
        // WHEN the reaper sweeps
        let report = sweep(&store, &launcher, &Policy::default()).await.unwrap();
        // THEN the fresh instance lives; the old orphan does not
        assert!(!report.terminated.contains(&"i-00000000000000fresh".to_string()), "{report:?}");
        assert!(report.terminated.contains(&"i-0000000000000old".to_string()), "{report:?}");
        // AND once past the grace, the same instance is an orphan
        let later = Policy { launch_grace: 10, ..Policy::default() };
        let report = sweep(&store, &launcher, &later).await.unwrap();
        assert!(report.terminated.contains(&"i-00000000000000fresh".to_string()), "{report:?}");
    }

    #[tokio::test]
    async fn orphans_and_queued_jobs_are_handled() {
        let (store, launcher) = (MemoryStore::new(), MemoryLauncher::new());
        // A job whose launch failed for a retryable reason waits queued; the reaper launches it.
        let queued = conformance::job("alice", None, Timestamp::now());
        store.create(&queued, 100).await.unwrap();
        // A worker whose job ended two minutes ago and never powered off, and an instance no
        // job knows.
        let done = running(&store, &launcher, 5).await;
        let finished = at(&done, Event::Finished(Outcome::Succeeded), 2 * MIN);
        store.replace(&done, &finished).await.unwrap();
        launcher.add_stray(Instance {
            id: "i-0000000000000dead".into(),
            job: None,
            launched_at: Some(Timestamp::now().plus_seconds(-600)),
        });
        let report = sweep(&store, &launcher, &Policy::default()).await.unwrap();
        assert_eq!(report.launched, vec![queued.id.clone()]);
        assert!(report.terminated.contains(done.instance_id.as_ref().unwrap()));
        assert!(report.terminated.contains(&"i-0000000000000dead".to_string()));
        let live = launcher.instances().await.unwrap();
        assert_eq!(live.len(), 1, "only the newly launched worker runs: {live:?}");
        assert_eq!(live[0].job.as_ref(), Some(&queued.id));
    }

    #[tokio::test]
    async fn a_worker_whose_job_just_ended_gets_time_to_ship_its_logs_and_stop() {
        let (store, launcher) = (MemoryStore::new(), MemoryLauncher::new());
        // GIVEN a worker that reported its outcome a moment ago and is still shipping its logs
        let done = running(&store, &launcher, 5).await;
        let finished = at(&done, Event::Finished(Outcome::Cancelled), 1);
        store.replace(&done, &finished).await.unwrap();
        let instance = done.instance_id.clone().unwrap();
        // WHEN the reaper sweeps THEN it leaves it alone
        let report = sweep(&store, &launcher, &Policy::default()).await.unwrap();
        assert!(report.terminated.is_empty(), "{report:?}");
        assert!(launcher.instances().await.unwrap().iter().any(|i| i.id == instance));
        // AND once the grace has passed without the worker stopping, it is terminated
        let patience = Policy { finish_grace: 0, ..Policy::default() };
        let report = sweep(&store, &launcher, &patience).await.unwrap();
        assert_eq!(report.terminated, vec![instance]);
        assert!(launcher.instances().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_heartbeat_that_lands_first_wins_over_the_reaper() {
        let (store, launcher) = (MemoryStore::new(), MemoryLauncher::new());
        let job = running(&store, &launcher, 5).await;
        // The job looked silent, but the worker heartbeats before the sweep writes (the sweep
        // re-decides on every fresh read inside its conditional transition).
        let decision = decide(&job, &Policy::default(), Timestamp::now());
        assert!(matches!(decision, Decision::WorkerLost(_)));
        let beat = at(&job, Event::Heartbeat, 0);
        store.replace(&job, &beat).await.unwrap();
        let report = sweep(&store, &launcher, &Policy::default()).await.unwrap();
        assert!(report.lost.is_empty() && report.terminated.is_empty(), "{report:?}");
        assert_eq!(store.get(&job.id).await.unwrap().unwrap().state(), State::Running);
    }
}
