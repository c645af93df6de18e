//! [`KeyFileSealer`]: credentials sealed with XChaCha20-Poly1305 under a 256-bit key kept
//! in a 0600 file, bound to their job by the associated data.

use std::path::Path;

use barge_jobs::{Credentials, JobId, SealError, Sealer};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};

/// The first byte of every sealed value: the format.
const VERSION: u8 = 1;
const NONCE_BYTES: usize = 24;

/// Seals with a key from a private file.
pub struct KeyFileSealer {
    cipher: XChaCha20Poly1305,
}

fn associated_data(job: &JobId) -> Vec<u8> {
    format!("barge credentials for job {job}").into_bytes()
}

impl KeyFileSealer {
    /// Uses the key in `path`, creating it (0600, 32 random bytes) when missing. A key file
    /// that others can read is refused.
    pub fn open(path: &Path) -> Result<KeyFileSealer, SealError> {
        let describe = |e: std::io::Error| SealError(format!("key file {}: {e}", path.display()));
        if !path.exists() {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| SealError(format!("no randomness: {e}")))?;
            match crate::create_private(path, &key) {
                Ok(()) => {}
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(describe(e)),
            }
        }
        let key = crate::read_private(path).map_err(describe)?;
        let cipher = XChaCha20Poly1305::new_from_slice(&key)
            .map_err(|_| SealError(format!("key file {}: must hold exactly 32 bytes", path.display())))?;
        Ok(KeyFileSealer { cipher })
    }
}

impl Sealer for KeyFileSealer {
    async fn seal(&self, job: &JobId, credentials: &Credentials) -> Result<Vec<u8>, SealError> {
        let plain = serde_json::to_vec(credentials).map_err(|e| SealError(e.to_string()))?;
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|e| SealError(format!("no randomness: {e}")))?;
        let aad = associated_data(job);
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: &plain, aad: &aad })
            .map_err(|_| SealError("encryption failed".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_BYTES + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    async fn unseal(&self, job: &JobId, sealed: &[u8]) -> Result<Credentials, SealError> {
        let Some((&VERSION, rest)) = sealed.split_first() else {
            return Err(SealError("unknown sealed format".into()));
        };
        if rest.len() < NONCE_BYTES {
            return Err(SealError("sealed value too short".into()));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        let aad = associated_data(job);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad })
            .map_err(|_| SealError("cannot unseal: another key, another job, or tampered".into()))?;
        serde_json::from_slice(&plain).map_err(|_| SealError("unsealed value is not credentials".into()))
    }
}
