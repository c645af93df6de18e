//! The coordinator's router over every route and every error, with in-memory ports and
//! bearer tokens (as `barge serve` runs it), through API Gateway v2 events with an IAM
//! authorizer context (as the Lambda runs it), and on a loopback socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::{Router, body::Body};
use barge_coordinator::{App, Config, Ports, iam::IamAuthenticator, router};
use barge_jobs::{
    Caller, JobStore, LaunchError, Timestamp,
    api::{Claim, Heartbeat, JobList, JobView},
};
use barge_jobs_testkit::memory::{MemoryLauncher, MemoryLogs, MemorySealer, MemoryStore};
use barge_local::BearerTokens;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const PASSWORD: &str = "p;a$s`w0rd";
const SOURCE: &str = "postgres://app:p%3Ba%24s%60w0rd@db1.example.com:5432/shop";
const TARGET: &str = "postgres://app:p%3Ba%24s%60w0rd@db2.example.com:5432/shop";

struct Mem;

impl Ports for Mem {
    type Store = MemoryStore;
    type Launcher = MemoryLauncher;
    type Sealer = MemorySealer;
    type Auth = BearerTokens;
    type Logs = MemoryLogs;
}

struct Harness {
    app: Arc<App<Mem>>,
    router: Router,
    alice: String,
    bob: String,
}

impl Harness {
    fn new(max_active_jobs: u32) -> Harness {
        Harness::with(Config { max_active_jobs, ..Config::default() })
    }

    fn with(config: Config) -> Harness {
        let tokens = BearerTokens::new();
        let alice = tokens.issue(Caller::User { owner: "alice".into() }).unwrap();
        let bob = tokens.issue(Caller::User { owner: "bob".into() }).unwrap();
        let app = App::<Mem>::new(
            MemoryStore::new(),
            MemoryLauncher::new(),
            MemorySealer::new(),
            tokens,
            MemoryLogs::new(),
            config,
        );
        Harness { router: router(Arc::clone(&app)), app, alice, bob }
    }

    fn worker(&self, instance_id: &str) -> String {
        self.app.auth.issue(Caller::Worker { instance_id: instance_id.into() }).unwrap()
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        self.raw(method, path, token, body.map(|b| b.to_string().into_bytes()).unwrap_or_default(), &[]).await
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self.router.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        // Only a claim (the worker's) carries credentials.
        if !path.ends_with("/claim") {
            assert!(!text.contains(PASSWORD) && !text.contains("p%3Ba"), "a response holds the password: {text}");
        }
        (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {text}")))
    }

    async fn create(&self, token: &str) -> JobView {
        let (status, body) = self.call("POST", "/jobs", Some(token), Some(spec())).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        serde_json::from_value(body).unwrap()
    }
}

fn spec() -> Value {
    json!({"command": "init", "source_url": SOURCE, "target_url": TARGET, "options": {"jobs": 4}})
}

fn error(body: &Value) -> (&str, &str) {
    (body["error"]["code"].as_str().unwrap(), body["error"]["message"].as_str().unwrap())
}

#[tokio::test]
async fn a_jobs_log_is_served_to_its_owner_page_by_page() {
    let h = Harness::new(10);
    let job = h.create(&h.alice).await;
    for n in 1..=3 {
        h.app.logs.append(&job.id, &format!("{{\"fields\":{{\"message\":\"line {n}\"}}}}"));
    }
    let path = format!("/jobs/{}/logs", job.id);
    let (status, body) = h.call("GET", &format!("{path}?limit=2"), Some(&h.alice), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let texts = |body: &Value| -> Vec<String> {
        body["lines"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(texts(&body).len(), 2);
    assert!(body["lines"][0]["at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let next = body["next"].as_str().unwrap().to_string();
    let (status, body) = h.call("GET", &format!("{path}?after={next}"), Some(&h.alice), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(texts(&body), [r#"{"fields":{"message":"line 3"}}"#]);
    // Not the owner's: no such job; bad cursors and limits: 400; workers: 403
    let (status, _) = h.call("GET", &path, Some(&h.bob), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for query in ["?after=nope", "?limit=0", "?limit=100000", "?color=red"] {
        let (status, body) = h.call("GET", &format!("{path}{query}"), Some(&h.alice), None).await;
        assert_eq!((status, error(&body).0), (StatusCode::BAD_REQUEST, "bad_request"), "{query}: {body}");
    }
    let worker = h.worker(job.instance_id.as_deref().unwrap());
    let (status, _) = h.call("GET", &path, Some(&worker), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_job_is_created_launched_and_shown_to_its_owner_only() {
    let h = Harness::new(10);
    let job = h.create(&h.alice).await;
    assert_eq!(job.owner, "alice");
    assert_eq!(job.status, barge_jobs::JobStatus::Launching);
    assert!(job.instance_id.as_deref().is_some_and(|i| i.starts_with("i-")));
    assert_eq!(job.source, "postgres://app:***@db1.example.com:5432/shop");
    assert_eq!(job.options.jobs, Some(4));
    assert!(job.deadline.is_some_and(|d| d > Timestamp::now()));
    let (status, body) = h.call("GET", &format!("/jobs/{}", job.id), Some(&h.alice), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_value::<JobView>(body).unwrap(), job);
    // Bob cannot tell it exists.
    let (status, body) = h.call("GET", &format!("/jobs/{}", job.id), Some(&h.bob), None).await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = h.call("POST", &format!("/jobs/{}/cancel", job.id), Some(&h.bob), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, body) = h.call("GET", "/jobs", Some(&h.bob), None).await;
    assert_eq!(body["jobs"], json!([]));
    // The predecessor's spec is accepted as is.
    let legacy = json!({"version": "1.0", "command": "init", "source_url": SOURCE, "target_url": "postgres://u:p@other/db",
        "filter": {"include_databases": ["shop"], "exclude_tables": ["shop.logs"]}, "options": {"drop_existing": true, "no_sync": true}});
    let (status, body) = h.call("POST", "/jobs", Some(&h.alice), Some(legacy)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["filter"]["exclude_tables"], json!(["shop.*.logs"]));
}

#[tokio::test]
async fn idempotency_keys_replay_the_same_job() {
    let h = Harness::new(10);
    let key = [("idempotency-key", "req-42")];
    let (s1, first) = h.raw("POST", "/jobs", Some(&h.alice), spec().to_string().into_bytes(), &key).await;
    let (s2, again) = h.raw("POST", "/jobs", Some(&h.alice), spec().to_string().into_bytes(), &key).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first["id"], again["id"]);
    assert_eq!(h.app.launcher.launched(), 1, "one worker for one job");
    // The same key from another user is another job.
    let (_, bobs) = h.raw("POST", "/jobs", Some(&h.bob), spec().to_string().into_bytes(), &key).await;
    assert_ne!(bobs["id"], first["id"]);
    // The same key with another request is refused.
    let mut other = spec();
    other["options"]["jobs"] = 8.into();
    let (status, body) = h.raw("POST", "/jobs", Some(&h.alice), other.to_string().into_bytes(), &key).await;
    assert_eq!((status, error(&body).0), (StatusCode::CONFLICT, "conflict"));
    assert!(error(&body).1.contains("Idempotency-Key"));
    let (status, _) =
        h.raw("POST", "/jobs", Some(&h.alice), spec().to_string().into_bytes(), &[("idempotency-key", "")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let long = "k".repeat(300);
    let (status, _) =
        h.raw("POST", "/jobs", Some(&h.alice), spec().to_string().into_bytes(), &[("idempotency-key", &long)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bad_requests_get_the_right_status_and_a_usable_message() {
    let h = Harness::new(10);
    let cases: Vec<(Vec<u8>, StatusCode, &str, &str)> = vec![
        (b"{not json".to_vec(), StatusCode::BAD_REQUEST, "bad_request", "not JSON"),
        (
            json!({"command": "init"}).to_string().into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "source_url",
        ),
        (
            json!({"command": "init", "source_url": SOURCE, "target_url": TARGET, "options": {"no_synk": true}})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "unknown field `no_synk`",
        ),
        (
            json!({"command": "init", "source_url": SOURCE, "target_url": SOURCE}).to_string().into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "same server and database",
        ),
        (
            json!({"command": "init", "source_url": "postgres://u:p%ZZ@h/db", "target_url": TARGET})
                .to_string()
                .into_bytes(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "source_url",
        ),
        (vec![b' '; 70 * 1024], StatusCode::PAYLOAD_TOO_LARGE, "too_large", "KiB"),
    ];
    for (body, status, code, needle) in cases {
        let (got, answer) = h.raw("POST", "/jobs", Some(&h.alice), body, &[]).await;
        assert_eq!(got, status, "{answer}");
        assert_eq!(error(&answer).0, code);
        assert!(error(&answer).1.contains(needle), "{answer}");
    }
    let (status, body) = h.call("GET", "/nowhere", Some(&h.alice), None).await;
    assert_eq!((status, error(&body).0), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = h.call("DELETE", "/jobs", Some(&h.alice), None).await;
    assert_eq!((status, error(&body).0), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    let (status, _) = h.call("GET", "/jobs/not-an-id", Some(&h.alice), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for query in ["limit=0", "limit=1000", "limit=x", "status=sleeping", "cursor=zzz", "colour=red"] {
        let (status, body) = h.call("GET", &format!("/jobs?{query}"), Some(&h.alice), None).await;
        assert_eq!((status, error(&body).0), (StatusCode::BAD_REQUEST, "bad_request"), "{query}: {body}");
    }
    assert_eq!(h.app.store.dump().len(), 0, "nothing was stored");
}

#[tokio::test]
async fn callers_are_authenticated_and_kept_to_their_routes() {
    let h = Harness::new(10);
    let (status, body) = h.call("GET", "/jobs", None, None).await;
    assert_eq!((status, error(&body).0), (StatusCode::UNAUTHORIZED, "unauthenticated"));
    let (status, _) = h.call("GET", "/jobs", Some("barge_forged"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let job = h.create(&h.alice).await;
    let worker = h.worker(job.instance_id.as_deref().unwrap());
    let (status, body) = h.call("GET", "/jobs", Some(&worker), None).await;
    assert_eq!((status, error(&body).0), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, _) = h.call("POST", "/jobs", Some(&worker), Some(spec())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for route in ["claim", "heartbeat", "finish"] {
        let (status, _) = h.call("POST", &format!("/jobs/{}/{route}", job.id), Some(&h.alice), Some(json!({}))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "users cannot call {route}");
    }
    // Another job's worker gets nothing.
    let intruder = h.worker("i-0fffffffffffffff0");
    for route in ["claim", "heartbeat"] {
        let (status, body) = h.call("POST", &format!("/jobs/{}/{route}", job.id), Some(&intruder), None).await;
        assert_eq!((status, error(&body).0), (StatusCode::FORBIDDEN, "forbidden"), "{route}");
    }
    let (status, _) =
        h.call("POST", &format!("/jobs/{}/claim", barge_jobs::JobId::random()), Some(&worker), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_worker_claims_once_reports_and_finishes() {
    let h = Harness::new(10);
    let job = h.create(&h.alice).await;
    let worker = h.worker(job.instance_id.as_deref().unwrap());
    let path = |route: &str| format!("/jobs/{}/{route}", job.id);
    // Claim: the spec with its credentials, once.
    let request =
        Request::builder().method("POST").uri(path("claim")).header("authorization", format!("Bearer {worker}"));
    let response = h.router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let claim: Claim = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(claim.spec.source_url.expose(), SOURCE);
    assert_eq!(claim.spec.options.jobs, Some(4));
    assert_eq!(claim.job.status, barge_jobs::JobStatus::Running { phase: barge_jobs::Phase::Validating });
    // A claim whose answer was lost is claimed again, until the worker has reported.
    let (status, body) = h.call("POST", &path("claim"), Some(&worker), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Heartbeats and progress.
    let (status, body) = h.call("POST", &path("heartbeat"), Some(&worker), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body2) = h.call("POST", &path("claim"), Some(&worker), None).await;
    assert_eq!((status, error(&body2).0), (StatusCode::CONFLICT, "conflict"));
    assert!(!serde_json::from_value::<Heartbeat>(body).unwrap().cancel_requested);
    let progress = json!({"phase": "copying", "bytes_copied": 1000, "bytes_estimated": 4000, "tables_total": 3,
        "running": [{"database": "shop", "table": "public.orders", "part": 1, "parts": 2, "bytes": 1000}]});
    let (status, body) = h.call("POST", &path("progress"), Some(&worker), Some(progress)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = h.call("GET", &format!("/jobs/{}", job.id), Some(&h.alice), None).await;
    let view: JobView = serde_json::from_value(body).unwrap();
    assert_eq!(view.status, barge_jobs::JobStatus::Running { phase: barge_jobs::Phase::Copying });
    assert_eq!(view.progress.unwrap().bytes_copied, 1000);
    let (status, body) = h.call("POST", &path("progress"), Some(&worker), Some(json!({"bytes": 1}))).await;
    assert_eq!((status, error(&body).0), (StatusCode::UNPROCESSABLE_ENTITY, "invalid"));
    assert!(error(&body).1.contains("bytes"), "{body}");
    let (status, _) = h.call("POST", &path("progress"), Some(&worker), Some(json!({"eta_seconds": -1.0}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // The owner cancels; the next heartbeat says so; the worker finishes as cancelled.
    let (status, body) = h.call("POST", &format!("/jobs/{}/cancel", job.id), Some(&h.alice), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["cancel_requested"], json!(true));
    let (_, body) = h.call("POST", &path("heartbeat"), Some(&worker), None).await;
    assert!(serde_json::from_value::<Heartbeat>(body).unwrap().cancel_requested);
    let (status, body) = h.call("POST", &path("finish"), Some(&worker), Some(json!({"outcome": "kaput"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = h.call("POST", &path("finish"), Some(&worker), Some(json!({"outcome": "cancelled"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], json!({"state": "cancelled"}));
    assert!(body["finished_at"].is_string());
    // A late writer cannot resurrect it.
    for route in ["heartbeat", "claim"] {
        let (status, _) = h.call("POST", &path(route), Some(&worker), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{route}");
    }
    let (status, body) = h.call("POST", &path("finish"), Some(&worker), Some(json!({"outcome": "succeeded"}))).await;
    assert_eq!((status, error(&body).0), (StatusCode::CONFLICT, "conflict"));
    let (status, body) = h.call("POST", &format!("/jobs/{}/cancel", job.id), Some(&h.alice), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(error(&body).1.contains("already finished"), "{body}");
}

#[tokio::test]
async fn failures_are_reported_with_their_reason() {
    let h = Harness::new(10);
    h.app.launcher.fail_next(LaunchError { message: "launch template not found".into(), retryable: false });
    let job = h.create(&h.alice).await;
    match &job.status {
        barge_jobs::JobStatus::Failed { reason, retryable: false } => {
            assert!(reason.contains("launch template"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // A retryable launch failure leaves the job queued for the reaper; cancelling it ends it.
    h.app.launcher.fail_next(LaunchError { message: "InsufficientInstanceCapacity".into(), retryable: true });
    let job = h.create(&h.alice).await;
    assert_eq!(job.status, barge_jobs::JobStatus::Queued);
    let (status, body) = h.call("POST", &format!("/jobs/{}/cancel", job.id), Some(&h.alice), None).await;
    assert_eq!((status, &body["status"]), (StatusCode::OK, &json!({"state": "cancelled"})));
    // A worker's failure keeps its reason and whether a retry may help.
    let job = h.create(&h.alice).await;
    let worker = h.worker(job.instance_id.as_deref().unwrap());
    h.call("POST", &format!("/jobs/{}/claim", job.id), Some(&worker), None).await;
    let outcome = json!({"outcome": "failed", "reason": "target database \"shop\" is not empty", "retryable": false});
    let (status, body) = h.call("POST", &format!("/jobs/{}/finish", job.id), Some(&worker), Some(outcome)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"]["retryable"], json!(false));
    let (status, _) = h
        .call(
            "POST",
            &format!("/jobs/{}/finish", job.id),
            Some(&worker),
            Some(json!({"outcome": "failed", "reason": "", "retryable": true})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn the_active_limit_answers_429_until_a_job_ends() {
    let h = Harness::new(2);
    let first = h.create(&h.alice).await;
    h.create(&h.bob).await;
    let (status, body) = h.call("POST", "/jobs", Some(&h.alice), Some(spec())).await;
    assert_eq!((status, error(&body).0), (StatusCode::TOO_MANY_REQUESTS, "limit_reached"));
    assert!(error(&body).1.contains("2 jobs are already active"), "{body}");
    let worker = h.worker(first.instance_id.as_deref().unwrap());
    h.call("POST", &format!("/jobs/{}/claim", first.id), Some(&worker), None).await;
    h.call("POST", &format!("/jobs/{}/finish", first.id), Some(&worker), Some(json!({"outcome": "succeeded"}))).await;
    h.create(&h.alice).await;
}

#[tokio::test]
async fn lists_are_newest_first_and_paginated() {
    let h = Harness::new(100);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(h.create(&h.alice).await.id);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    ids.reverse();
    let (mut seen, mut cursor) = (Vec::new(), String::new());
    loop {
        let path =
            if cursor.is_empty() { "/jobs?limit=2".to_string() } else { format!("/jobs?limit=2&cursor={cursor}") };
        let (status, body) = h.call("GET", &path, Some(&h.alice), None).await;
        assert_eq!(status, StatusCode::OK);
        let page: JobList = serde_json::from_value(body).unwrap();
        seen.extend(page.jobs.into_iter().map(|j| j.id));
        match page.next_cursor {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let (_, body) = h.call("GET", "/jobs?status=launching&limit=100", Some(&h.alice), None).await;
    assert_eq!(body["jobs"].as_array().unwrap().len(), 5);
    let (_, body) = h.call("GET", "/jobs?status=succeeded", Some(&h.alice), None).await;
    assert_eq!(body["jobs"], json!([]));
}

#[tokio::test]
async fn logs_and_stored_items_never_hold_the_password() {
    // GIVEN every log line captured
    let lines = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = {
        let lines = Arc::clone(&lines);
        move || Capture(Arc::clone(&lines))
    };
    let subscriber =
        tracing_subscriber::fmt().json().with_max_level(tracing::Level::TRACE).with_writer(writer).finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // WHEN a job goes through every route, including failures
    let h = Harness::new(10);
    let job = h.create(&h.alice).await;
    h.call(
        "POST",
        "/jobs",
        Some(&h.alice),
        Some(json!({"command": "init", "source_url": SOURCE, "target_url": SOURCE})),
    )
    .await;
    let worker = h.worker(job.instance_id.as_deref().unwrap());
    h.call("POST", &format!("/jobs/{}/claim", job.id), Some(&worker), None).await;
    h.call("POST", &format!("/jobs/{}/finish", job.id), Some(&worker), Some(json!({"outcome": "succeeded"}))).await;
    // THEN neither the logs nor the store hold the password, in any encoding
    let logged = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
    assert!(logged.contains(job.id.as_str()), "the job was logged: {logged}");
    let stored = h.app.store.dump().join("\n");
    for needle in [PASSWORD, "p%3Ba%24s", "p;a$s"] {
        assert!(!logged.contains(needle), "{needle} logged");
        assert!(!stored.contains(needle), "{needle} stored");
    }
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Iam;

impl Ports for Iam {
    type Store = MemoryStore;
    type Launcher = MemoryLauncher;
    type Sealer = MemorySealer;
    type Auth = IamAuthenticator;
    type Logs = MemoryLogs;
}

/// An API Gateway HTTP API (payload 2.0) event from `tests/fixtures`, with its path, body
/// and caller replaced.
fn event(fixture: &str, path: &str, caller_arn: &str, body: Option<&Value>) -> http::Request<lambda_http::Body> {
    // The runtime variable, not env!(): a test binary built in another clone of the same
    // sources (a shared CARGO_TARGET_DIR) is reused as it is, with that clone's path in it.
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let text = std::fs::read_to_string(format!("{dir}/tests/fixtures/{fixture}")).unwrap();
    let mut event: Value = serde_json::from_str(&text).unwrap();
    event["rawPath"] = path.into();
    event["requestContext"]["http"]["path"] = path.into();
    event["requestContext"]["authorizer"]["iam"]["userArn"] = caller_arn.into();
    if let Some(body) = body {
        event["body"] = body.to_string().into();
    }
    let request: lambda_http::request::LambdaRequest = serde_json::from_value(event).unwrap();
    request.into()
}

async fn send(router: &Router, request: http::Request<lambda_http::Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn api_gateway_events_with_iam_callers_reach_the_router() {
    let app = App::<Iam>::new(
        MemoryStore::new(),
        MemoryLauncher::new(),
        MemorySealer::new(),
        IamAuthenticator::new("barge-worker"),
        MemoryLogs::new(),
        Config::default(),
    );
    let router = router(Arc::clone(&app));
    let alice = "arn:aws:iam::123456789012:user/alice";
    let (status, body) = send(&router, event("create-job.json", "/jobs", alice, Some(&spec()))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["owner"], json!(alice));
    let id = body["id"].as_str().unwrap().to_string();
    let instance = body["instance_id"].as_str().unwrap().to_string();
    // The worker: the worker role's session named after the instance the job launched on.
    let worker = format!("arn:aws:sts::123456789012:assumed-role/barge-worker/{instance}");
    let (status, body) = send(&router, event("worker-call.json", &format!("/jobs/{id}/claim"), &worker, None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["spec"]["source_url"], json!(SOURCE));
    // Another instance of the worker role is refused; so is a user on a worker route.
    let other = "arn:aws:sts::123456789012:assumed-role/barge-worker/i-0aaaaaaaaaaaaaaaa";
    let (status, _) = send(&router, event("worker-call.json", &format!("/jobs/{id}/heartbeat"), other, None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(&router, event("worker-call.json", &format!("/jobs/{id}/heartbeat"), alice, None)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = send(&router, event("list-jobs.json", "/jobs", alice, None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["jobs"][0]["id"], json!(id));
    let bob = "arn:aws:sts::123456789012:assumed-role/Developers/bob@example.com";
    let (status, _) = send(&router, event("list-jobs.json", &format!("/jobs/{id}"), bob, None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A role's job belongs to the role: a session named after a colleague is still that role,
    // and a session of another role named after the job's creator is not its owner.
    let carol = "arn:aws:sts::123456789012:assumed-role/Developers/carol";
    let (status, body) = send(&router, event("create-job.json", "/jobs", carol, Some(&spec()))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["owner"], json!("arn:aws:iam::123456789012:role/Developers"));
    let carols = body["id"].as_str().unwrap().to_string();
    let (status, _) = send(&router, event("list-jobs.json", &format!("/jobs/{carols}"), bob, None)).await;
    assert_eq!(status, StatusCode::OK, "a session of the same role sees the role's job");
    let impostor = "arn:aws:sts::123456789012:assumed-role/Contractors/carol";
    for path in [format!("/jobs/{carols}"), format!("/jobs/{carols}/cancel"), format!("/jobs/{carols}/cutover")] {
        let fixture =
            if path.ends_with("cancel") || path.ends_with("cutover") { "worker-call.json" } else { "list-jobs.json" };
        let (status, body) = send(&router, event(fixture, &path, impostor, None)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    // Without an IAM authorizer context (a misconfigured route) nobody gets in.
    let mut request = event("list-jobs.json", "/jobs", alice, None);
    request.extensions_mut().clear();
    let (status, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error(&body).1.contains("SigV4"), "{body}");
}

#[tokio::test]
async fn the_router_serves_on_loopback() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::new(10);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, h.router.clone()).into_future());
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let body = spec().to_string();
    let request = format!(
        "POST /jobs HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        h.alice,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(response.contains("\"state\":\"launching\""), "{response}");
    server.abort();
}

/// A store that is down, with a message that must not reach callers.
struct DownStore;

const SDK_DETAIL: &str =
    "dispatch failure: io error: connection refused (os error 111) arn:aws:dynamodb:eu-west-1:123456789012:table/jobs";

impl barge_jobs::JobStore for DownStore {
    async fn create(&self, _: &barge_jobs::Job, _: u32) -> Result<barge_jobs::Created, barge_jobs::StoreError> {
        Err(barge_jobs::StoreError::Unavailable(SDK_DETAIL.into()))
    }
    async fn get(&self, id: &barge_jobs::JobId) -> Result<Option<barge_jobs::Job>, barge_jobs::StoreError> {
        Err(barge_jobs::StoreError::Corrupt { id: id.to_string(), message: SDK_DETAIL.into() })
    }
    async fn replace(&self, _: &barge_jobs::Job, _: &barge_jobs::Job) -> Result<(), barge_jobs::StoreError> {
        Err(barge_jobs::StoreError::Unavailable(SDK_DETAIL.into()))
    }
    async fn list(
        &self,
        _: &str,
        _: Option<barge_jobs::State>,
        _: u32,
        _: Option<&str>,
    ) -> Result<barge_jobs::Page, barge_jobs::StoreError> {
        Err(barge_jobs::StoreError::Unavailable(SDK_DETAIL.into()))
    }
    async fn active(&self) -> Result<Vec<barge_jobs::Job>, barge_jobs::StoreError> {
        Err(barge_jobs::StoreError::Unavailable(SDK_DETAIL.into()))
    }
    async fn active_count(&self) -> Result<u32, barge_jobs::StoreError> {
        Err(barge_jobs::StoreError::Unavailable(SDK_DETAIL.into()))
    }
}

struct Down;

impl Ports for Down {
    type Store = DownStore;
    type Launcher = MemoryLauncher;
    type Sealer = MemorySealer;
    type Auth = BearerTokens;
    type Logs = MemoryLogs;
}

#[tokio::test]
async fn a_failing_store_answers_503_and_500_without_its_details() {
    let tokens = BearerTokens::new();
    let alice = tokens.issue(Caller::User { owner: "alice".into() }).unwrap();
    let app = App::<Down>::new(
        DownStore,
        MemoryLauncher::new(),
        MemorySealer::new(),
        tokens,
        MemoryLogs::new(),
        Config::default(),
    );
    let router = router(app);
    let cases = [
        ("POST", "/jobs".to_string(), Some(spec()), StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ("GET", "/jobs".to_string(), None, StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ("GET", format!("/jobs/{}", barge_jobs::JobId::random()), None, StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    ];
    for (method, path, body, status, code) in cases {
        let request = Request::builder()
            .method(method)
            .uri(&path)
            .header("authorization", format!("Bearer {alice}"))
            .body(Body::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        let body: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(error(&body).0, code);
        assert!(error(&body).1.contains("reference"), "{body}");
        for leak in ["connection refused", "arn:aws", "dispatch"] {
            assert!(!body.to_string().contains(leak), "{leak} reached the caller: {body}");
        }
    }
}

#[tokio::test]
async fn the_owner_asks_a_sync_job_to_cut_over_and_its_worker_hears_it() {
    let h = Harness::new(10);
    let sync = json!({"command": "sync", "source_url": SOURCE, "target_url": TARGET});
    let (status, body) = h.call("POST", "/jobs", Some(&h.alice), Some(sync)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let job: JobView = serde_json::from_value(body).unwrap();
    let worker = h.worker(job.instance_id.as_deref().unwrap());
    let path = |route: &str| format!("/jobs/{}/{route}", job.id);
    h.call("POST", &path("claim"), Some(&worker), None).await;
    let (_, body) = h.call("POST", &path("heartbeat"), Some(&worker), None).await;
    assert!(!serde_json::from_value::<Heartbeat>(body).unwrap().cutover_requested);
    // Another owner cannot, and a worker cannot.
    let (status, _) = h.call("POST", &path("cutover"), Some(&h.bob), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h.call("POST", &path("cutover"), Some(&worker), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The owner can; the next report's answer says so.
    let (status, body) = h.call("POST", &path("cutover"), Some(&h.alice), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["cutover_requested"], json!(true));
    let (_, body) = h.call("POST", &path("progress"), Some(&worker), Some(json!({"phase": "streaming"}))).await;
    let answer: Heartbeat = serde_json::from_value(body).unwrap();
    assert!(answer.cutover_requested && !answer.cancel_requested);
    // An init job has nothing to cut over.
    let init = h.create(&h.alice).await;
    let (status, body) = h.call("POST", &format!("/jobs/{}/cutover", init.id), Some(&h.alice), None).await;
    assert_eq!((status, error(&body).0), (StatusCode::CONFLICT, "conflict"));
    assert!(error(&body).1.contains("only sync jobs"), "{body}");
}

#[tokio::test]
async fn the_owner_asks_a_sync_job_for_changes_that_its_worker_runs_and_reports() {
    let h = Harness::new(10);
    let sync = json!({"command": "sync", "source_url": SOURCE, "target_url": TARGET});
    let (_, body) = h.call("POST", "/jobs", Some(&h.alice), Some(sync)).await;
    let job: JobView = serde_json::from_value(body).unwrap();
    let worker = h.worker(job.instance_id.as_deref().unwrap());
    let path = |route: &str| format!("/jobs/{}/{route}", job.id);
    h.call("POST", &path("claim"), Some(&worker), None).await;
    // Only the owner asks, with a change that can run.
    let add = json!({"action": "add_tables", "tables": ["billing.*"]});
    let (status, _) = h.call("POST", &path("changes"), Some(&h.bob), Some(add.clone())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h.call("POST", &path("changes"), Some(&worker), Some(add.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (bad, says) in [
        (json!({"action": "drop_everything"}), "action"),
        (json!({"action": "resync", "tables": []}), "tables"),
        (json!({"action": "add_tables", "tables": ["a.b.c.d"]}), "tables[0]"),
    ] {
        let (status, body) = h.call("POST", &path("changes"), Some(&h.alice), Some(bad)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(error(&body).1.contains(says), "{body}");
    }
    let (status, body) = h.call("POST", &path("changes"), Some(&h.alice), Some(add)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["changes"][0]["state"], json!("requested"));
    // The worker hears of it in each report's answer until it reports it.
    let (_, body) = h.call("POST", &path("progress"), Some(&worker), Some(json!({"phase": "streaming"}))).await;
    let answer: Heartbeat = serde_json::from_value(body).unwrap();
    assert_eq!(answer.changes.len(), 1, "{answer:?}");
    assert_eq!(answer.changes[0].change, barge_jobs::SyncChange::AddTables { tables: vec!["billing.*".into()] });
    let report = json!({"ok": false, "message": "no source table matches billing.*"});
    let (status, _) = h.call("POST", &path("changes/1"), Some(&h.alice), Some(report.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a user cannot report a change");
    let (status, _) = h.call("POST", &path("changes/7"), Some(&worker), Some(report.clone())).await;
    assert_eq!(status, StatusCode::CONFLICT, "no such change");
    let (status, body) = h.call("POST", &path("changes/1"), Some(&worker), Some(report)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(serde_json::from_value::<Heartbeat>(body).unwrap().changes.is_empty());
    let (_, body) = h.call("GET", &format!("/jobs/{}", job.id), Some(&h.alice), None).await;
    assert_eq!(body["changes"][0]["state"], json!("failed"));
    assert_eq!(body["changes"][0]["message"], json!("no source table matches billing.*"));
    // A copy job takes no changes.
    let init = h.create(&h.alice).await;
    let (status, body) =
        h.call("POST", &format!("/jobs/{}/changes", init.id), Some(&h.alice), Some(json!({"action": "pause"}))).await;
    assert_eq!((status, error(&body).0), (StatusCode::CONFLICT, "conflict"));
    assert!(error(&body).1.contains("only sync jobs"), "{body}");
}

#[tokio::test]
async fn a_stage_allows_only_its_instance_types_and_never_metadata_addresses() {
    // GIVEN a deployment that allows two instance types and reaches remotely (the default)
    let config = Config {
        instance_types: vec!["m7g.large".into(), "m6g.large".into()],
        ..Config::from_vars(Vec::<(String, String)>::new()).unwrap()
    };
    assert_eq!(config.reach, barge_jobs::Reach::Remote);
    let h = Harness::with(config);
    // WHEN a job asks for another type, or points at instance metadata or a worker's file
    let mut huge = spec();
    huge["options"]["instance_type"] = json!("p5.48xlarge");
    let (status, body) = h.call("POST", "/jobs", Some(&h.alice), Some(huge)).await;
    // THEN 422 names the field and the allowed types, and nothing was stored or launched
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, message) = error(&body);
    assert!(message.contains("options.instance_type") && message.contains("m7g.large, m6g.large"), "{message}");
    for url in [
        "postgres://app:p%3Ba%24s%60w0rd@169.254.169.254:80/latest",
        "postgres://app:p%3Ba%24s%60w0rd@[fd00:ec2::254]/db",
        "postgres://app:p%3Ba%24s%60w0rd@db1.example.com/db?sslrootcert=/etc/ssh/ssh_host_rsa_key",
        "postgresql://app:p;a$s`w0rd#x@db1.example.com/db",
    ] {
        let mut bad = spec();
        bad["source_url"] = json!(url);
        let (status, body) = h.call("POST", "/jobs", Some(&h.alice), Some(bad)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert!(error(&body).1.starts_with("source_url: "), "{body}");
        assert!(!body.to_string().contains("w0rd"), "{body}");
    }
    let mut allowed = spec();
    allowed["options"]["instance_type"] = json!("m6g.large");
    let (status, body) = h.call("POST", "/jobs", Some(&h.alice), Some(allowed)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, body) = h.call("GET", "/jobs", Some(&h.alice), None).await;
    assert_eq!(body["jobs"].as_array().map(Vec::len), Some(1), "{body}");
    // AND the variables a stage sets are read
    let vars = [("WORKER_ALLOWED_INSTANCE_TYPES", " m7g.large ,c7g.xlarge"), ("WORKER_REACH", "anywhere")]
        .map(|(k, v)| (k.to_string(), v.to_string()));
    let config = Config::from_vars(vars).unwrap();
    assert_eq!(config.instance_types, ["m7g.large", "c7g.xlarge"]);
    assert_eq!(config.reach, barge_jobs::Reach::Anywhere);
    assert!(Config::from_vars([("WORKER_REACH".to_string(), "everywhere".to_string())]).is_err());
}

#[tokio::test]
async fn a_claim_whose_credentials_cannot_be_unsealed_is_retried_without_losing_the_attempt() {
    // GIVEN a launched job, and KMS throttling the first two unseals
    let h = Harness::new(10);
    let job = h.create(&h.alice).await;
    let worker = h.worker(job.instance_id.as_deref().unwrap());
    let claim = format!("/jobs/{}/claim", job.id);
    h.app.sealer.fail_unseals(2);
    // WHEN the worker claims: 503, and the job is still waiting for its worker
    for _ in 0..2 {
        let (status, body) = h.call("POST", &claim, Some(&worker), None).await;
        assert_eq!((status, error(&body).0), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"), "{body}");
        let (_, view) = h.call("GET", &format!("/jobs/{}", job.id), Some(&h.alice), None).await;
        assert_eq!(view["status"]["state"], json!("launching"), "{view}");
    }
    // THEN the retry gets the spec, on the same attempt
    let (status, body) = h.call("POST", &claim, Some(&worker), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["spec"]["source_url"], json!(SOURCE));
    assert_eq!(body["job"]["attempt"], json!(1));
    // AND another instance still may not claim it
    let other = h.worker("i-0fffffffffffffff0");
    let (status, _) = h.call("POST", &claim, Some(&other), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_cleanup_worker_claims_an_ended_sync_and_reports_what_is_left() {
    // GIVEN a sync job whose worker claimed it and was lost on its last attempt
    let h = Harness::with(Config {
        deadlines: barge_jobs::Deadlines { max_attempts: 1, ..Default::default() },
        ..Config::default()
    });
    let mut sync = spec();
    sync["command"] = json!("sync");
    sync["options"] = json!({});
    let (status, body) = h.call("POST", "/jobs", Some(&h.alice), Some(sync)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let job: JobView = serde_json::from_value(body).unwrap();
    let worker = h.worker(job.instance_id.as_deref().unwrap());
    let (status, _) = h.call("POST", &format!("/jobs/{}/claim", job.id), Some(&worker), None).await;
    assert_eq!(status, StatusCode::OK);
    let lost = barge_jobs::Event::WorkerLost { reason: "gone".into() };
    barge_jobs::lifecycle::apply(
        &h.app.store,
        &job.id,
        &lost,
        barge_jobs::Deadlines { max_attempts: 1, ..Default::default() },
        |_| Ok(()),
    )
    .await
    .unwrap();
    // WHEN the reaper launches a cleanup worker
    let report =
        barge_jobs::reaper::sweep(&h.app.store, &h.app.launcher, &barge_jobs::reaper::Policy::default()).await.unwrap();
    assert_eq!(report.cleanups, vec![job.id.clone()]);
    let (_, body) = h.call("GET", &format!("/jobs/{}", job.id), Some(&h.alice), None).await;
    let view: JobView = serde_json::from_value(body).unwrap();
    assert!(view.cleaning_up && view.status.state().is_terminal(), "{view:#?}");
    let stored = h.app.store.get(&job.id).await.unwrap().unwrap();
    let cleaner = h.worker(stored.replication.unwrap().cleaner.as_deref().unwrap());
    // THEN it claims the job as a cleanup, with the credentials; the old worker may not
    let (status, body) = h.call("POST", &format!("/jobs/{}/claim", job.id), Some(&cleaner), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cleanup"], json!(true));
    assert_eq!(body["spec"]["source_url"], json!(SOURCE));
    let (status, _) = h.call("POST", &format!("/jobs/{}/claim", job.id), Some(&worker), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // AND its report ends the cleanup, the job's outcome unchanged
    let (status, body) = h
        .call("POST", &format!("/jobs/{}/finish", job.id), Some(&cleaner), Some(json!({"outcome": "succeeded"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let view: JobView = serde_json::from_value(body).unwrap();
    assert!(!view.cleaning_up && view.leftover.is_none(), "{view:#?}");
    assert_eq!(view.status.state(), barge_jobs::State::Failed);
    let (status, _) = h
        .call("POST", &format!("/jobs/{}/finish", job.id), Some(&cleaner), Some(json!({"outcome": "succeeded"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_worker_is_sized_once_from_its_plan_and_relaunched_on_a_larger_allowed_type() {
    let allowed = ["m7g.large", "c7g.xlarge", "m7g.2xlarge"].map(String::from).to_vec();
    let h = Harness::with(Config { instance_types: allowed, ..Config::default() });
    let job = h.create(&h.alice).await;
    let first = job.instance_id.clone().unwrap();
    let worker = h.worker(&first);
    let path = format!("/jobs/{}/size", job.id);
    let asks = |cpus: u32, vcpus: u32| json!({"cpus": cpus, "vcpus": vcpus, "reason": format!("{vcpus} vCPU(s): 16 COPY stream(s)")});
    // Only the job's claimed worker may ask, with a body a worker sends
    let (status, _) = h.call("POST", &path, Some(&h.alice), Some(asks(2, 6))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = h.call("POST", &format!("/jobs/{}/claim", job.id), Some(&worker), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h.call("POST", &path, Some(&h.worker("i-other")), Some(asks(2, 6))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for bad in [asks(0, 6), asks(2, 0), json!({"cpus": 2, "vcpus": 6, "reason": "a\nb"}), json!({"cpus": 2})] {
        let (status, body) = h.call("POST", &path, Some(&worker), Some(bad.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
    // WHEN the plan wants 6 vCPUs on a 2-CPU worker
    let launched = h.app.launcher.launched();
    let (status, body) = h.call("POST", &path, Some(&worker), Some(asks(2, 6))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // THEN the job is relaunched at once on the smallest allowed type that has them
    assert_eq!(body["relaunched_on"], json!("m7g.2xlarge"), "{body}");
    assert_eq!(h.app.launcher.launched(), launched + 1);
    let (_, shown) = h.call("GET", &format!("/jobs/{}", job.id), Some(&h.alice), None).await;
    let shown: JobView = serde_json::from_value(shown).unwrap();
    assert_eq!((shown.attempt, shown.max_attempts, shown.status.state()), (2, 4, barge_jobs::State::Launching));
    assert_ne!(shown.instance_id.as_deref(), Some(first.as_str()));
    let sizing = shown.sizing.unwrap();
    assert_eq!(sizing.instance_type.as_deref(), Some("m7g.2xlarge"));
    assert!(sizing.reason.starts_with("relaunched on m7g.2xlarge, 8 vCPU(s) instead of 2"), "{}", sizing.reason);
    assert_eq!(shown.last_failure, None, "a relaunch is not a failure");
    // The old worker's later reports are refused; the new one is told what was decided
    let (status, _) = h.call("POST", &format!("/jobs/{}/heartbeat", job.id), Some(&worker), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let second = h.worker(shown.instance_id.as_deref().unwrap());
    let (status, _) = h.call("POST", &format!("/jobs/{}/claim", job.id), Some(&second), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h.call("POST", &path, Some(&second), Some(asks(8, 6))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["relaunched_on"], Value::Null);
    assert!(body["reason"].as_str().unwrap().starts_with("decided earlier: relaunched on m7g.2xlarge"), "{body}");
    assert_eq!(h.app.launcher.launched(), launched + 1, "no second relaunch");

    // A plan that the worker's CPUs carry keeps it, and says so
    let job = h.create(&h.alice).await;
    let worker = h.worker(job.instance_id.as_deref().unwrap());
    h.call("POST", &format!("/jobs/{}/claim", job.id), Some(&worker), None).await;
    let (status, body) = h.call("POST", &format!("/jobs/{}/size", job.id), Some(&worker), Some(asks(2, 1))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["relaunched_on"], Value::Null);
    let (_, shown) = h.call("GET", &format!("/jobs/{}", job.id), Some(&h.alice), None).await;
    assert_eq!(shown["attempt"], json!(1));
    assert!(shown["sizing"]["reason"].as_str().unwrap().starts_with("kept this worker's 2 CPU(s), enough"), "{shown}");
}
