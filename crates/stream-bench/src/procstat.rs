//! CPU time, memory and Redis connections of processes, read from `/proc` (Linux).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A name for one or more processes whose figures are added up (nginx's master and workers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPids {
    /// The name in the report (`server`, `redis`, ...).
    pub name: String,
    /// The processes.
    pub pids: Vec<u32>,
}

/// A `name=pid[,pid...]` argument that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadNamedPids(String);

impl fmt::Display for BadNamedPids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected name=pid[,pid...], got {:?}", self.0)
    }
}

impl std::error::Error for BadNamedPids {}

impl FromStr for NamedPids {
    type Err = BadNamedPids;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadNamedPids(s.to_owned());
        let (name, pids) = s.split_once('=').ok_or_else(bad)?;
        let pids = pids
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| p.trim().parse::<u32>().map_err(|_| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        if name.is_empty() || pids.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            name: name.to_owned(),
            pids,
        })
    }
}

/// User plus system CPU time of a process (all its threads), from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may contain spaces: fields count from after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no ')' in stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of stat(5), utime 14 and stime 15.
    let field = |n: usize| -> io::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("stat field {n}")))
    };
    let ticks = field(14)? + field(15)?;
    Ok(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// Busy CPU time of the whole machine, all cores (user, nice, system, irq, softirq, steal), from
/// the first line of `/proc/stat`.
pub fn machine_busy_seconds() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no cpu line in /proc/stat"))?
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    Ok(busy as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// The name under which [`CpuSnapshot`] reports the whole machine's busy CPU (all cores, so up to
/// 100 % per core).
pub const MACHINE: &str = "machine";

/// Resident set size of a process, in bytes, from `/proc/<pid>/statm`.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm"))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "statm"))?;
    Ok(pages * rustix::param::page_size() as u64)
}

/// Number of open file descriptors of a process: the entries of `/proc/<pid>/fd`.
pub fn open_fds(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Raises this process's soft limit on open files (`RLIMIT_NOFILE`) to at least `want`, up to
/// the hard limit; child processes started afterwards inherit it. Returns the soft limit now in
/// force, or an error saying why it stays below `want` (the hard limit is lower).
pub fn raise_fd_limit(want: u64) -> Result<u64, String> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= want {
        return Ok(current);
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if hard < want {
        return Err(format!(
            "the open-file limit is {current} (hard limit {hard}), and {want} are needed: raise the hard limit (ulimit -Hn, /etc/security/limits.conf or the container's nofile)"
        ));
    }
    let raised = rustix::process::Rlimit {
        current: Some(want),
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).map_err(|e| format!("raising the open-file limit to {want}: {e}"))?;
    Ok(want)
}

/// Socket inodes of established TCP connections whose remote port is `port`, from
/// `/proc/net/tcp` and `/proc/net/tcp6`.
fn established_inodes_to(port: u16) -> io::Result<Vec<u64>> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "01" {
                continue;
            }
            let remote_port = f[2].rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port)
                && let Ok(inode) = f[9].parse()
            {
                inodes.push(inode);
            }
        }
    }
    Ok(inodes)
}

/// Number of established TCP connections that process `pid` holds to remote port `port` (its
/// Redis connections when `port` is Redis's).
pub fn tcp_connections_to(pid: u32, port: u16) -> io::Result<usize> {
    let inodes = established_inodes_to(port)?;
    let mut count = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u64>().ok())
            && inodes.contains(&inode)
        {
            count += 1;
        }
    }
    Ok(count)
}

/// CPU time used over a window, for one named group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// Seconds of CPU (user + system) used in the window.
    pub seconds: f64,
    /// The same as a percentage of one core over the window's wall time.
    pub percent_of_core: f64,
}

/// CPU times of named groups at one instant; [`CpuSnapshot::since`] gives the use in between.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    seconds: BTreeMap<String, f64>,
}

impl CpuSnapshot {
    /// Reads every group now, plus the calling process as `load-client` and the whole machine as
    /// [`MACHINE`]. A process that is gone counts as zero.
    pub fn take(groups: &[NamedPids]) -> Self {
        let mut seconds = BTreeMap::new();
        for g in groups {
            let total: f64 = g.pids.iter().map(|&p| cpu_seconds(p).unwrap_or(0.0)).sum();
            seconds.insert(g.name.clone(), total);
        }
        seconds.insert("load-client".into(), cpu_seconds(std::process::id()).unwrap_or(0.0));
        seconds.insert(MACHINE.into(), machine_busy_seconds().unwrap_or(0.0));
        Self {
            at: Instant::now(),
            seconds,
        }
    }

    /// The CPU each group used from `earlier` to this snapshot.
    pub fn since(&self, earlier: &CpuSnapshot) -> BTreeMap<String, CpuUse> {
        let wall = self
            .at
            .saturating_duration_since(earlier.at)
            .max(Duration::from_millis(1));
        self.seconds
            .iter()
            .map(|(name, now)| {
                let used = (now - earlier.seconds.get(name).copied().unwrap_or(0.0)).max(0.0);
                let cpu = CpuUse {
                    seconds: used,
                    percent_of_core: 100.0 * used / wall.as_secs_f64(),
                };
                (name.clone(), cpu)
            })
            .collect()
    }
}

/// Total RSS of each group, in bytes.
pub fn rss_by_group(groups: &[NamedPids]) -> BTreeMap<String, u64> {
    groups
        .iter()
        .map(|g| (g.name.clone(), g.pids.iter().map(|&p| rss_bytes(p).unwrap_or(0)).sum()))
        .collect()
}

/// Redis connections of each group (connections to `redis_port`).
pub fn redis_connections_by_group(groups: &[NamedPids], redis_port: u16) -> BTreeMap<String, usize> {
    groups
        .iter()
        .map(|g| {
            let n = g
                .pids
                .iter()
                .map(|&p| tcp_connections_to(p, redis_port).unwrap_or(0))
                .sum();
            (g.name.clone(), n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_pids() {
        let g: NamedPids = "nchan=1,2, 3".parse().unwrap();
        assert_eq!(g.name, "nchan");
        assert_eq!(g.pids, vec![1, 2, 3]);
        assert!("nchan".parse::<NamedPids>().is_err());
        assert!("=1".parse::<NamedPids>().is_err());
        assert!("x=a".parse::<NamedPids>().is_err());
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        assert!(rss_bytes(me).unwrap() > 0);
        assert!(machine_busy_seconds().unwrap() > 0.0);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let _accepted = listener.accept().unwrap();
        assert_eq!(tcp_connections_to(me, port).unwrap(), 1);
        // At least stdin/out/err, the listener and both ends of the connection.
        assert!(open_fds(me).unwrap() >= 3);
        assert!(raise_fd_limit(16).unwrap() >= 16);
    }
}
