//! Where a worker that runs someone else's job may be pointed. A job's URLs come from an API
//! caller, and the worker runs inside the deployer's network with an instance role: a URL
//! must not turn it into a probe of the instance metadata service, of the worker itself, or
//! of files on it. Private ranges stay reachable: that is where databases live.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::conn::{Params, UrlError};

/// How far a job's worker may reach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// A worker in someone's network, running a caller's job: [`check_remote`] and
    /// [`forbidden`] apply (the default, and what every AWS stage uses).
    #[default]
    Remote,
    /// A worker on the user's own machine (`barge serve`, a local run): anything the user
    /// can reach, local files and loopback included.
    Anywhere,
}

/// Why a worker does not connect to `ip`, or `None` when it may.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    let ip = ip.to_canonical();
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_link_local() {
                Some("a link-local address (where instance metadata and cloud DNS answer)")
            } else if v4.is_loopback() || v4.octets()[0] == 0 {
                Some("the worker itself")
            } else if v4.is_multicast() || v4.is_broadcast() {
                Some("a multicast or broadcast address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            if segments[0] == 0xfd00 && segments[1] == 0x0ec2 {
                Some("the EC2 metadata and DNS range fd00:ec2::/32")
            } else if segments[0] & 0xffc0 == 0xfe80 {
                Some("a link-local address (where instance metadata and cloud DNS answer)")
            } else if v6.is_loopback() || v6.is_unspecified() {
                Some("the worker itself")
            } else if v6.is_multicast() {
                Some("a multicast or broadcast address")
            } else {
                None
            }
        }
    }
}

/// The host a job's worker connects to: a name or an address, never a Unix socket (a job
/// runs on another machine).
pub fn remote_host(params: &Params) -> Result<&str, UrlError> {
    match &params.host {
        None => Err(UrlError("has no host; give postgres://user:password@host:port/dbname".into())),
        Some(h) if h.starts_with('/') => {
            Err(UrlError("names a Unix socket; a job runs on another machine and needs a host name".into()))
        }
        Some(h) => Ok(h),
    }
}

/// Checks what can be checked of a remote job's URL before anything runs: a host name or
/// address (not a Unix socket), not a forbidden address, and no certificate file (a path
/// names a file on the worker, not the caller's; `sslrootcert=system` is the one choice).
/// The worker checks again after resolving the host name.
pub fn check_remote(params: &Params) -> Result<(), UrlError> {
    let host = remote_host(params)?;
    if let Ok(ip) = host.parse::<IpAddr>()
        && let Some(why) = forbidden(ip)
    {
        return Err(UrlError(format!("names {why}, which a worker never connects to")));
    }
    match params.sslrootcert.as_deref() {
        None | Some("system") => Ok(()),
        Some(_) => Err(UrlError(
            "sslrootcert names a file, which would be read on the worker: a job can use sslrootcert=system (the system's certificate authorities) only"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_link_local_and_self_are_forbidden_private_ranges_are_not() {
        for ip in [
            "169.254.169.254",
            "169.254.170.2",
            "fd00:ec2::254",
            "fd00:ec2::253",
            "fe80::1",
            "127.0.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "::ffff:169.254.169.254",
            "224.0.0.1",
        ] {
            assert!(forbidden(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["10.0.1.5", "172.31.0.9", "192.168.1.1", "100.64.0.1", "52.1.2.3", "2600:1f18::1", "fd12::1"] {
            assert!(forbidden(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }

    #[test]
    fn remote_urls_need_a_host_and_no_local_file() {
        let check = |url: &str| check_remote(&Params::parse(url).unwrap()).map_err(|e| e.0);
        check("postgres://u:p@db.internal:5432/app?sslrootcert=system").unwrap();
        assert!(check("postgres://u:p@169.254.169.254/app").unwrap_err().contains("link-local"));
        assert!(check("postgres://u:p@[fd00:ec2::254]/app").unwrap_err().contains("fd00:ec2"));
        assert!(check("postgres://u:p@db/app?sslrootcert=/etc/shadow").unwrap_err().contains("system"));
        assert!(check("postgres://u:p@/app?host=/tmp").unwrap_err().contains("Unix socket"));
        assert!(check("postgres:///app").unwrap_err().contains("no host"));
        // The refusal never says whether the file exists.
        assert_eq!(
            check("postgres://u:p@db/app?sslrootcert=/etc/shadow"),
            check("postgres://u:p@db/app?sslrootcert=/nonexistent")
        );
    }
}
