//! In-memory adapters of every port, for tests. They keep the
//! semantics of the real ones: conditional replace, exact active count, idempotent create
//! and launch, job-bound sealing.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use barge_jobs::{
    job::{Job, JobId, State, Timestamp},
    ports::{
        Created, Instance, JobStore, LaunchError, Launcher, LogError, LogLine, LogPage, LogSource, Page, SealError,
        Sealer, StoreError, keyset_cursor, parse_keyset_cursor,
    },
    spec::Credentials,
};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Jobs in a map.
#[derive(Default)]
pub struct MemoryStore {
    jobs: Mutex<BTreeMap<JobId, Job>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every stored job as JSON, expired ones included (for secret-grepping tests).
    pub fn dump(&self) -> Vec<String> {
        lock(&self.jobs).values().map(|job| serde_json::to_string(job).unwrap_or_default()).collect()
    }
}

impl JobStore for MemoryStore {
    async fn create(&self, job: &Job, max_active: u32) -> Result<Created, StoreError> {
        let mut jobs = lock(&self.jobs);
        if let Some(existing) = jobs.get(&job.id) {
            if existing.is_expired(Timestamp::now()) {
                return Err(StoreError::KeyExpired);
            }
            return Ok(Created::Existing(existing.clone()));
        }
        let active = jobs.values().filter(|j| j.is_active()).count();
        if active >= max_active as usize {
            return Err(StoreError::LimitReached { limit: max_active });
        }
        jobs.insert(job.id.clone(), job.clone());
        Ok(Created::New(job.clone()))
    }

    async fn get(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        Ok(lock(&self.jobs).get(id).filter(|job| !job.is_expired(Timestamp::now())).cloned())
    }

    async fn replace(&self, current: &Job, next: &Job) -> Result<(), StoreError> {
        let mut jobs = lock(&self.jobs);
        match jobs.get_mut(&current.id) {
            Some(stored) if stored.revision == current.revision && stored.state() == current.state() => {
                *stored = next.clone();
                Ok(())
            }
            _ => Err(StoreError::Conflict),
        }
    }

    async fn list(
        &self,
        owner: &str,
        state: Option<State>,
        limit: u32,
        after: Option<&str>,
    ) -> Result<Page, StoreError> {
        let after = after.map(parse_keyset_cursor).transpose()?;
        let now = Timestamp::now();
        let mut mine: Vec<Job> = lock(&self.jobs)
            .values()
            .filter(|j| j.owner == owner && !j.is_expired(now) && state.is_none_or(|s| j.state() == s))
            .filter(|j| {
                after
                    .as_ref()
                    .is_none_or(|(millis, id)| (j.created_at.millis(), j.id.as_str()) < (*millis, id.as_str()))
            })
            .cloned()
            .collect();
        mine.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        Ok(Page::cut(mine, limit, keyset_cursor))
    }

    async fn active(&self) -> Result<Vec<Job>, StoreError> {
        let mut active: Vec<Job> = lock(&self.jobs).values().filter(|j| j.is_active()).cloned().collect();
        active.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(active)
    }

    async fn active_count(&self) -> Result<u32, StoreError> {
        Ok(u32::try_from(lock(&self.jobs).values().filter(|j| j.is_active()).count()).unwrap_or(u32::MAX))
    }
}

/// Launches nothing; records what was asked. One instance per job attempt, like EC2's
/// `ClientToken`.
#[derive(Default)]
pub struct MemoryLauncher {
    state: Mutex<LauncherState>,
}

#[derive(Default)]
struct LauncherState {
    launched: HashMap<(JobId, u32), String>,
    terminated: Vec<String>,
    fail_next: Option<LaunchError>,
    strays: Vec<Instance>,
}

impl MemoryLauncher {
    /// A launcher that succeeds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next launch fail with `error`.
    pub fn fail_next(&self, error: LaunchError) {
        lock(&self.state).fail_next = Some(error);
    }

    /// Instances launched so far.
    pub fn launched(&self) -> usize {
        lock(&self.state).launched.len()
    }

    /// Pretends an instance runs that no stored job launched (an orphan for the reaper).
    pub fn add_stray(&self, instance: Instance) {
        lock(&self.state).strays.push(instance);
    }

    /// Instances terminated so far.
    pub fn terminated(&self) -> Vec<String> {
        lock(&self.state).terminated.clone()
    }
}

impl Launcher for MemoryLauncher {
    async fn launch(&self, job: &Job) -> Result<String, LaunchError> {
        let mut state = lock(&self.state);
        if let Some(error) = state.fail_next.take() {
            return Err(error);
        }
        let n = state.launched.len() + 1;
        Ok(state.launched.entry((job.id.clone(), job.attempt)).or_insert_with(|| format!("i-{n:017x}")).clone())
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), LaunchError> {
        lock(&self.state).terminated.push(instance_id.to_string());
        Ok(())
    }

    async fn instances(&self) -> Result<Vec<Instance>, LaunchError> {
        let state = lock(&self.state);
        let mut instances: Vec<Instance> = state
            .launched
            .iter()
            .filter(|(_, id)| !state.terminated.contains(id))
            .map(|((job, _), id)| Instance { id: id.clone(), job: Some(job.clone()), launched_at: None })
            .collect();
        instances.extend(state.strays.iter().filter(|i| !state.terminated.contains(&i.id)).cloned());
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(instances)
    }
}

/// Keeps credentials in memory; the sealed bytes are a random handle bound to the job.
#[derive(Default)]
pub struct MemorySealer {
    sealed: Mutex<HashMap<String, (JobId, Credentials)>>,
    /// Unseals that fail before the next succeeds (a KMS throttle).
    failing: Mutex<u32>,
}

impl MemorySealer {
    /// An empty sealer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `n` unseals fail, as a throttled or unreachable KMS does.
    pub fn fail_unseals(&self, n: u32) {
        *lock(&self.failing) = n;
    }
}

impl Sealer for MemorySealer {
    async fn seal(&self, job: &JobId, credentials: &Credentials) -> Result<Vec<u8>, SealError> {
        let handle = JobId::random().to_string();
        lock(&self.sealed).insert(handle.clone(), (job.clone(), credentials.clone()));
        Ok(handle.into_bytes())
    }

    async fn unseal(&self, job: &JobId, sealed: &[u8]) -> Result<Credentials, SealError> {
        {
            let mut failing = lock(&self.failing);
            if *failing > 0 {
                *failing -= 1;
                return Err(SealError("ThrottlingException: rate exceeded".into()));
            }
        }
        let handle = String::from_utf8_lossy(sealed).into_owned();
        match lock(&self.sealed).get(&handle) {
            Some((owner, credentials)) if owner == job => Ok(credentials.clone()),
            Some(_) => Err(SealError("sealed for another job".into())),
            None => Err(SealError("unknown sealed value".into())),
        }
    }
}

/// Logs in memory, per job: `append` is what a sink would have written; the cursor is the
/// line count read so far.
#[derive(Clone, Default)]
pub struct MemoryLogs {
    lines: Arc<Mutex<HashMap<JobId, Vec<LogLine>>>>,
}

impl MemoryLogs {
    /// No logs.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a line to `job`'s log.
    pub fn append(&self, job: &JobId, text: &str) {
        lock(&self.lines).entry(job.clone()).or_default().push(LogLine { at: Timestamp::now(), text: text.into() });
    }
}

impl LogSource for MemoryLogs {
    async fn read(&self, job: &JobId, _attempt: u32, after: Option<&str>, limit: usize) -> Result<LogPage, LogError> {
        let start = match after {
            None => 0,
            Some(text) => text.parse::<usize>().map_err(|_| LogError::BadCursor)?,
        };
        let all = lock(&self.lines);
        let lines: Vec<LogLine> =
            all.get(job).map(|l| l.iter().skip(start).take(limit).cloned().collect()).unwrap_or_default();
        Ok(LogPage { next: (start + lines.len()).to_string(), lines })
    }
}
