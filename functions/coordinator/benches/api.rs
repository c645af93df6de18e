//! `make bench` (API part): `POST /jobs` then `GET /jobs/{id}` through the coordinator's
//! router, sequentially, against SQLite and against DynamoDB Local (started by the harness);
//! prints p50/p99/max latency per route and store. Credentials are sealed with the key-file
//! sealer in both, so the figures are the router's and the store's.
//!
//!   cargo bench -p barge-coordinator --bench api -- [REQUESTS]   (default 2000)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, missing_docs)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, body::Body};
use barge_aws::{DynamoJobStore, local_config};
use barge_coordinator::{App, Config, Ports, router};
use barge_jobs::{Caller, JobId, JobStore};
use barge_jobs_testkit::memory::{MemoryLauncher, MemoryLogs};
use barge_local::{BearerTokens, KeyFileSealer, SqliteStore};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Ports_<S>(std::marker::PhantomData<S>);

impl<S: JobStore> Ports for Ports_<S> {
    type Store = S;
    type Launcher = MemoryLauncher;
    type Sealer = KeyFileSealer;
    type Auth = BearerTokens;
    type Logs = MemoryLogs;
}

const SPEC: &str = r#"{"command":"init","source_url":"postgres://app:p%3Bw@db1.example.com/shop","target_url":"postgres://app:p%3Bw@db2.example.com/shop","filter":{"exclude_tables":["public.logs"]},"options":{"jobs":8}}"#;

async fn call(router: &Router, request: Request<Body>) -> (Duration, StatusCode, bytes::Bytes) {
    let started = Instant::now();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (started.elapsed(), status, body)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

async fn measure<S: JobStore>(name: &str, store: S, requests: usize, dir: &std::path::Path) {
    let tokens = BearerTokens::new();
    let token = tokens.issue(Caller::User { owner: "bench".into() }).unwrap();
    let sealer = KeyFileSealer::open(&dir.join(format!("{name}.key"))).unwrap();
    let config = Config { max_active_jobs: u32::MAX, ..Config::default() };
    let app = App::<Ports_<S>>::new(store, MemoryLauncher::new(), sealer, tokens, MemoryLogs::new(), config);
    let router = router(Arc::clone(&app));
    let (mut creates, mut gets, mut pairs) =
        (Vec::with_capacity(requests), Vec::with_capacity(requests), Vec::with_capacity(requests));
    let warmup = requests / 20;
    for i in 0..requests + warmup {
        let post = Request::post("/jobs")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(SPEC))
            .unwrap();
        let (took, status, body) = call(&router, post).await;
        assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
        let id: JobId =
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"].as_str().and_then(JobId::parse).unwrap();
        let get = Request::get(format!("/jobs/{id}"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let (took_get, status, _) = call(&router, get).await;
        assert_eq!(status, StatusCode::OK);
        if i >= warmup {
            creates.push(took);
            gets.push(took_get);
            pairs.push(took + took_get);
        }
    }
    for (route, mut samples) in [("POST /jobs", creates), ("GET /jobs/{id}", gets), ("both", pairs)] {
        samples.sort();
        println!(
            "  {name:<16} {route:<16} {:>6} requests   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
            samples.len(),
            percentile(&samples, 0.50),
            percentile(&samples, 0.99),
            samples.last().unwrap().as_secs_f64() * 1000.0
        );
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let requests: usize =
        std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    println!("coordinator API latency: POST /jobs then GET /jobs/{{id}}, sequential, through the router");
    let sqlite = SqliteStore::open(&dir.path().join("jobs.db")).unwrap();
    measure("SQLite", sqlite, requests, dir.path()).await;
    let config = local_config(&barge_testkit::aws_local("dynamodb")).await;
    let dynamo = DynamoJobStore::new(&config, format!("bench_{}", JobId::random()));
    dynamo.create_table().await.unwrap();
    measure("DynamoDB Local", dynamo, requests, dir.path()).await;
}
