//! The routes and their handlers. Handlers authenticate, parse, and call the domain
//! (`barge_jobs::lifecycle`); every decision about states is the domain's.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use barge_jobs::{
    Caller, Created, Event, Job, JobId, JobSpec, JobStore, LogSource, Outcome, Progress, Sealer, State as JobState,
    Timestamp,
    api::{self, Claim, Heartbeat, JobList, JobView, LogLineView, LogsView},
    lifecycle::{self, ApplyError},
    sizing::{self, Decision, SizeAnswer, SizeRequest},
};
use serde::Deserialize;

use crate::{ApiError, App, Ports};

/// The coordinator's router over `app`.
pub fn router<P: Ports>(app: Arc<App<P>>) -> Router {
    Router::new()
        .route("/jobs", post(create::<P>).get(list::<P>))
        .route("/jobs/{id}", get(show::<P>))
        .route("/jobs/{id}/cancel", post(cancel::<P>))
        .route("/jobs/{id}/cutover", post(cutover::<P>))
        .route("/jobs/{id}/changes", post(change::<P>))
        .route("/jobs/{id}/changes/{n}", post(change_finished::<P>))
        .route("/jobs/{id}/logs", get(logs::<P>))
        .route("/jobs/{id}/claim", post(claim::<P>))
        .route("/jobs/{id}/heartbeat", post(heartbeat::<P>))
        .route("/jobs/{id}/progress", post(progress::<P>))
        .route("/jobs/{id}/size", post(size::<P>))
        .route("/jobs/{id}/finish", post(finish::<P>))
        .fallback(|| async { ApiError::NotFound("no such route; see the API reference in docs/".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed("method not allowed on this route".into()) })
        .layer(DefaultBodyLimit::max(api::MAX_BODY_BYTES))
        .with_state(app)
}

/// A user caller: their owner identity.
struct User(String);

/// A worker caller: the instance it runs on.
struct Worker(String);

fn caller<P: Ports>(parts: &Parts, app: &App<P>) -> Result<Caller, ApiError> {
    use barge_jobs::{AuthError, Authenticator};
    app.auth.authenticate(parts).map_err(|e| match e {
        AuthError::Missing(how) => ApiError::Unauthenticated(format!("missing credentials: {how}")),
        AuthError::Invalid => ApiError::Unauthenticated("invalid credentials".into()),
    })
}

impl<P: Ports> FromRequestParts<Arc<App<P>>> for User {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App<P>>) -> Result<Self, Self::Rejection> {
        match caller(parts, app)? {
            Caller::User { owner } => Ok(User(owner)),
            Caller::Worker { .. } => Err(ApiError::Forbidden("workers cannot call user routes".into())),
        }
    }
}

impl<P: Ports> FromRequestParts<Arc<App<P>>> for Worker {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App<P>>) -> Result<Self, Self::Rejection> {
        match caller(parts, app)? {
            Caller::Worker { instance_id } => Ok(Worker(instance_id)),
            Caller::User { .. } => Err(ApiError::Forbidden("only the job's worker may call this route".into())),
        }
    }
}

fn job_id(text: &str) -> Result<JobId, ApiError> {
    JobId::parse(text).ok_or_else(ApiError::no_job)
}

fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(api::MAX_BODY_BYTES / 1024),
        _ => ApiError::BadRequest(rejection.body_text()),
    })
}

/// A JSON body: 400 when it is not JSON, 422 (naming the field) when it has the wrong shape.
fn json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let without_position =
        |e: &serde_json::Error| e.to_string().split(" at line ").next().unwrap_or_default().to_string();
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {}", without_position(&e))))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!("{path}: ") };
        ApiError::Invalid(format!("{at}{}", without_position(e.inner())))
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(api::IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().ok().map(str::trim).unwrap_or_default();
    let valid = !key.is_empty() && key.len() <= api::MAX_IDEMPOTENCY_KEY && key.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {} visible ASCII characters",
            api::MAX_IDEMPOTENCY_KEY
        )));
    }
    Ok(Some(key.to_string()))
}

/// `POST /jobs`: validate, seal, store (idempotently, within the active limit), launch.
async fn create<P: Ports>(
    State(app): State<Arc<App<P>>>,
    User(owner): User,
    headers: HeaderMap,
    request: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body(request)?;
    let _: serde_json::Value = json(&bytes)?;
    let spec = JobSpec::from_json(&bytes)?;
    spec.check_reach(app.config.reach)?;
    if let Some(kind) = &spec.options.instance_type
        && !app.config.instance_types.is_empty()
        && !app.config.instance_types.contains(kind)
    {
        return Err(barge_jobs::SpecError {
            field: "options.instance_type".into(),
            message: format!(
                "{kind} is not allowed in this deployment; allowed: {}",
                app.config.instance_types.join(", ")
            ),
        }
        .into());
    }
    let key = idempotency_key(&headers)?;
    let id = key.as_deref().map_or_else(JobId::random, |key| JobId::for_key(&owner, key));
    let sealed = app.sealer.seal(&id, &spec.credentials()).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let job = Job::new(id, &owner, &spec, sealed, key.as_deref(), app.config.deadlines, Timestamp::now());
    let (job, replayed) = match app.store.create(&job, app.config.max_active_jobs).await? {
        Created::New(job) => (job, false),
        Created::Existing(existing) => {
            if existing.request_digest != job.request_digest {
                return Err(ApiError::Conflict(
                    "this Idempotency-Key was used for a different request; use a new key for a new job".into(),
                ));
            }
            (existing, true)
        }
    };
    tracing::info!(job = %job.id, command = %job.command, replayed, "job created");
    // A replay of a create whose launch never happened launches it now; the launcher
    // starts one worker per job attempt however often it is asked.
    let job = if job.state() == JobState::Queued && job.instance_id.is_none() { launch(&app, job).await? } else { job };
    let mut response = (StatusCode::CREATED, Json(JobView::from(&job))).into_response();
    if replayed {
        response.headers_mut().insert("idempotent-replayed", axum::http::HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Launches a worker for a queued job and records the outcome.
async fn launch<P: Ports>(app: &App<P>, job: Job) -> Result<Job, ApiError> {
    let job = lifecycle::launch(&app.store, &app.launcher, &job, app.config.deadlines).await?;
    match &job.status {
        barge_jobs::JobStatus::Launching => tracing::info!(job = %job.id, instance = ?job.instance_id, "launched"),
        status => tracing::warn!(job = %job.id, ?status, "not launched"),
    }
    Ok(job)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    status: Option<String>,
}

/// A `?limit=`: `default` when absent, else a whole number from 1 to `max`.
fn page_limit<T>(text: Option<&str>, (default, max): (T, T)) -> Result<T, ApiError>
where
    T: std::str::FromStr + PartialOrd + From<u8> + std::fmt::Display,
{
    let Some(text) = text else { return Ok(default) };
    text.parse::<T>()
        .ok()
        .filter(|n| *n >= T::from(1) && *n <= max)
        .ok_or_else(|| ApiError::BadRequest(format!("limit must be between 1 and {max}")))
}

/// `GET /jobs`: the caller's jobs, newest first.
async fn list<P: Ports>(
    State(app): State<Arc<App<P>>>,
    User(owner): User,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::BadRequest(format!("{}; use limit, cursor and status", e.body_text())))?;
    let limit = page_limit(query.limit.as_deref(), api::PAGE_SIZE)?;
    let state = match query.status.as_deref() {
        None => None,
        Some(text) => Some(JobState::parse(text).ok_or_else(|| {
            let states: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::BadRequest(format!("status must be one of {}", states.join(", ")))
        })?),
    };
    let page = app.store.list(&owner, state, limit, query.cursor.as_deref()).await?;
    Ok(Json(JobList { jobs: page.jobs.iter().map(JobView::from).collect(), next_cursor: page.next }))
}

/// The caller's job, or 404 (another owner's job is indistinguishable from none).
async fn owned<P: Ports>(app: &App<P>, owner: &str, id: &str) -> Result<Job, ApiError> {
    let id = job_id(id)?;
    match app.store.get(&id).await? {
        Some(job) if job.owner == owner => Ok(job),
        _ => Err(ApiError::no_job()),
    }
}

/// `GET /jobs/{id}`.
async fn show<P: Ports>(
    State(app): State<Arc<App<P>>>,
    User(owner): User,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(JobView::from(&owned(&app, &owner, &id).await?)))
}

/// `POST /jobs/{id}/cancel`: a queued job is cancelled at once; a launched one is flagged
/// and its worker stops at its next heartbeat.
async fn cancel<P: Ports>(
    State(app): State<Arc<App<P>>>,
    User(owner): User,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let job = owner_event(&app, &owner, &id, &Event::CancelRequested).await?;
    tracing::info!(job = %job.id, state = %job.state(), "cancel requested");
    let status = if job.state().is_terminal() { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(JobView::from(&job))))
}

/// Applies an owner's event (cancel, cutover); another owner's job is not found.
async fn owner_event<P: Ports>(app: &App<P>, owner: &str, id: &str, event: &Event) -> Result<Job, ApiError> {
    let id = job_id(id)?;
    let allow = |job: &Job| if job.owner == owner { Ok(()) } else { Err(ApplyError::NotFound) };
    Ok(lifecycle::apply(&app.store, &id, event, app.config.deadlines, allow).await?)
}

/// `POST /jobs/{id}/cutover`: flags a sync job; its worker cuts over at its next report
/// (once the target streams) and finishes `succeeded`.
async fn cutover<P: Ports>(
    State(app): State<Arc<App<P>>>,
    User(owner): User,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let job = owner_event(&app, &owner, &id, &Event::CutoverRequested).await?;
    tracing::info!(job = %job.id, state = %job.state(), "cutover requested");
    Ok((StatusCode::ACCEPTED, Json(JobView::from(&job))))
}

/// `POST /jobs/{id}/changes`: asks a running sync job for a change (a
/// [`barge_jobs::SyncChange`]: pause, resume, add, remove or resync tables); its worker runs
/// it once the target streams, and the job's `changes` say what became of it.
async fn change<P: Ports>(
    State(app): State<Arc<App<P>>>,
    User(owner): User,
    Path(id): Path<String>,
    request: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let change: barge_jobs::SyncChange = json(&body(request)?)?;
    change.check().map_err(|e| ApiError::Invalid(e.to_string()))?;
    let job = owner_event(&app, &owner, &id, &Event::ChangeRequested(change.clone())).await?;
    tracing::info!(job = %job.id, change = %change.describe(), "change requested");
    Ok((StatusCode::ACCEPTED, Json(JobView::from(&job))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /jobs/{id}/logs?after=&limit=`: the job's log (every attempt, in order) from the
/// log backend, so users need no permission on it; `next` continues, also to follow.
async fn logs<P: Ports>(
    State(app): State<Arc<App<P>>>,
    User(owner): User,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LogsView>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(format!("{}; use after and limit", e.body_text())))?;
    let limit = page_limit(query.limit.as_deref(), api::LOG_PAGE_SIZE)?;
    let job = owned(&app, &owner, &id).await?;
    let page = app.logs.read(&job.id, job.attempt, query.after.as_deref(), limit).await?;
    Ok(Json(LogsView {
        lines: page.lines.into_iter().map(|l| LogLineView { at: l.at, text: l.text }).collect(),
        next: page.next,
    }))
}

/// Applies a worker's event, refusing any caller but the job's own worker.
async fn worker_event<P: Ports>(app: &App<P>, instance: &str, id: &str, event: &Event) -> Result<Job, ApiError> {
    let id = job_id(id)?;
    let allow = |job: &Job| {
        if job.instance_id.as_deref() == Some(instance) {
            Ok(())
        } else {
            Err(ApplyError::Rejected(barge_jobs::Rejection::NotYourJob(
                "this job was not launched on your instance".into(),
            )))
        }
    };
    Ok(lifecycle::apply(&app.store, &id, event, app.config.deadlines, allow).await?)
}

/// Refuses a worker call about a job that runs on another instance.
fn launched_on(job: &Job, instance: &str) -> Result<(), ApiError> {
    if job.instance_id.as_deref() == Some(instance) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("this job was not launched on your instance".into()))
    }
}

/// Whether `instance` is the worker launched to remove what the ended `job` left.
fn is_cleaner(job: &Job, instance: &str) -> bool {
    job.state().is_terminal() && job.replication.as_ref().and_then(|r| r.cleaner.as_deref()) == Some(instance)
}

/// `POST /jobs/{id}/claim`: the spec with credentials, to the launched instance, which may
/// claim again until it has reported. The credentials are unsealed **before** the job is
/// marked running: a KMS throttle or outage is a 503 the worker retries, not a claimed job
/// whose worker never got its spec.
async fn claim<P: Ports>(
    State(app): State<Arc<App<P>>>,
    Worker(instance): Worker,
    Path(id): Path<String>,
) -> Result<Json<Claim>, ApiError> {
    let job_id = job_id(&id)?;
    let current = app.store.get(&job_id).await?.ok_or_else(|| ApiError::NotFound("no such job".into()))?;
    if is_cleaner(&current, &instance) {
        let credentials = app.sealer.unseal(&current.id, &current.sealed_credentials).await.map_err(|e| {
            ApiError::Unavailable(format!("the job's credentials cannot be unsealed now ({e}); claim again"))
        })?;
        tracing::info!(job = %current.id, instance = %instance, "claimed to remove what the sync left");
        let spec = JobSpec {
            command: current.command,
            source_url: credentials.source_url,
            target_url: credentials.target_url,
            filter: current.filter.clone(),
            options: current.options.clone(),
        };
        return Ok(Json(Claim { job: JobView::from(&current), spec, cleanup: true }));
    }
    launched_on(&current, &instance)?;
    let credentials = app.sealer.unseal(&current.id, &current.sealed_credentials).await.map_err(|e| {
        ApiError::Unavailable(format!("the job's credentials cannot be unsealed now ({e}); claim again"))
    })?;
    let job = worker_event(&app, &instance, &id, &Event::Claimed { instance_id: instance.clone() }).await?;
    tracing::info!(job = %job.id, attempt = job.attempt, instance = %instance, "claimed");
    let spec = JobSpec {
        command: job.command,
        source_url: credentials.source_url,
        target_url: credentials.target_url,
        filter: job.filter.clone(),
        options: job.options.clone(),
    };
    Ok(Json(Claim { job: JobView::from(&job), spec, cleanup: false }))
}

fn heartbeat_answer(job: &Job) -> Json<Heartbeat> {
    Json(Heartbeat::of(job))
}

/// `POST /jobs/{id}/changes/{n}`: the worker ran change `n` (a [`api::ChangeReport`]);
/// answered as a heartbeat, so the worker learns of more changes at once.
async fn change_finished<P: Ports>(
    State(app): State<Arc<App<P>>>,
    Worker(instance): Worker,
    Path((id, n)): Path<(String, String)>,
    request: Result<Bytes, BytesRejection>,
) -> Result<Json<Heartbeat>, ApiError> {
    let n: u32 = n.parse().map_err(|_| ApiError::NotFound("no such change: changes are numbered from 1".into()))?;
    let report: api::ChangeReport = json(&body(request)?)?;
    if report.message.len() > api::MAX_CHANGE_MESSAGE {
        return Err(ApiError::Invalid(format!("message: longer than {} bytes", api::MAX_CHANGE_MESSAGE)));
    }
    let event = Event::ChangeFinished { id: n, ok: report.ok, message: report.message };
    let job = worker_event(&app, &instance, &id, &event).await?;
    tracing::info!(job = %job.id, change = n, ok = report.ok, "change reported");
    Ok(heartbeat_answer(&job))
}

/// `POST /jobs/{id}/heartbeat`: the worker is alive; answers whether to stop.
async fn heartbeat<P: Ports>(
    State(app): State<Arc<App<P>>>,
    Worker(instance): Worker,
    Path(id): Path<String>,
) -> Result<Json<Heartbeat>, ApiError> {
    Ok(heartbeat_answer(&worker_event(&app, &instance, &id, &Event::Heartbeat).await?))
}

/// `POST /jobs/{id}/progress`: the latest snapshot (also a heartbeat).
async fn progress<P: Ports>(
    State(app): State<Arc<App<P>>>,
    Worker(instance): Worker,
    Path(id): Path<String>,
    request: Result<Bytes, BytesRejection>,
) -> Result<Json<Heartbeat>, ApiError> {
    let progress: Progress = json(&body(request)?)?;
    progress.check().map_err(ApiError::Invalid)?;
    let job = worker_event(&app, &instance, &id, &Event::Progress(Box::new(progress))).await?;
    Ok(heartbeat_answer(&job))
}

/// `POST /jobs/{id}/size`: the worker's plan says how many vCPUs its copy wants; the
/// coordinator decides the worker's size once (`barge_jobs::sizing`) and, for a larger
/// allowed type, queues the job again and launches it there at once. The answer tells the
/// worker whether to stop (without reporting: the job is no longer its own).
async fn size<P: Ports>(
    State(app): State<Arc<App<P>>>,
    Worker(instance): Worker,
    Path(id): Path<String>,
    request: Result<Bytes, BytesRejection>,
) -> Result<Json<SizeAnswer>, ApiError> {
    let asked: SizeRequest = json(&body(request)?)?;
    asked.check().map_err(ApiError::Invalid)?;
    let job_id = job_id(&id)?;
    let current = app.store.get(&job_id).await?.ok_or_else(ApiError::no_job)?;
    launched_on(&current, &instance)?;
    let sizing = match sizing::decide(&current, &app.config.instance_types, &asked) {
        Decision::Decided(sizing) => {
            let reason = format!("decided earlier: {}", sizing.reason);
            return Ok(Json(SizeAnswer { relaunched_on: None, reason }));
        }
        Decision::Record(sizing) => sizing,
    };
    let job = worker_event(&app, &instance, &id, &Event::Sized(sizing.clone())).await?;
    tracing::info!(job = %job.id, instance = %instance, relaunch = ?sizing.instance_type, reason = %sizing.reason, "sized");
    if job.state() == JobState::Queued {
        launch(&app, job).await?;
    }
    Ok(Json(SizeAnswer { relaunched_on: sizing.instance_type, reason: sizing.reason }))
}

/// Longest failure reason kept.
const MAX_REASON_BYTES: usize = 4096;

/// `POST /jobs/{id}/finish`: the worker's outcome; a retryable failure launches the next
/// attempt while attempts remain.
async fn finish<P: Ports>(
    State(app): State<Arc<App<P>>>,
    Worker(instance): Worker,
    Path(id): Path<String>,
    request: Result<Bytes, BytesRejection>,
) -> Result<Json<JobView>, ApiError> {
    let outcome: Outcome = json(&body(request)?)?;
    if let Outcome::Failed { reason, .. } = &outcome
        && (reason.is_empty() || reason.len() > MAX_REASON_BYTES)
    {
        return Err(ApiError::Invalid(format!("reason: 1 to {MAX_REASON_BYTES} bytes")));
    }
    let job_id = job_id(&id)?;
    if let Some(current) = app.store.get(&job_id).await?
        && is_cleaner(&current, &instance)
    {
        let allow = |job: &Job| {
            if is_cleaner(job, &instance) {
                Ok(())
            } else {
                Err(ApplyError::Rejected(barge_jobs::Rejection::NotYourJob("this cleanup is not yours".into())))
            }
        };
        let event = Event::CleanupFinished(outcome);
        let job = lifecycle::apply(&app.store, &job_id, &event, app.config.deadlines, allow).await?;
        tracing::info!(job = %job.id, left = job.replication.is_some(), "cleanup finished");
        return Ok(Json(JobView::from(&job)));
    }
    let job = worker_event(&app, &instance, &id, &Event::Finished(outcome)).await?;
    tracing::info!(job = %job.id, state = %job.state(), attempt = job.attempt, "finished");
    // A retryable failure with attempts left is queued again: its next worker starts now
    // (the reaper would start it on its next sweep otherwise).
    let job = if job.state() == JobState::Queued { launch(&app, job).await? } else { job };
    Ok(Json(JobView::from(&job)))
}
