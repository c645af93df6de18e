//! How many COPY streams a database copy runs when `--jobs` does not say: as many as the
//! data can use and nothing caps lower — the machine relaying the rows, the servers sharing
//! this machine, the connections the servers have free. The choice and its reason are in the
//! plan (`barge init --dry-run`) and in a remote job's progress (`barge jobs show`).

use crate::{db::Db, error::Result, human::human_bytes};

/// Rows worth one more stream: below this, a stream's connections and its share of the
/// start-up cost are not repaid.
pub(crate) const BYTES_PER_STREAM: u64 = 64 << 20;
/// Table parts worth one more stream: for small tables the cost is round trips, not bytes.
pub(crate) const PARTS_PER_STREAM: usize = 25;
/// Most streams barge opens on its own; `--jobs` goes further.
pub(crate) const MAX_STREAMS: usize = 16;
/// Streams the relay carries per CPU of the machine running barge: a stream costs about
/// 15 % of a core (`make bench` reports barge's CPU time), so six leave room for the rest.
const STREAMS_PER_CPU: usize = 6;
/// Bytes a remote worker relays per vCPU in an hour at EC2's baseline network bandwidth:
/// general-purpose and compute types get about 0.47 Gbit/s per vCPU in each direction once
/// their burst allowance is spent (m7g.large: 0.937 Gbit/s), about 200 GiB an hour, and EC2
/// prices vCPUs linearly, so a copy that would outlast an hour on a small worker costs about
/// the same on a larger one and ends sooner (docs/deploy.md, "Worker size").
const RELAY_BYTES_PER_CPU_HOUR: u64 = 200 << 30;

/// What the choice depends on.
#[derive(Clone, Debug)]
pub(crate) struct Inputs {
    /// Bytes COPY moves.
    pub bytes: u64,
    /// Table parts to copy: no more streams than parts can work at once.
    pub parts: usize,
    /// CPUs of the machine running barge.
    pub cpus: usize,
    /// Both servers run on this machine: streams beyond its CPUs only contend.
    pub servers_here: bool,
    /// Sessions barge may open on the busier of the two servers for its streams (half the
    /// free connections, less barge's other sessions); None when unknown.
    pub connection_room: Option<usize>,
}

/// The chosen stream count and why, and the streams the data and the servers would take
/// from a relay with CPUs enough (what a remote worker is sized for).
pub(crate) fn streams(i: &Inputs) -> (usize, String, usize) {
    // Bytes, or the per-table round trips of many small tables, make work for a stream.
    let by_data = (i.bytes.div_ceil(BYTES_PER_STREAM) as usize).max(i.parts.div_ceil(PARTS_PER_STREAM));
    let mut limits: Vec<(usize, String)> = vec![
        (
            by_data.min(i.parts).max(1),
            format!(
                "{} of rows in {} table part(s), a stream per {} or per {PARTS_PER_STREAM} parts",
                human_bytes(i.bytes),
                i.parts,
                human_bytes(BYTES_PER_STREAM)
            ),
        ),
        (MAX_STREAMS, "barge's ceiling without --jobs".into()),
    ];
    if let Some(room) = i.connection_room {
        limits.push((room.max(1), "half the connections the servers have free".into()));
    }
    // The data, the servers' connections and the ceiling; then what relays them.
    let wanted = limits.iter().map(|(n, _)| *n).min().unwrap_or(1);
    limits.insert(1, (i.cpus * STREAMS_PER_CPU, format!("the relay's share of {} CPU(s) here", i.cpus)));
    if i.servers_here {
        limits.push((i.cpus.max(1), format!("both servers run on this machine, which has {} CPU(s)", i.cpus)));
    }
    let (n, why) = limits.iter().min_by_key(|(n, _)| *n).cloned().unwrap_or((1, String::new()));
    let others: Vec<String> = limits.iter().filter(|(_, w)| *w != why).map(|(m, w)| format!("{m} for {w}")).collect();
    (n, format!("{n} COPY stream(s): {why} (other limits: {})", others.join("; ")), wanted)
}

/// The vCPUs a remote worker relaying `streams` COPY streams and `bytes` of rows should
/// have, and why: the relay's share of a CPU per stream, and the baseline network bandwidth
/// that relays the rows within an hour. The coordinator picks the instance type from it.
pub fn worker_cpus(streams: usize, bytes: u64) -> (usize, String) {
    let for_streams = streams.max(1).div_ceil(STREAMS_PER_CPU);
    let for_bytes = (bytes.div_ceil(RELAY_BYTES_PER_CPU_HOUR) as usize).max(1);
    let n = for_streams.max(for_bytes);
    let why = format!(
        "{n} vCPU(s): {streams} COPY stream(s) at {STREAMS_PER_CPU} per vCPU need {for_streams}; {} relayed within an hour at EC2's baseline of {} per vCPU need {for_bytes}",
        human_bytes(bytes),
        human_bytes(RELAY_BYTES_PER_CPU_HOUR)
    );
    (n, why)
}

/// Connections barge may use for streams on `db`'s server: half of those free (the
/// application keeps the rest), less `others` barge opens besides its streams.
pub(crate) async fn connection_room(db: &Db, others: usize) -> Result<usize> {
    let free: i64 = db
        .query_one(
            "count the server's free connections",
            "select pg_catalog.current_setting('max_connections')::int8
                  - pg_catalog.current_setting('superuser_reserved_connections')::int8
                  - coalesce(pg_catalog.current_setting('reserved_connections', true)::int8, 0)
                  - (select count(*) from pg_catalog.pg_stat_activity where backend_type = 'client backend')",
            &[],
        )
        .await?
        .get(0);
    Ok((usize::try_from(free).unwrap_or(0) / 2).saturating_sub(others))
}

/// Whether `host` is this machine: a Unix socket directory or a loopback name or address.
pub(crate) fn is_here(host: &str) -> bool {
    host.is_empty()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs { bytes: 10 << 30, parts: 200, cpus: 2, servers_here: false, connection_room: Some(40) }
    }

    #[test]
    fn streams_follow_the_data_and_the_tightest_limit_is_named() {
        // GIVEN 10 GiB in 200 parts, relayed by 2 CPUs to remote servers with room
        let (n, why, _) = streams(&inputs());
        // THEN the relay's share of the CPUs decides
        assert_eq!(n, 12, "{why}");
        assert!(why.starts_with("12 COPY stream(s): the relay's share of 2 CPU(s) here"), "{why}");
        // A small database needs few streams, however large the worker
        let (n, why, _) = streams(&Inputs { bytes: 100 << 20, parts: 10, cpus: 16, ..inputs() });
        assert_eq!(n, 2, "{why}");
        assert!(why.contains("100.0 MiB of rows in 10 table part(s), a stream per 64.0 MiB or per 25 parts"), "{why}");
        // unless it has many tables: their round trips make the work
        assert_eq!(streams(&Inputs { bytes: 100 << 20, parts: 5000, cpus: 16, ..inputs() }).0, MAX_STREAMS);
        assert_eq!(streams(&Inputs { bytes: 1 << 20, parts: 100, cpus: 16, ..inputs() }).0, 4);
        // A large worker is capped at the ceiling, busy servers at their free connections
        assert_eq!(streams(&Inputs { cpus: 16, ..inputs() }).0, MAX_STREAMS);
        assert_eq!(streams(&Inputs { cpus: 16, connection_room: Some(5), ..inputs() }).0, 5);
        assert_eq!(streams(&Inputs { connection_room: Some(0), ..inputs() }).0, 1);
        // Servers on this machine share its CPUs with the relay
        let (n, why, _) = streams(&Inputs { servers_here: true, ..inputs() });
        assert_eq!(n, 2, "{why}");
        assert!(why.contains("both servers run on this machine"), "{why}");
        // One table in one part: one stream
        assert_eq!(streams(&Inputs { parts: 1, ..inputs() }).0, 1);
    }

    #[test]
    fn a_remote_worker_is_sized_for_the_streams_and_the_bytes() {
        // GIVEN 10 GiB in 200 parts on remote servers with room: 16 streams wanted, whatever
        // the CPUs of the machine planning it
        for cpus in [1, 2, 64] {
            assert_eq!(streams(&Inputs { cpus, ..inputs() }).2, MAX_STREAMS, "{cpus} CPU(s)");
        }
        // but no more than the servers' free connections allow, or the data needs
        assert_eq!(streams(&Inputs { connection_room: Some(5), ..inputs() }).2, 5);
        assert_eq!(streams(&Inputs { bytes: 100 << 20, parts: 10, ..inputs() }).2, 2);
        // THEN 16 streams want 3 vCPUs, and 10 GiB is relayed within the hour by any of them
        let (n, why) = worker_cpus(16, 10 << 30);
        assert_eq!(n, 3, "{why}");
        assert!(why.starts_with("3 vCPU(s): 16 COPY stream(s) at 6 per vCPU need 3; 10.0 GiB relayed"), "{why}");
        // A terabyte wants the bandwidth of 6 vCPUs; a small copy one
        assert_eq!(worker_cpus(16, 1 << 40).0, 6);
        assert_eq!(worker_cpus(2, 100 << 20).0, 1);
        assert_eq!(worker_cpus(0, 0).0, 1);
    }

    #[test]
    fn this_machine_is_a_socket_or_loopback() {
        for host in ["", "/var/run/postgresql", "localhost", "127.0.0.1", "::1", "127.8.9.10"] {
            assert!(is_here(host), "{host}");
        }
        for host in ["db.example.com", "10.0.0.5", "localhost.example.com", "::2"] {
            assert!(!is_here(host), "{host}");
        }
    }
}
