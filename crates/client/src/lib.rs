//! [`ApiClient`]: barge's client of the coordinator API, shared by the worker and the CLI.
//! Requests to AWS are signed with SigV4 (service `execute-api`) from any credentials
//! provider; requests to `barge serve` carry a bearer token. Errors are typed: a
//! [`ClientError::retryable`] one (transport, throttling, 5xx) is worth trying again, and
//! [`retry`] does so with capped exponential backoff and jitter.

mod sigv4;

use std::{future::Future, time::Duration};

use barge_jobs::{
    JobId, JobSpec, Outcome, Progress,
    api::{Claim, ErrorBody, Heartbeat, IDEMPOTENCY_KEY, JobList, JobView, LogsView},
};
use serde::{Serialize, de::DeserializeOwned};
pub use sigv4::SigV4;

/// How requests prove who sends them.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>` (barge serve).
    Bearer(String),
    /// AWS Signature Version 4 (API Gateway with IAM authorization).
    SigV4(SigV4),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(****)"),
            Auth::SigV4(signer) => write!(f, "SigV4({})", signer.region()),
        }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The API's error code (`not_found`, `conflict`, …).
        code: String,
        /// What the API said.
        message: String,
    },
    /// The API could not be reached, or the connection broke.
    #[error("cannot reach the barge API at {endpoint}: {detail}")]
    Transport {
        /// Where.
        endpoint: String,
        /// What the HTTP client said.
        detail: String,
    },
    /// The answer was not what this version of barge expects.
    #[error("unexpected answer from the barge API: {0}")]
    Decode(String),
    /// The request could not be signed (no credentials, bad clock, …).
    #[error("cannot sign the request: {0}")]
    Signing(String),
}

impl ClientError {
    /// Worth trying again: transport failures, throttling, timeouts and server errors.
    pub fn retryable(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Api { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            ClientError::Decode(_) | ClientError::Signing(_) => false,
        }
    }

    /// The HTTP status the API answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of one coordinator endpoint.
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: url::Url,
    auth: Auth,
    http: reqwest::Client,
}

/// How long one request may take before it counts as a transport failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl ApiClient {
    /// A client of the API at `endpoint` (`https://…` or, for barge serve, `http://127.0.0.1:…`).
    pub fn new(endpoint: &str, auth: Auth) -> Result<ApiClient, ClientError> {
        let mut base = url::Url::parse(endpoint.trim())
            .map_err(|e| ClientError::Decode(format!("the API endpoint {endpoint:?} is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(ClientError::Decode(format!("the API endpoint {endpoint:?} must be an http(s) URL")));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("barge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport { endpoint: endpoint.to_string(), detail: e.to_string() })?;
        Ok(ApiClient { base, auth, http })
    }

    /// The endpoint, as given.
    pub fn endpoint(&self) -> &str {
        self.base.as_str()
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<T, ClientError> {
        let url = self.base.join(path).map_err(|e| ClientError::Decode(format!("bad path {path}: {e}")))?;
        let mut request = http::Request::builder().method(method).uri(url.as_str());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let mut request = request.body(body.unwrap_or_default()).map_err(|e| ClientError::Decode(e.to_string()))?;
        match &self.auth {
            Auth::Bearer(token) => {
                let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| ClientError::Signing("the bearer token holds characters a header cannot".into()))?;
                request.headers_mut().insert(http::header::AUTHORIZATION, value);
            }
            Auth::SigV4(signer) => signer.sign(&mut request).await?,
        }
        let request = reqwest::Request::try_from(request).map_err(|e| ClientError::Decode(e.to_string()))?;
        let transport =
            |e: reqwest::Error| ClientError::Transport { endpoint: self.base.to_string(), detail: describe(e) };
        let response = self.http.execute(request).await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => {
                    ClientError::Api { status: status.as_u16(), code: body.error.code, message: body.error.message }
                }
                // API Gateway's own answers ({"message": "Forbidden"}) and proxies' pages.
                Err(_) => ClientError::Api {
                    status: status.as_u16(),
                    code: status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "_"),
                    message: serde_json::from_slice::<serde_json::Value>(&bytes)
                        .ok()
                        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect()),
                },
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    fn json(body: &impl Serialize) -> Result<Option<Vec<u8>>, ClientError> {
        serde_json::to_vec(body).map(Some).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// `POST /jobs`: submits `spec`; the same `idempotency_key` never makes a second job.
    pub async fn create(&self, spec: &JobSpec, idempotency_key: Option<&str>) -> Result<JobView, ClientError> {
        let body = serde_json::json!({
            "command": spec.command,
            "source_url": spec.source_url.expose(),
            "target_url": spec.target_url.expose(),
            "filter": spec.filter,
            "options": spec.options,
        });
        let headers: Vec<(&str, &str)> = idempotency_key.map(|key| (IDEMPOTENCY_KEY, key)).into_iter().collect();
        self.call(http::Method::POST, "jobs", Self::json(&body)?, &headers).await
    }

    /// `GET /jobs/{id}`.
    pub async fn get(&self, id: &JobId) -> Result<JobView, ClientError> {
        self.call(http::Method::GET, &format!("jobs/{id}"), None, &[]).await
    }

    /// `GET /jobs`: one page of the caller's jobs, newest first.
    pub async fn list(&self, status: Option<&str>, limit: u32, cursor: Option<&str>) -> Result<JobList, ClientError> {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("limit", &limit.to_string());
        if let Some(status) = status {
            query.append_pair("status", status);
        }
        if let Some(cursor) = cursor {
            query.append_pair("cursor", cursor);
        }
        self.call(http::Method::GET, &format!("jobs?{}", query.finish()), None, &[]).await
    }

    /// `POST /jobs/{id}/cancel`.
    pub async fn cancel(&self, id: &JobId) -> Result<JobView, ClientError> {
        self.call(http::Method::POST, &format!("jobs/{id}/cancel"), None, &[]).await
    }

    /// `POST /jobs/{id}/cutover`.
    pub async fn cutover(&self, id: &JobId) -> Result<JobView, ClientError> {
        self.call(http::Method::POST, &format!("jobs/{id}/cutover"), None, &[]).await
    }

    /// `POST /jobs/{id}/changes`: asks a running sync job to pause, resume or change its
    /// tables; the job's `changes` say what became of it.
    pub async fn change(&self, id: &JobId, change: &barge_jobs::SyncChange) -> Result<JobView, ClientError> {
        self.call(http::Method::POST, &format!("jobs/{id}/changes"), Self::json(change)?, &[]).await
    }

    /// `POST /jobs/{id}/changes/{n}`: the worker ran change `n` (also a heartbeat).
    pub async fn change_finished(
        &self,
        id: &JobId,
        n: u32,
        report: &barge_jobs::api::ChangeReport,
    ) -> Result<Heartbeat, ClientError> {
        self.call(http::Method::POST, &format!("jobs/{id}/changes/{n}"), Self::json(report)?, &[]).await
    }

    /// `GET /jobs/{id}/logs`: up to `limit` lines after the cursor `after` (from the start
    /// when `None`); the answer's `next` continues.
    pub async fn logs(&self, id: &JobId, after: Option<&str>, limit: Option<usize>) -> Result<LogsView, ClientError> {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(after) = after {
            query.append_pair("after", after);
        }
        if let Some(limit) = limit {
            query.append_pair("limit", &limit.to_string());
        }
        let query = query.finish();
        let path = if query.is_empty() { format!("jobs/{id}/logs") } else { format!("jobs/{id}/logs?{query}") };
        self.call(http::Method::GET, &path, None, &[]).await
    }

    /// `POST /jobs/{id}/claim`: the worker takes its job (spec with credentials).
    pub async fn claim(&self, id: &JobId) -> Result<Claim, ClientError> {
        self.call(http::Method::POST, &format!("jobs/{id}/claim"), None, &[]).await
    }

    /// `POST /jobs/{id}/heartbeat`.
    pub async fn heartbeat(&self, id: &JobId) -> Result<Heartbeat, ClientError> {
        self.call(http::Method::POST, &format!("jobs/{id}/heartbeat"), None, &[]).await
    }

    /// `POST /jobs/{id}/progress` (also a heartbeat).
    pub async fn progress(&self, id: &JobId, progress: &Progress) -> Result<Heartbeat, ClientError> {
        self.call(http::Method::POST, &format!("jobs/{id}/progress"), Self::json(progress)?, &[]).await
    }

    /// `POST /jobs/{id}/size`: what the worker's plan wants; the answer may say the job was
    /// relaunched on a larger type.
    pub async fn size(
        &self,
        id: &JobId,
        request: &barge_jobs::sizing::SizeRequest,
    ) -> Result<barge_jobs::sizing::SizeAnswer, ClientError> {
        self.call(http::Method::POST, &format!("jobs/{id}/size"), Self::json(request)?, &[]).await
    }

    /// `POST /jobs/{id}/finish`.
    pub async fn finish(&self, id: &JobId, outcome: &Outcome) -> Result<JobView, ClientError> {
        self.call(http::Method::POST, &format!("jobs/{id}/finish"), Self::json(outcome)?, &[]).await
    }
}

/// A transport error with its causes, without the URL (the message names the endpoint).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Backoff between tries: doubling from `first`, capped at `max`, each wait drawn between
/// half and all of it (jitter), for at most `budget` in total.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// First wait.
    pub first: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Give up once this much time has passed.
    pub budget: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { first: Duration::from_millis(200), max: Duration::from_secs(10), budget: Duration::from_secs(120) }
    }
}

impl Backoff {
    /// The wait before try `n` (1-based: the wait after the first failure is `n = 1`).
    pub fn wait(&self, n: u32, jitter: f64) -> Duration {
        let exp = self.first.saturating_mul(1u32 << n.saturating_sub(1).min(16));
        exp.min(self.max).mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// A number in [0, 1) that differs from call to call, to spread retries.
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    (hasher.finish() % 10_000) as f64 / 10_000.0
}

/// Runs `call` until it succeeds, fails with an error that is not retryable, or `backoff`'s
/// budget is spent; each retry is logged with what failed.
pub async fn retry<T, F, Fut>(what: &str, backoff: Backoff, mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let started = tokio::time::Instant::now();
    let mut tries = 0u32;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(e) if e.retryable() && started.elapsed() < backoff.budget => {
                tries += 1;
                let wait = backoff.wait(tries, jitter());
                tracing::warn!(what, tries, wait_ms = wait.as_millis() as u64, error = %e, "retrying");
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}
