//! [`KmsSealer`]: credentials sealed with KMS `Encrypt` under the encryption context
//! `{"job_id": <id>}`. KMS refuses to decrypt without the same context, so a sealed value
//! copied to another job does not open, and CloudTrail shows which job each decrypt was for.

use aws_sdk_kms::{Client, primitives::Blob};
use barge_jobs::{Credentials, JobId, SealError, Sealer};

/// The encryption context key.
const CONTEXT_KEY: &str = "job_id";

/// Seals with one KMS key.
#[derive(Clone)]
pub struct KmsSealer {
    client: Client,
    key_id: String,
}

impl KmsSealer {
    /// Seals with `key_id` (id, ARN or alias).
    pub fn new(config: &aws_config::SdkConfig, key_id: impl Into<String>) -> Self {
        KmsSealer { client: Client::new(config), key_id: key_id.into() }
    }
}

/// KMS's error, without anything of the request (the plaintext never appears in it).
fn kms_error<E: std::error::Error>(what: &str) -> impl FnOnce(E) -> SealError + '_ {
    move |e| {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            message = format!("{message}: {cause}");
            source = cause.source();
        }
        SealError(format!("KMS {what}: {message}"))
    }
}

impl Sealer for KmsSealer {
    async fn seal(&self, job: &JobId, credentials: &Credentials) -> Result<Vec<u8>, SealError> {
        let plain = serde_json::to_vec(credentials).map_err(|e| SealError(e.to_string()))?;
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(plain))
            .encryption_context(CONTEXT_KEY, job.as_str())
            .send()
            .await
            .map_err(kms_error("Encrypt"))?;
        out.ciphertext_blob.map(Blob::into_inner).ok_or_else(|| SealError("KMS Encrypt returned no ciphertext".into()))
    }

    async fn unseal(&self, job: &JobId, sealed: &[u8]) -> Result<Credentials, SealError> {
        let out = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(sealed))
            .encryption_context(CONTEXT_KEY, job.as_str())
            .send()
            .await
            .map_err(kms_error("Decrypt"))?;
        let plain = out.plaintext.ok_or_else(|| SealError("KMS Decrypt returned no plaintext".into()))?;
        serde_json::from_slice(plain.as_ref()).map_err(|_| SealError("unsealed value is not credentials".into()))
    }
}
