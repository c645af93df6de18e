//! [`IamAuthenticator`]: callers as API Gateway's IAM authorizer identified them. Every route
//! has IAM authorization, so a request that reaches the Lambda carries the caller's ARN in
//! `requestContext.authorizer.iam.userArn`. A worker is the worker role's assumed-role
//! session, which EC2 names after the instance (`…:assumed-role/<worker role>/i-0abc…`);
//! anyone else is a user, identified by what they cannot choose: an IAM user's ARN, or for an
//! assumed role the role and its account (`arn:aws:iam::<account>:role/<name>`). The session
//! name is the caller's pick (`--role-session-name`), so it never tells owners apart:
//! everyone who may assume a role shares its jobs (docs/deploy.md, "Who owns a job").

use barge_jobs::{AuthError, Authenticator, Caller};
use lambda_http::request::RequestContext;

/// Recognises callers from the IAM authorizer's context.
pub struct IamAuthenticator {
    worker_role: String,
}

impl IamAuthenticator {
    /// Workers are sessions of the role named `worker_role` (its name, not its ARN).
    pub fn new(worker_role: impl Into<String>) -> Self {
        IamAuthenticator { worker_role: worker_role.into() }
    }

    /// Who `arn` is.
    pub fn caller(&self, arn: &str) -> Result<Caller, AuthError> {
        let fields: Vec<&str> = arn.splitn(6, ':').collect();
        let [prefix, partition, _service, _region, account, resource] = fields[..] else {
            return Err(AuthError::Invalid);
        };
        if prefix != "arn" || partition.is_empty() || account.is_empty() {
            return Err(AuthError::Invalid);
        }
        if let Some(rest) = resource.strip_prefix("assumed-role/")
            && let Some((role, session)) = rest.split_once('/')
            && role == self.worker_role
        {
            // The worker role is assumable by EC2 only; its sessions are instance ids.
            let instance = session.strip_prefix("i-").is_some_and(|hex| {
                (8..=17).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            });
            return if instance {
                Ok(Caller::Worker { instance_id: session.to_string() })
            } else {
                Err(AuthError::Invalid)
            };
        }
        if let Some(rest) = resource.strip_prefix("assumed-role/") {
            let Some((role, _session)) = rest.split_once('/').filter(|(role, _)| !role.is_empty()) else {
                return Err(AuthError::Invalid);
            };
            return Ok(Caller::User { owner: format!("arn:{partition}:iam::{account}:role/{role}") });
        }
        Ok(Caller::User { owner: arn.to_string() })
    }
}

impl Authenticator for IamAuthenticator {
    fn authenticate(&self, request: &http::request::Parts) -> Result<Caller, AuthError> {
        let arn = match request.extensions.get::<RequestContext>() {
            Some(RequestContext::ApiGatewayV2(context)) => {
                context.authorizer.as_ref().and_then(|a| a.iam.as_ref()).and_then(|iam| iam.user_arn.clone())
            }
            _ => None,
        };
        let arn = arn.ok_or_else(|| AuthError::Missing("sign the request with SigV4 (service execute-api)".into()))?;
        self.caller(&arn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_instance_sessions_of_the_worker_role() {
        let auth = IamAuthenticator::new("barge-worker");
        assert_eq!(
            auth.caller("arn:aws:sts::123456789012:assumed-role/barge-worker/i-0123456789abcdef0"),
            Ok(Caller::Worker { instance_id: "i-0123456789abcdef0".into() })
        );
        assert_eq!(
            auth.caller("arn:aws:iam::123456789012:user/alice"),
            Ok(Caller::User { owner: "arn:aws:iam::123456789012:user/alice".into() })
        );
        // A session of a role is the role: the session name is whatever the caller chose.
        for session in ["alice@example.com", "bob", "i-0123456789abcdef0"] {
            assert_eq!(
                auth.caller(&format!("arn:aws:sts::123456789012:assumed-role/Admin/{session}")),
                Ok(Caller::User { owner: "arn:aws:iam::123456789012:role/Admin".into() })
            );
        }
        // The same role name in another account is another owner.
        assert_eq!(
            auth.caller("arn:aws:sts::210987654321:assumed-role/Admin/alice@example.com"),
            Ok(Caller::User { owner: "arn:aws:iam::210987654321:role/Admin".into() })
        );
        assert_eq!(auth.caller("arn:aws:sts::123456789012:assumed-role/Admin"), Err(AuthError::Invalid));
        // The worker role with a session that is not an instance is nobody.
        assert_eq!(auth.caller("arn:aws:sts::123456789012:assumed-role/barge-worker/mallory"), Err(AuthError::Invalid));
        assert_eq!(auth.caller("not an arn"), Err(AuthError::Invalid));
        // A role whose name merely starts like the worker role is a user.
        assert!(matches!(
            auth.caller("arn:aws:sts::123456789012:assumed-role/barge-worker-x/i-0123456789abcdef0"),
            Ok(Caller::User { .. })
        ));
    }
}
