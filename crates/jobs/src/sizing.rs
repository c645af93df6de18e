//! Sizing a remote worker from the data: the worker plans, then asks the coordinator
//! (`POST /jobs/{id}/size`) for the vCPUs its copy wants; the coordinator picks the smallest
//! type of the deployment's allow-list that has them and, when that is larger than the
//! machine the worker runs on, relaunches the job there. It decides once per job: the
//! decision is recorded in the job ([`InstanceSizing`]) and shown by `barge jobs show`.
//!
//! Why a relaunch and not a choice at launch: the estimate needs the source's catalog,
//! which only a worker inside the databases' network can read.

use serde::{Deserialize, Serialize};

use crate::job::Job;

/// Longest reason a worker may give.
pub const MAX_REASON_BYTES: usize = 1000;
/// Most vCPUs a worker may ask for, or say it has.
pub const MAX_VCPUS: u32 = 1024;

/// What a job's worker size was decided to be, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSizing {
    /// The type the job was relaunched on; `None` when its first worker was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Why, for users.
    pub reason: String,
}

/// `POST /jobs/{id}/size`: what the worker's plan wants, and what it runs on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeRequest {
    /// CPUs of the machine the worker runs on.
    pub cpus: u32,
    /// vCPUs the copy wants (the engine's plan: COPY streams and bytes to relay).
    pub vcpus: u32,
    /// How the plan arrived at them.
    pub reason: String,
}

impl SizeRequest {
    /// Refuses values no worker sends: counts outside 1..=[`MAX_VCPUS`], a reason empty,
    /// longer than [`MAX_REASON_BYTES`] or holding control characters.
    pub fn check(&self) -> Result<(), String> {
        for (name, n) in [("cpus", self.cpus), ("vcpus", self.vcpus)] {
            if !(1..=MAX_VCPUS).contains(&n) {
                return Err(format!("{name}: 1 to {MAX_VCPUS}"));
            }
        }
        if self.reason.is_empty() || self.reason.len() > MAX_REASON_BYTES || self.reason.chars().any(char::is_control) {
            return Err(format!("reason: 1 to {MAX_REASON_BYTES} bytes without control characters"));
        }
        Ok(())
    }
}

/// The coordinator's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeAnswer {
    /// Stop without reporting: the job was relaunched on this type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relaunched_on: Option<String>,
    /// Why, for the worker's log.
    pub reason: String,
}

/// What the coordinator does about a size request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Record this on the job (relaunching it when a type is named).
    Record(InstanceSizing),
    /// The job was already sized (a retried call, or the relaunched worker asking): answer
    /// with what was decided, change nothing.
    Decided(InstanceSizing),
}

/// The vCPUs of an EC2 instance type, read from its size as EC2 names them: `medium` 1,
/// `large` 2, `xlarge` 4, `Nxlarge` 4·N. `None` for what the name does not tell (`metal`,
/// burstable `t` families, whose `micro` to `large` all have 2, unknown sizes): such types
/// are used when named (`--instance-type`), never chosen.
pub fn vcpus_of(instance_type: &str) -> Option<u32> {
    let (family, size) = instance_type.split_once('.')?;
    if family.is_empty() || family.starts_with('t') {
        return None;
    }
    match size {
        "medium" => Some(1),
        "large" => Some(2),
        "xlarge" => Some(4),
        _ => size.strip_suffix("xlarge")?.parse::<u32>().ok().filter(|n| (2..=224).contains(n)).map(|n| n * 4),
    }
}

/// The decision for `request` on `job`, with the deployment's allowed types (`allowed`,
/// in the order the stage lists them; empty when it lists none).
pub fn decide(job: &Job, allowed: &[String], request: &SizeRequest) -> Decision {
    if let Some(sizing) = &job.sizing {
        return Decision::Decided(sizing.clone());
    }
    let keep = |reason: String| Decision::Record(InstanceSizing { instance_type: None, reason });
    let wants = &request.reason;
    if let Some(kind) = &job.options.instance_type {
        return keep(format!("kept {kind}, named by --instance-type; the copy wants {wants}"));
    }
    if allowed.is_empty() {
        return keep(format!(
            "kept this worker's {} CPU(s): the deployment lists no instance types to choose from; the copy wants {wants}",
            request.cpus
        ));
    }
    // Smallest that has them, else the largest; ties: the stage's order.
    let sized: Vec<(&str, u32)> = allowed.iter().filter_map(|t| Some((t.as_str(), vcpus_of(t)?))).collect();
    let fits = sized.iter().filter(|(_, n)| *n >= request.vcpus).min_by_key(|(_, n)| *n);
    let largest = sized.iter().rev().max_by_key(|(_, n)| *n);
    let Some(&(kind, n)) = fits.or(largest) else {
        return keep(format!(
            "kept this worker's {} CPU(s): the size of no allowed type ({}) can be told from its name; the copy wants {wants}",
            request.cpus,
            allowed.join(", ")
        ));
    };
    if n <= request.cpus {
        let why = if n >= request.vcpus { "enough" } else { "as many as the largest allowed type has" };
        return keep(format!("kept this worker's {} CPU(s), {why}: the copy wants {wants}", request.cpus));
    }
    let short = if n < request.vcpus { " (the largest allowed)" } else { "" };
    Decision::Record(InstanceSizing {
        instance_type: Some(kind.to_string()),
        reason: format!("relaunched on {kind}{short}, {n} vCPU(s) instead of {}: the copy wants {wants}", request.cpus),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        job::{Deadlines, JobId, Timestamp},
        spec::{Command, ConnUrl, Filter, JobSpec, Options},
    };

    fn job() -> Job {
        let spec = JobSpec {
            command: Command::Init,
            source_url: ConnUrl::new("postgres://u:pw@a/db"),
            target_url: ConnUrl::new("postgres://u:pw@b/db"),
            filter: Filter::default(),
            options: Options::default(),
        };
        Job::new(JobId::random(), "alice", &spec, vec![1], None, Deadlines::default(), Timestamp::from_millis(0))
    }

    fn asks(cpus: u32, vcpus: u32) -> SizeRequest {
        SizeRequest { cpus, vcpus, reason: format!("{vcpus} vCPU(s): 16 COPY stream(s)") }
    }

    fn types(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn sizes_are_read_from_ec2_names() {
        for (name, n) in [
            ("m7g.medium", Some(1)),
            ("m7g.large", Some(2)),
            ("c7g.xlarge", Some(4)),
            ("m7i.2xlarge", Some(8)),
            ("r7g.16xlarge", Some(64)),
            ("m7i.metal-24xl", None),
            ("m7g.metal", None),
            ("t4g.large", None),
            ("m7g.0xlarge", None),
            ("m7g.1xlarge", None),
            ("m7g.99999999999xlarge", None),
            ("large", None),
            (".large", None),
        ] {
            assert_eq!(vcpus_of(name), n, "{name}");
        }
    }

    #[test]
    fn the_smallest_allowed_type_with_the_vcpus_wanted_is_chosen() {
        let allowed = types(&["m7g.large", "m6g.large", "c7g.xlarge", "m7g.2xlarge", "c7g.2xlarge", "m7g.metal"]);
        let relaunch = |decision: Decision| match decision {
            Decision::Record(InstanceSizing { instance_type: Some(kind), reason }) => (kind, reason),
            other => panic!("{other:?}"),
        };
        // 3 wanted on 2: the 4-vCPU type
        let (kind, reason) = relaunch(decide(&job(), &allowed, &asks(2, 3)));
        assert_eq!(kind, "c7g.xlarge");
        assert_eq!(
            reason,
            "relaunched on c7g.xlarge, 4 vCPU(s) instead of 2: the copy wants 3 vCPU(s): 16 COPY stream(s)"
        );
        // 6 wanted: the first 8-vCPU type the stage lists
        assert_eq!(relaunch(decide(&job(), &allowed, &asks(2, 6))).0, "m7g.2xlarge");
        // 100 wanted: the largest allowed, said so
        let (kind, reason) = relaunch(decide(&job(), &allowed, &asks(2, 100)));
        assert_eq!(kind, "m7g.2xlarge");
        assert!(reason.contains("(the largest allowed)"), "{reason}");
    }

    #[test]
    fn the_worker_is_kept_when_it_is_large_enough_or_nothing_else_may_be_chosen() {
        let allowed = types(&["m7g.large", "c7g.xlarge"]);
        let kept = |decision: Decision| match decision {
            Decision::Record(InstanceSizing { instance_type: None, reason }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(kept(decide(&job(), &allowed, &asks(2, 1))).starts_with("kept this worker's 2 CPU(s), enough"));
        assert!(kept(decide(&job(), &allowed, &asks(4, 8))).contains("as many as the largest allowed type has"));
        assert!(kept(decide(&job(), &[], &asks(2, 8))).contains("lists no instance types"));
        assert!(kept(decide(&job(), &types(&["m7g.metal"]), &asks(2, 8))).contains("can be told from its name"));
        let mut named = job();
        named.options.instance_type = Some("m7g.large".into());
        assert!(kept(decide(&named, &allowed, &asks(2, 8))).starts_with("kept m7g.large, named by --instance-type"));
        // Decided once: a second request gets the first decision
        let mut sized = job();
        let first = InstanceSizing { instance_type: Some("c7g.xlarge".into()), reason: "r".into() };
        sized.sizing = Some(first.clone());
        assert_eq!(decide(&sized, &allowed, &asks(4, 8)), Decision::Decided(first));
    }

    #[test]
    fn requests_no_worker_sends_are_refused() {
        assert!(asks(2, 3).check().is_ok());
        assert!(asks(0, 3).check().unwrap_err().starts_with("cpus"));
        assert!(asks(2, 5000).check().unwrap_err().starts_with("vcpus"));
        for reason in [String::new(), "x".repeat(MAX_REASON_BYTES + 1), "a\nb".into(), "\u{1b}[31m".into()] {
            assert!(SizeRequest { reason, ..asks(2, 3) }.check().unwrap_err().starts_with("reason"));
        }
    }
}
