//! [`SigV4`]: signs API requests with AWS Signature Version 4 for API Gateway's IAM
//! authorization (service `execute-api`), with credentials from any provider (the default
//! chain: environment, profiles, SSO, instance role).

use std::time::SystemTime;

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::{
    http_request::{SignableBody, SignableRequest, SigningSettings, sign},
    sign::v4,
};

use crate::ClientError;

/// Signs requests for one region and service.
#[derive(Clone, Debug)]
pub struct SigV4 {
    credentials: SharedCredentialsProvider,
    region: String,
    service: String,
}

impl SigV4 {
    /// Signs for API Gateway (`execute-api`) in `region`.
    pub fn new(credentials: SharedCredentialsProvider, region: impl Into<String>) -> SigV4 {
        SigV4 { credentials, region: region.into(), service: "execute-api".into() }
    }

    /// The region an `https://{api}.execute-api.{region}.amazonaws.com` endpoint is in.
    pub fn region_of(endpoint: &str) -> Option<String> {
        let host = url::Url::parse(endpoint).ok()?.host_str()?.to_string();
        let mut labels = host.split('.');
        let (_, service, region) = (labels.next()?, labels.next()?, labels.next()?);
        (service == "execute-api" && !region.is_empty()).then(|| region.to_string())
    }

    /// The region it signs for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Adds `Authorization`, `X-Amz-Date` (and `X-Amz-Security-Token` for temporary
    /// credentials) to `request`, signing its method, path, query, headers and body.
    pub async fn sign(&self, request: &mut http::Request<Vec<u8>>) -> Result<(), ClientError> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| ClientError::Signing(format!("no AWS credentials: {e}")))?;
        sign_at(request, credentials, &self.region, &self.service, SystemTime::now())
    }
}

/// Signs `request` as of `time`: the deterministic part, tested against AWS's vectors.
pub(crate) fn sign_at(
    request: &mut http::Request<Vec<u8>>,
    credentials: aws_credential_types::Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<(), ClientError> {
    let identity = credentials.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| ClientError::Signing(e.to_string()))?
        .into();
    let uri = request.uri().to_string();
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .filter_map(|(name, value)| value.to_str().ok().map(|value| (name.as_str(), value)))
        .collect();
    let signable =
        SignableRequest::new(request.method().as_str(), &uri, headers.into_iter(), SignableBody::Bytes(request.body()))
            .map_err(|e| ClientError::Signing(e.to_string()))?;
    let (instructions, _signature) =
        sign(signable, &params).map_err(|e| ClientError::Signing(e.to_string()))?.into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// AWS's published SigV4 test suite, case `get-vanilla`: example credentials, 2015-08-30
    /// 12:36:00 UTC, us-east-1, service "service".
    #[test]
    fn matches_the_get_vanilla_test_vector() {
        let mut request = http::Request::builder()
            .method("GET")
            .uri("https://example.amazonaws.com/")
            .header("host", "example.amazonaws.com")
            .body(Vec::new())
            .unwrap();
        let credentials = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let time = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        sign_at(&mut request, credentials, "us-east-1", "service", time).unwrap();
        let authorization = request.headers()["authorization"].to_str().unwrap();
        assert_eq!(
            authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(request.headers()["x-amz-date"], "20150830T123600Z");
    }

    #[test]
    fn temporary_credentials_send_their_session_token() {
        let mut request = http::Request::builder()
            .method("POST")
            .uri("https://abc123.execute-api.eu-west-1.amazonaws.com/jobs/x/heartbeat")
            .body(b"{}".to_vec())
            .unwrap();
        let credentials = aws_credential_types::Credentials::new("ASIAX", "secret", Some("token".into()), None, "t");
        sign_at(&mut request, credentials, "eu-west-1", "execute-api", SystemTime::now()).unwrap();
        assert_eq!(request.headers()["x-amz-security-token"], "token");
        let authorization = request.headers()["authorization"].to_str().unwrap();
        assert!(authorization.contains("/eu-west-1/execute-api/aws4_request"), "{authorization}");
        assert!(!authorization.contains("secret"));
    }

    #[test]
    fn the_region_comes_from_the_endpoint() {
        assert_eq!(
            SigV4::region_of("https://abc123.execute-api.ap-southeast-2.amazonaws.com/").as_deref(),
            Some("ap-southeast-2")
        );
        assert_eq!(SigV4::region_of("https://api.example.com/"), None);
        assert_eq!(SigV4::region_of("http://127.0.0.1:8080/"), None);
    }
}
