//! Turns the runs' records into `docs/benchmarks.md` and its SVG charts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::procstat::MACHINE;
use crate::record::{BulkResult, LoadResult, Measurement, OpsResult, Record};

/// The project's server, against which the others are compared.
pub const PROJECT: &str = "stream-axum";
/// The bare PUBLISH loop of baseline (a).
pub const BARE_PUBLISH: &str = "bare-publish";
/// The project's emit path of baseline (a).
pub const STREAM_EMIT: &str = "stream-emit";
/// The bare subscriber fan-out of baseline (b).
pub const BARE_FANOUT: &str = "bare-redis-fanout";
/// The project's broker subscriptions of baseline (b).
pub const BROKER_FANOUT: &str = "stream-broker-fanout";
/// The floor of idle memory: a bare event-stream response on the project's server.
pub const BARE_AXUM: &str = "bare-axum";
/// The peers.
pub const PEERS: [&str; 2] = ["nchan", "centrifugo"];

/// What the report says besides the records: where and how it was run.
#[derive(Debug, Clone, Default)]
pub struct ReportMeta {
    /// `key = value` facts (versions, git revision, date, settings), in order.
    pub facts: Vec<(String, String)>,
    /// Plain statements about what was and was not measured.
    pub notes: Vec<String>,
}

/// Median, minimum and maximum of some runs' figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median (the mean of the middle two for an even count).
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`, `None` when empty.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 || x.fract() == 0.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn spread_cell(s: Option<Spread>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s.min == s.max => num(s.median),
        Some(s) => format!("{} ({}–{})", num(s.median), num(s.min), num(s.max)),
    }
}

fn ratio_cell(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// One server's runs of a scenario.
type ServerRuns<'a> = (String, Vec<&'a Record>);

/// Records grouped by scenario, then server, in first-seen order.
#[derive(Debug, Default)]
struct Grouped<'a> {
    scenarios: Vec<(String, Vec<ServerRuns<'a>>)>,
}

impl<'a> Grouped<'a> {
    fn new(records: &'a [Record]) -> Self {
        let mut g = Self::default();
        for r in records {
            let idx = match g.scenarios.iter().position(|(s, _)| *s == r.scenario) {
                Some(i) => i,
                None => {
                    g.scenarios.push((r.scenario.clone(), Vec::new()));
                    g.scenarios.len() - 1
                }
            };
            let servers = &mut g.scenarios[idx].1;
            match servers.iter_mut().find(|(s, _)| *s == r.server) {
                Some((_, runs)) => runs.push(r),
                None => servers.push((r.server.clone(), vec![r])),
            }
        }
        g
    }

    fn runs(&self, scenario: &str, server: &str) -> &[&'a Record] {
        self.scenarios
            .iter()
            .find(|(s, _)| s == scenario)
            .and_then(|(_, servers)| servers.iter().find(|(s, _)| s == server))
            .map_or(&[], |(_, runs)| runs.as_slice())
    }

    fn load_spread(&self, scenario: &str, server: &str, f: impl Fn(&LoadResult) -> f64) -> Option<Spread> {
        Spread::of(self.runs(scenario, server).iter().filter_map(|r| match &r.measurement {
            Measurement::Load(l) => Some(f(l)),
            _ => None,
        }))
    }

    fn ops_spread(&self, scenario: &str, server: &str, f: impl Fn(&OpsResult) -> f64) -> Option<Spread> {
        Spread::of(self.runs(scenario, server).iter().filter_map(|r| match &r.measurement {
            Measurement::Ops(o) => Some(f(o)),
            _ => None,
        }))
    }
}

/// A scenario's heading and what it does, by its name.
fn describe(scenario: &str) -> (String, String) {
    if let Some(rest) = scenario.strip_prefix("fanout-") {
        let (m, mode) = rest.split_once('-').unwrap_or((rest, ""));
        let how = match mode.strip_prefix('r').and_then(|r| r.parse::<u64>().ok()) {
            Some(rate) => format!("at {} msg/s", num(rate as f64)),
            None if mode == "sat" => "at saturation".into(),
            None => "at a fixed rate".into(),
        };
        return (
            format!("Fan-out: 1 channel to {m} subscribers, {how}"),
            format!(
                "{m} SSE subscriptions on one channel; messages published open-loop {how} (see the offered rate). \
                 The in-process baselines (b) run the same fan-out with no HTTP (their Redis CPU is counted in \
                 \"other\")."
            ),
        );
    }
    match scenario {
        "single-stream" => (
            "Single-stream saturation".into(),
            "1 subscriber, offered 30,000 msg/s over keep-alive connections.".into(),
        ),
        "unloaded" => (
            "Unloaded latency".into(),
            "1 subscriber, 100 msg/s: publish→receive latency when nothing queues.".into(),
        ),
        s if s.starts_with("emit-") => (
            format!("Emit rate: baseline (a), {} task(s)", &s["emit-".len()..]),
            "A bare redis-rs `PUBLISH` loop on one multiplexed connection against `Emitter::data` on the \
             Redis broker (one emitter shared by the tasks), same concurrency, no HTTP, no subscribers. \
             Redis CPU per operation is Redis's own user plus system time (`INFO cpu`) over the side's \
             operations."
                .into(),
        ),
        "lease" => (
            "Lease operations: baseline (c)".into(),
            "`redis-benchmark` running `EVALSHA` of the lease acquire script against stream-lease's \
             `acquire` + `release` (two script calls per operation), same concurrency."
                .into(),
        ),
        "archive-bulk" => (
            "Archive bulk writes: baseline (d)".into(),
            "A raw `_bulk` loop against the OpenSearch store's writer, same events and batch size \
             (`crates/stream-store-opensearch/examples/bulk_throughput.rs`)."
                .into(),
        ),
        s if s.starts_with("unicast-") => (
            format!("Unicast: {} channels, 1 subscriber each", &s["unicast-".len()..]),
            "One subscription per channel; messages go round-robin over the channels.".into(),
        ),
        s if s.starts_with("idle-") => (
            format!("Idle memory: {} idle streams", &s["idle-".len()..]),
            "Idle SSE streams, one per channel: the server's RSS growth per stream, and each \
             process's Redis connections with the streams open."
                .into(),
        ),
        s => (s.to_owned(), String::new()),
    }
}

fn load_table(out: &mut String, g: &Grouped<'_>, scenario: &str, servers: &[ServerRuns<'_>]) {
    let reference = g
        .load_spread(scenario, PROJECT, |l| l.deliveries_per_s)
        .map(|s| s.median);
    let reference_p99 = g
        .load_spread(scenario, PROJECT, |l| l.latency.p99_us as f64)
        .map(|s| s.median);
    out.push_str(
        "| server | runs | subs open | offered msg/s | published msg/s | deliveries/s | p50 µs | p99 µs | \
         lost | dup | reordered | CPU % server | CPU % redis | CPU % client | CPU % other | \
         stream-axum ÷ this (deliveries/s) | this ÷ stream-axum (p99) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (server, runs) in servers {
        let s = |f: &dyn Fn(&LoadResult) -> f64| g.load_spread(scenario, server, f);
        let cpu =
            |name: &'static str| s(&move |l: &LoadResult| l.cpu.get(name).map_or(f64::NAN, |c| c.percent_of_core));
        let deliveries = s(&|l| l.deliveries_per_s);
        let p99 = s(&|l| l.latency.p99_us as f64);
        let _ = writeln!(
            out,
            "| {server} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            runs.len(),
            spread_cell(s(&|l| l.subscribed as f64)),
            spread_cell(s(&|l| l.offered_rate)),
            spread_cell(s(&|l| l.achieved_publish_rate)),
            spread_cell(deliveries),
            spread_cell(s(&|l| l.latency.p50_us as f64)),
            spread_cell(p99),
            spread_cell(s(&|l| l.lost as f64)),
            spread_cell(s(&|l| l.duplicates as f64)),
            spread_cell(s(&|l| l.out_of_order as f64)),
            spread_cell(cpu("server")),
            spread_cell(cpu("redis")),
            spread_cell(cpu("load-client")),
            spread_cell(s(&other_cpu)),
            if server == PROJECT {
                "1.00×".into()
            } else {
                ratio_cell(reference, deliveries.map(|d| d.median))
            },
            if server == PROJECT {
                "1.00×".into()
            } else {
                ratio_cell(p99.map(|p| p.median), reference_p99)
            },
        );
    }
    let errors: Vec<String> = servers
        .iter()
        .flat_map(|(server, runs)| {
            runs.iter().flat_map(move |r| match &r.measurement {
                Measurement::Load(l) => l
                    .errors
                    .iter()
                    .take(2)
                    .map(|e| format!("{server} run {}: {e}", r.run))
                    .collect::<Vec<_>>(),
                _ => Vec::new(),
            })
        })
        .take(8)
        .collect();
    if !errors.is_empty() {
        out.push_str("\nErrors seen:\n\n");
        for e in errors {
            let _ = writeln!(out, "- `{}`", e.replace('`', "'"));
        }
    }
}

/// CPU (% of one core) that processes other than the named ones and the load client used in the
/// window: the whole machine's busy time less theirs.
fn other_cpu(l: &LoadResult) -> f64 {
    let Some(machine) = l.cpu.get(MACHINE) else {
        return f64::NAN;
    };
    let named: f64 = l
        .cpu
        .iter()
        .filter(|(name, _)| name.as_str() != MACHINE)
        .map(|(_, c)| c.percent_of_core)
        .sum();
    (machine.percent_of_core - named).max(0.0)
}

fn idle_table(out: &mut String, g: &Grouped<'_>, scenario: &str, servers: &[ServerRuns<'_>]) {
    out.push_str(
        "| server | runs | streams open | server RSS before (MiB) | server RSS after (MiB) | KiB per stream | \
         Redis connections (server) |\n|---|---|---|---|---|---|---|\n",
    );
    for (server, runs) in servers {
        let s = |f: &dyn Fn(&LoadResult) -> f64| g.load_spread(scenario, server, f);
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let rss = |l: &LoadResult, after: bool| {
            let m = if after { &l.rss_after } else { &l.rss_before };
            m.get("server").copied().unwrap_or(0)
        };
        let _ = writeln!(
            out,
            "| {server} | {} | {} | {} | {} | {} | {} |",
            runs.len(),
            spread_cell(s(&|l| l.subscribed as f64)),
            spread_cell(s(&|l| mib(rss(l, false)))),
            spread_cell(s(&|l| mib(rss(l, true)))),
            spread_cell(s(&per_stream_kib)),
            spread_cell(s(&|l| l
                .redis_connections
                .get("server")
                .map_or(f64::NAN, |&c| c as f64))),
        );
    }
}

fn per_stream_kib(l: &LoadResult) -> f64 {
    let before = l.rss_before.get("server").copied().unwrap_or(0);
    let after = l.rss_after.get("server").copied().unwrap_or(0);
    if l.subscribed == 0 {
        return f64::NAN;
    }
    after.saturating_sub(before) as f64 / 1024.0 / l.subscribed as f64
}

fn ops_table(out: &mut String, g: &Grouped<'_>, scenario: &str, servers: &[ServerRuns<'_>]) {
    let first = servers.first().map(|(s, _)| s.clone()).unwrap_or_default();
    let reference = g.ops_spread(scenario, &first, |o| o.ops_per_s).map(|s| s.median);
    let _ = writeln!(
        out,
        "| measured | operation | runs | concurrency | ops/s | p50 µs | p99 µs | errors | Redis CPU µs/op | ÷ {first} (ops/s) |\n\
         |---|---|---|---|---|---|---|---|---|---|"
    );
    for (server, runs) in servers {
        let s = |f: &dyn Fn(&OpsResult) -> f64| g.ops_spread(scenario, server, f);
        let operation = runs
            .iter()
            .find_map(|r| match &r.measurement {
                Measurement::Ops(o) => Some(o.operation.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let ops = s(&|o| o.ops_per_s);
        let _ = writeln!(
            out,
            "| {server} | {operation} | {} | {} | {} | {} | {} | {} | {} | {} |",
            runs.len(),
            spread_cell(s(&|o| o.concurrency as f64)),
            spread_cell(ops),
            spread_cell(s(&|o| o.latency.p50_us as f64)),
            spread_cell(s(&|o| o.latency.p99_us as f64)),
            spread_cell(s(&|o| o.errors as f64)),
            spread_cell(s(&|o| o.redis_cpu_us_per_op.unwrap_or(f64::NAN))),
            ratio_cell(ops.map(|o| o.median), reference),
        );
    }
}

fn bulk_table(out: &mut String, servers: &[ServerRuns<'_>]) {
    let bulks: Vec<&BulkResult> = servers
        .iter()
        .flat_map(|(_, runs)| runs.iter())
        .filter_map(|r| match &r.measurement {
            Measurement::Bulk(b) => Some(b),
            _ => None,
        })
        .collect();
    let raw = Spread::of(bulks.iter().map(|b| b.raw_events_per_s));
    let store = Spread::of(bulks.iter().map(|b| b.store_events_per_s));
    let ratio = Spread::of(bulks.iter().map(|b| b.store_events_per_s / b.raw_events_per_s));
    let _ = writeln!(
        out,
        "| runs | events per side | batch | raw `_bulk` loop events/s | store writer events/s | store ÷ raw |\n\
         |---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {} |",
        bulks.len(),
        spread_cell(Spread::of(bulks.iter().map(|b| b.events as f64))),
        spread_cell(Spread::of(bulks.iter().map(|b| b.batch as f64))),
        spread_cell(raw),
        spread_cell(store),
        ratio.map_or("–".into(), |r| format!(
            "{:.2}× ({:.2}–{:.2})",
            r.median, r.min, r.max
        )),
    );
}

/// One goal's line: what, the figure, the target, met or not.
struct Goal {
    what: String,
    figure: Option<f64>,
    shown: String,
    target: String,
    met: Option<bool>,
}

/// A goal on the ratio of two figures: `ours ÷ base ≥ target`.
fn ratio_goal(what: String, ours: Option<f64>, base: Option<f64>, unit: &str, target: f64) -> Goal {
    let r = ours.zip(base).map(|(o, b)| o / b);
    Goal {
        what,
        figure: r,
        shown: r.map_or("not measured".into(), |r| {
            format!(
                "{r:.2}× ({} vs {} {unit})",
                num(ours.unwrap_or(0.0)),
                num(base.unwrap_or(0.0))
            )
        }),
        target: format!("≥ {target}×"),
        met: r.map(|r| r >= target),
    }
}

fn goals(g: &Grouped<'_>) -> Vec<Goal> {
    let med = |s: Option<Spread>| s.map(|s| s.median);
    let mut goals = Vec::new();

    for (tasks, target) in [(1, 0.8), (64, 0.6)] {
        let scenario = format!("emit-{tasks}");
        goals.push(ratio_goal(
            format!("Emit rate against the bare PUBLISH loop, {tasks} task(s)"),
            med(g.ops_spread(&scenario, STREAM_EMIT, |o| o.ops_per_s)),
            med(g.ops_spread(&scenario, BARE_PUBLISH, |o| o.ops_per_s)),
            "ops/s",
            target,
        ));
    }
    let redis_cpu = |scenario: &str, server: &str| {
        med(g.ops_spread(scenario, server, |o| o.redis_cpu_us_per_op.unwrap_or(f64::NAN))).filter(|c| c.is_finite())
    };
    let cpu = redis_cpu("emit-64", STREAM_EMIT);
    goals.push(Goal {
        what: "Redis CPU per published event, under load (64 tasks)".into(),
        figure: cpu,
        shown: cpu.map_or("not measured".into(), |c| {
            format!(
                "{c:.1} µs (bare PUBLISH {:.1} µs; 1 task, an idle Redis woken per call: {:.1} µs, bare {:.1} µs)",
                redis_cpu("emit-64", BARE_PUBLISH).unwrap_or(f64::NAN),
                redis_cpu("emit-1", STREAM_EMIT).unwrap_or(f64::NAN),
                redis_cpu("emit-1", BARE_PUBLISH).unwrap_or(f64::NAN),
            )
        }),
        target: "≤ 6 µs".into(),
        met: cpu.map(|c| c <= 6.0),
    });

    let ours = med(g.load_spread("fanout-1000-sat", PROJECT, |l| l.deliveries_per_s));
    goals.push(ratio_goal(
        "Deliveries/s with 1,000 subscribers (saturation) against the bare subscriber fan-out".into(),
        ours,
        med(g.load_spread("fanout-1000-sat", BARE_FANOUT, |l| l.deliveries_per_s)),
        "/s",
        0.7,
    ));

    let best_peer = PEERS
        .iter()
        .filter_map(|p| med(g.load_spread("fanout-1000-sat", p, |l| l.deliveries_per_s)))
        .fold(None, |acc: Option<f64>, x| Some(acc.map_or(x, |a| a.max(x))));
    goals.push(ratio_goal(
        "Deliveries/s with 1,000 subscribers (saturation) against the better of Nchan and Centrifugo".into(),
        ours,
        best_peer,
        "/s",
        2.0,
    ));

    goals.push(p99_goal(
        g,
        "fanout-1000-fixed",
        "p99 with 1,000 subscribers at the same fixed offered load, against the lower of the peers",
    ));
    goals.push(p99_goal(
        g,
        "fanout-100-r1000",
        "p99 with 100 subscribers at 1,000 msg/s, against the lower of the peers",
    ));

    let single = med(g.load_spread("single-stream", PROJECT, |l| l.deliveries_per_s));
    goals.push(Goal {
        what: "Single stream, 1 subscriber, at saturation".into(),
        figure: single,
        shown: single.map_or("not measured".into(), |d| format!("{} msg/s", num(d))),
        target: "≥ 30,000 msg/s".into(),
        met: single.map(|d| d >= 30_000.0),
    });

    let p50 = med(g.load_spread("unloaded", PROJECT, |l| l.latency.p50_us as f64));
    goals.push(Goal {
        what: "Unloaded publish→receive p50 over loopback".into(),
        figure: p50,
        shown: p50.map_or("not measured".into(), |p| format!("{} µs", num(p))),
        target: "≤ 150 µs".into(),
        met: p50.map(|p| p <= 150.0),
    });

    let idle = g
        .scenarios
        .iter()
        .find(|(s, _)| s.starts_with("idle-"))
        .map(|(s, _)| s.clone())
        .unwrap_or_default();
    let kib = med(g.load_spread(&idle, PROJECT, per_stream_kib));
    let floor = med(g.load_spread(&idle, BARE_AXUM, per_stream_kib));
    let over = kib.zip(floor).map(|(k, f)| k - f);
    goals.push(Goal {
        what: "Idle memory per stream over the floor (a bare event-stream response on the same server)".into(),
        figure: over,
        shown: match (kib, floor) {
            (Some(k), Some(f)) => format!("{} KiB ({} KiB, floor {} KiB)", num(k - f), num(k), num(f)),
            _ => "not measured".into(),
        },
        target: "≤ 8 KiB".into(),
        met: over.map(|o| o <= 8.0),
    });
    let nchan = med(g.load_spread(&idle, "nchan", per_stream_kib));
    goals.push(Goal {
        what: "Idle memory per stream in all".into(),
        figure: kib,
        shown: kib.map_or("not measured".into(), |k| match nchan {
            Some(n) => format!("{} KiB (Nchan {} KiB)", num(k), num(n)),
            None => format!("{} KiB", num(k)),
        }),
        target: "< 14 KiB".into(),
        met: kib.map(|k| k < 14.0),
    });
    let conns = g
        .runs(&idle, PROJECT)
        .iter()
        .filter_map(|r| match &r.measurement {
            Measurement::Load(l) => l.redis_connections.get("server").map(|&c| c as f64),
            _ => None,
        })
        .fold(None, |acc: Option<f64>, x| Some(acc.map_or(x, |a| a.max(x))));
    goals.push(Goal {
        what: "Redis connections per process with the idle streams open".into(),
        figure: conns,
        shown: conns.map_or("not measured".into(), |c| format!("{c:.0}")),
        target: "≤ 2".into(),
        met: conns.map(|c| c <= 2.0),
    });
    goals
}

/// A goal on a scenario's p99: the project's below every peer's. A run that delivered nothing
/// has no latency (its p99 reads 0), so only runs with deliveries count; the project's own runs
/// all count.
fn p99_goal(g: &Grouped<'_>, scenario: &str, what: &str) -> Goal {
    let p99 = |server: &str, delivered_only: bool| {
        Spread::of(g.runs(scenario, server).iter().filter_map(|r| match &r.measurement {
            Measurement::Load(l) if !delivered_only || l.latency.count > 0 => Some(l.latency.p99_us as f64),
            _ => None,
        }))
        .map(|s| s.median)
    };
    let ours = p99(PROJECT, false);
    let peers = PEERS
        .iter()
        .filter_map(|p| p99(p, true))
        .fold(None, |acc: Option<f64>, x| Some(acc.map_or(x, |a| a.min(x))));
    Goal {
        what: what.into(),
        figure: ours,
        shown: match (ours, peers) {
            (Some(o), Some(p)) => format!("{} µs vs {} µs", num(o), num(p)),
            _ => "not measured".into(),
        },
        target: "lower".into(),
        met: ours.zip(peers).map(|(o, p)| o < p),
    }
}

/// One chart series: a server's median against the number of subscribers.
type Series = (String, Vec<(f64, f64)>);

/// Per server, `(subscribers, median of f)` over the `fanout-{M}-{mode}` scenarios.
fn fanout_series(g: &Grouped<'_>, mode: &str, f: impl Fn(&LoadResult) -> f64 + Copy) -> Vec<Series> {
    let mut by_server: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (scenario, servers) in &g.scenarios {
        let Some(m) = scenario
            .strip_prefix("fanout-")
            .and_then(|r| r.strip_suffix(&format!("-{mode}")))
            .and_then(|m| m.parse::<f64>().ok())
        else {
            continue;
        };
        for (server, _) in servers {
            if let Some(s) = g.load_spread(scenario, server, f) {
                by_server.entry(server.clone()).or_default().push((m, s.median));
            }
        }
    }
    by_server
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            (k, v)
        })
        .collect()
}

/// Draws the series onto a chart whose y range is `$y_range` (linear or logarithmic).
macro_rules! draw_chart {
    ($root:expr, $title:expr, $y_desc:expr, $series:expr, $x_range:expr, $y_range:expr) => {{
        let mut chart = ChartBuilder::on($root)
            .caption($title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(80)
            .build_cartesian_2d($x_range, $y_range)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_desc("subscribers (log scale)")
            .y_desc($y_desc)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| num(*y))
            .draw()?;
        for (i, (name, pts)) in $series.iter().enumerate() {
            let color = Palette99::pick(i).mix(1.0);
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }};
}

/// Draws a line chart with a logarithmic x axis (subscribers) to an SVG file; the y axis is
/// logarithmic too with `log_y` (latencies that span milliseconds to seconds).
pub fn line_chart(
    path: &Path,
    title: &str,
    y_desc: &str,
    series: &[Series],
    log_y: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, 0.0f64);
    for &(x, y) in points {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        if y > 0.0 {
            y_min = y_min.min(y);
        }
        y_max = y_max.max(y);
    }
    if x_min > x_max {
        (x_min, x_max) = (1.0, 10.0);
    }
    if x_min == x_max {
        x_max = x_min * 10.0;
    }
    let y_max = if y_max > 0.0 { y_max * 1.15 } else { 1.0 };
    let x_range = (x_min * 0.8..x_max * 1.25).log_scale();
    let root = SVGBackend::new(path, (860, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    if log_y {
        let y_min = if y_min < y_max { y_min / 2.0 } else { y_max / 100.0 };
        draw_chart!(&root, title, y_desc, series, x_range, (y_min..y_max * 2.0).log_scale());
    } else {
        draw_chart!(&root, title, y_desc, series, x_range, 0.0..y_max);
    }
    root.present()?;
    Ok(())
}

fn machine_facts() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or("unknown".into(), |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    vec![
        ("CPU".into(), model),
        ("cores".into(), cores.to_string()),
        ("memory".into(), mem),
        ("kernel".into(), kernel.trim().to_owned()),
    ]
}

/// One chart of [`write_report`]: file name, title, y axis, scenario mode, figure, log y axis.
type ChartSpec = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    fn(&LoadResult) -> f64,
    bool,
);

/// The charts [`write_report`] draws.
const CHARTS: [ChartSpec; 4] = [
    (
        "fanout-deliveries-sat.svg",
        "Fan-out at saturation: deliveries/s",
        "deliveries/s",
        "sat",
        |l| l.deliveries_per_s,
        false,
    ),
    (
        "fanout-p99-sat.svg",
        "Fan-out at saturation: p99 latency",
        "p99 (ms, log scale)",
        "sat",
        |l| l.latency.p99_us as f64 / 1000.0,
        true,
    ),
    (
        "fanout-deliveries-fixed.svg",
        "Fan-out at a fixed rate: deliveries/s",
        "deliveries/s",
        "fixed",
        |l| l.deliveries_per_s,
        false,
    ),
    (
        "fanout-p99-fixed.svg",
        "Fan-out at a fixed rate: p99 latency",
        "p99 (ms, log scale)",
        "fixed",
        |l| l.latency.p99_us as f64 / 1000.0,
        true,
    ),
];

/// Writes the Markdown report to `markdown` and its charts into `chart_dir` (linked from the
/// report by `chart_link`, the directory as seen from the report). Returns the charts written.
pub fn write_report(
    records: &[Record],
    meta: &ReportMeta,
    markdown: &Path,
    chart_dir: &Path,
    chart_link: &str,
) -> Result<Vec<PathBuf>, Box<dyn std::error::Error + Send + Sync>> {
    let g = Grouped::new(records);
    std::fs::create_dir_all(chart_dir)?;
    let mut charts = Vec::new();
    for (file, title, y_desc, mode, f, log_y) in CHARTS {
        let series = fanout_series(&g, mode, f);
        if series.is_empty() {
            continue;
        }
        let path = chart_dir.join(file);
        line_chart(&path, title, y_desc, &series, log_y)?;
        charts.push(path);
    }

    let mut out = String::new();
    out.push_str(
        "# Benchmarks\n\nGenerated by `scripts/bench.sh` (`just bench`); do not edit by hand. Every figure below \
         comes from one run of the script on the machine described here. Each scenario ran the number of times \
         shown (`runs`); cells give the median, with the minimum and maximum in parentheses.\n\n",
    );
    out.push_str("## Machine, versions and settings\n\n| | |\n|---|---|\n");
    for (k, v) in machine_facts().iter().chain(meta.facts.iter()) {
        let _ = writeln!(out, "| {k} | {} |", v.replace('|', "\\|"));
    }
    out.push_str("\n## What was and was not measured\n\n");
    if meta.notes.is_empty() {
        out.push_str("- Everything listed below was measured in this run.\n");
    }
    for note in &meta.notes {
        let _ = writeln!(out, "- {note}");
    }

    out.push_str("\n## Goals (issues 11 and 12)\n\nTargets, not tests: ratios are taken within this run.\n\n");
    out.push_str("| goal | figure | target | status |\n|---|---|---|---|\n");
    for goal in goals(&g) {
        let status = match goal.met {
            Some(true) => "met",
            Some(false) => "not met",
            None => "not measured",
        };
        let _ = goal.figure;
        let _ = writeln!(out, "| {} | {} | {} | {status} |", goal.what, goal.shown, goal.target);
    }

    if !charts.is_empty() {
        out.push_str(
            "\n## Charts\n\nMedians of the runs, every server and in-process baseline that ran the scenario.\n\n",
        );
        for path in &charts {
            let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            let _ = writeln!(out, "![{file}]({chart_link}/{file})\n");
        }
    }

    out.push_str("\n## Scenarios\n");
    for (scenario, servers) in &g.scenarios {
        let (title, text) = describe(scenario);
        let _ = writeln!(out, "\n### {title}\n\n`{scenario}`. {text}\n");
        match servers
            .first()
            .and_then(|(_, runs)| runs.first())
            .map(|r| &r.measurement)
        {
            Some(Measurement::Load(_)) if scenario.starts_with("idle-") => idle_table(&mut out, &g, scenario, servers),
            Some(Measurement::Load(_)) => load_table(&mut out, &g, scenario, servers),
            Some(Measurement::Ops(_)) => ops_table(&mut out, &g, scenario, servers),
            Some(Measurement::Bulk(_)) => bulk_table(&mut out, servers),
            None => {}
        }
    }

    out.push_str(
        "\n## Method\n\n\
         - One load client (`stream-bench load`) for every server: M SSE subscriptions (reqwest HTTP/1.1, one \
         connection each, parsed by a minimal incremental SSE parser that reads only the marker fields out of each \
         event's JSON), and an open-loop publisher: message *n* is due at *n*/rate \
         seconds whatever the earlier answers, sent by K workers over K keep-alive connections.\n\
         - Every message carries its worker, its per-channel sequence number and its send time; each subscription \
         checks loss, duplicates and order per worker, and records publish→receive latency in an HdrHistogram (µs, \
         2 significant digits). Deliveries/s are distinct deliveries from the first publish to the last delivery.\n\
         - CPU is user + system time from `/proc/<pid>/stat` over the publish and drain window, as a percentage of \
         one core; \"other\" is the whole machine's busy CPU (`/proc/stat`) less the server's, Redis's and the \
         load client's, i.e. whatever else ran; RSS from `/proc/<pid>/statm`; Redis connections are the process's established TCP connections to \
         the Redis port.\n\
         - Every server runs alone during its runs, against the same Redis instance; each run uses fresh channel \
         names, so no history is replayed.\n",
    );
    if let Some(parent) = markdown.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(markdown, out)?;
    Ok(charts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencySummary;

    #[test]
    fn a_peer_run_that_delivered_nothing_has_no_p99() {
        let run = |server: &str, run: u32, p99_us: u64, count: u64| Record {
            scenario: "fanout-100-r1000".into(),
            server: server.into(),
            run,
            measurement: Measurement::Load(Box::new(LoadResult {
                latency: LatencySummary {
                    count,
                    p99_us,
                    ..LatencySummary::default()
                },
                ..LoadResult::default()
            })),
        };
        let records = [
            run(PROJECT, 1, 9_000, 100),
            run("nchan", 1, 0, 0),
            run("nchan", 2, 0, 0),
            run("nchan", 3, 22_000, 100),
            run("centrifugo", 1, 30_000, 100),
        ];
        let goal = p99_goal(&Grouped::new(&records), "fanout-100-r1000", "p99");
        assert_eq!(goal.met, Some(true), "{}", goal.shown);
        assert!(goal.shown.ends_with("vs 22000 µs"), "{}", goal.shown);

        // The same peer with a real p99 below the project's: not met.
        let records = [run(PROJECT, 1, 9_000, 100), run("nchan", 1, 8_000, 100)];
        let goal = p99_goal(&Grouped::new(&records), "fanout-100-r1000", "p99");
        assert_eq!(goal.met, Some(false), "{}", goal.shown);
    }

    #[test]
    fn spread_takes_the_median() {
        let s = Spread::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of([1.0, 2.0]).unwrap().median, 1.5);
        assert!(Spread::of([]).is_none());
    }
}
