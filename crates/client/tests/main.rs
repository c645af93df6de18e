//! The API client against a server that fails the way real ones do: transient 503s are
//! retried with backoff, conflicts are not, API Gateway's own error bodies are understood,
//! an unreachable endpoint is a retryable transport error naming it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use axum::{Router, http::StatusCode, routing::post};
use barge_client::{ApiClient, Auth, Backoff, ClientError, retry};
use barge_jobs::JobId;

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}/")
}

const FAST: Backoff =
    Backoff { first: Duration::from_millis(5), max: Duration::from_millis(20), budget: Duration::from_secs(5) };

#[tokio::test]
async fn transient_failures_are_retried_and_final_ones_are_not() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let router = Router::new()
        .route(
            "/jobs/{id}/heartbeat",
            post(move |headers: axum::http::HeaderMap| {
                let counter = counter.clone();
                async move {
                    assert_eq!(headers["authorization"], "Bearer t0ken");
                    if counter.fetch_add(1, Ordering::SeqCst) < 2 {
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            r#"{"error":{"code":"unavailable","message":"try again"}}"#,
                        );
                    }
                    (StatusCode::OK, r#"{"cancel_requested":true,"status":{"state":"running","phase":"copying"}}"#)
                }
            }),
        )
        .route(
            "/jobs/{id}/finish",
            post(|| async {
                (StatusCode::CONFLICT, r#"{"error":{"code":"conflict","message":"the job already finished"}}"#)
            }),
        )
        .route("/jobs/{id}/claim", post(|| async { (StatusCode::FORBIDDEN, r#"{"message":"Forbidden"}"#) }));
    let client = ApiClient::new(&serve(router).await, Auth::Bearer("t0ken".into())).unwrap();
    let job = JobId::random();
    let answer = retry("heartbeat", FAST, || client.heartbeat(&job)).await.unwrap();
    assert!(answer.cancel_requested);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two 503s, then the answer");
    let e = retry("finish", FAST, || client.finish(&job, &barge_jobs::Outcome::Succeeded)).await.unwrap_err();
    assert!(matches!(&e, ClientError::Api { status: 409, code, .. } if code == "conflict"), "{e:?}");
    assert!(!e.retryable());
    let e = client.claim(&job).await.unwrap_err();
    assert!(matches!(&e, ClientError::Api { status: 403, message, .. } if message == "Forbidden"), "{e:?}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_retryable_error_that_names_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = ApiClient::new(&endpoint, Auth::Bearer("t".into())).unwrap();
    let e = client.get(&JobId::random()).await.unwrap_err();
    assert!(e.retryable(), "{e}");
    assert!(e.to_string().contains(&endpoint), "{e}");
    let e = ApiClient::new("ftp://example.com", Auth::Bearer("t".into())).unwrap_err();
    assert!(e.to_string().contains("http(s)"), "{e}");
    assert_eq!(format!("{:?}", Auth::Bearer("secret-token".into())), "Bearer(****)");
}

#[test]
fn backoff_doubles_up_to_its_cap_with_jitter() {
    let backoff =
        Backoff { first: Duration::from_millis(100), max: Duration::from_secs(1), budget: Duration::from_secs(9) };
    assert_eq!(backoff.wait(1, 1.0), Duration::from_millis(100));
    assert_eq!(backoff.wait(3, 1.0), Duration::from_millis(400));
    assert_eq!(backoff.wait(10, 1.0), Duration::from_secs(1));
    assert_eq!(backoff.wait(3, 0.0), Duration::from_millis(200));
}
