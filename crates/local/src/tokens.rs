//! [`BearerTokens`]: how `barge serve` recognises callers. One token for the user (kept in
//! a 0600 file the CLI reads), one per launched worker (handed to that worker only). Tokens
//! are kept as SHA-256 digests, so a lookup's timing says nothing about a token's bytes.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, PoisonError, RwLock},
};

use barge_jobs::{AuthError, Authenticator, Caller};
use sha2::{Digest, Sha256};

/// Callers by token digest. Clones share the same tokens (the API recognises what the
/// process launcher issues).
#[derive(Clone, Default)]
pub struct BearerTokens {
    callers: Arc<RwLock<HashMap<[u8; 32], Caller>>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token: `barge_` and 43 URL-safe characters (256 bits).
fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut token = String::from("barge_");
    let mut acc = 0u32;
    let mut bits = 0;
    for byte in bytes {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            token.push(char::from(ALPHABET[((acc >> bits) & 63) as usize]));
        }
    }
    if bits > 0 {
        token.push(char::from(ALPHABET[((acc << (6 - bits)) & 63) as usize]));
    }
    Ok(token)
}

impl BearerTokens {
    /// No tokens yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Issues a new token for `caller`.
    pub fn issue(&self, caller: Caller) -> std::io::Result<String> {
        let token = new_token()?;
        self.callers.write().unwrap_or_else(PoisonError::into_inner).insert(digest(&token), caller);
        Ok(token)
    }

    /// The user token in `path` (created 0600 when missing), recognised as `owner`.
    pub fn user_token_file(&self, path: &Path, owner: &str) -> std::io::Result<String> {
        if !path.exists() {
            match crate::create_private(path, new_token()?.as_bytes()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let token = String::from_utf8(crate::read_private(path)?)
            .map_err(|_| std::io::Error::other(format!("{} is not a token", path.display())))?
            .trim()
            .to_string();
        if token.len() < 32 {
            return Err(std::io::Error::other(format!(
                "{} holds no token; delete it to make a new one",
                path.display()
            )));
        }
        let caller = Caller::User { owner: owner.to_string() };
        self.callers.write().unwrap_or_else(PoisonError::into_inner).insert(digest(&token), caller);
        Ok(token)
    }

    /// Forgets every token of the worker on `instance_id` (its job finished).
    pub fn revoke_worker(&self, instance_id: &str) {
        self.callers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, caller| !matches!(caller, Caller::Worker { instance_id: id } if id == instance_id));
    }
}

impl Authenticator for BearerTokens {
    fn authenticate(&self, request: &http::request::Parts) -> Result<Caller, AuthError> {
        let header = request.headers.get(http::header::AUTHORIZATION).ok_or_else(|| {
            AuthError::Missing("send `Authorization: Bearer <token>` with the token barge serve wrote".into())
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .ok_or(AuthError::Invalid)?;
        self.callers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest(token.trim()))
            .cloned()
            .ok_or(AuthError::Invalid)
    }
}
