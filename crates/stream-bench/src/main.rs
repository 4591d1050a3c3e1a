//! `stream-bench`: the benchmark harness's command line. `scripts/bench.sh` runs it; every
//! measuring command prints its records as JSON and, with `--out`, also writes them to a file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use stream_bench::baseline::{self, FanoutConfig};
use stream_bench::load::{self, LoadConfig, Target};
use stream_bench::procstat::{self, NamedPids};
use stream_bench::record::{Measurement, Record, read_records, write_records};
use stream_bench::report::{self, ReportMeta};
use stream_bench::soak::{self, SoakConfig};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "stream-rs benchmark harness: load client, baselines, report")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where a measurement's records go.
#[derive(Debug, Args)]
struct Output {
    /// Scenario name in the report.
    #[arg(long)]
    scenario: Option<String>,
    /// Run number.
    #[arg(long, default_value_t = 1)]
    run: u32,
    /// Also write the records (a JSON array) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The kind of server `load` talks to.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum TargetKind {
    /// The project's bench server.
    Stream,
    /// Nchan.
    Nchan,
    /// Centrifugo v6.
    Centrifugo,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// SSE subscriptions plus open-loop publishing against one server.
    Load {
        /// The server's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// The server's kind.
        #[arg(long, value_enum, default_value = "stream")]
        target: TargetKind,
        /// Name of the server in the report.
        #[arg(long, default_value = "stream-axum")]
        server: String,
        /// Centrifugo's `http_api.key`.
        #[arg(long, default_value = "bench-api-key")]
        centrifugo_api_key: String,
        /// Centrifugo's `client.token.hmac_secret_key`.
        #[arg(long, default_value = "bench-hmac-secret")]
        centrifugo_secret: String,
        /// Subscriptions (M).
        #[arg(long, default_value_t = 1)]
        subscribers: usize,
        /// Channels (N).
        #[arg(long, default_value_t = 1)]
        channels: usize,
        /// Publishing workers / keep-alive connections (K).
        #[arg(long, default_value_t = 8)]
        publishers: usize,
        /// Offered messages per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 3.0)]
        duration: f64,
        /// Seconds to wait for deliveries after publishing.
        #[arg(long, default_value_t = 3.0)]
        drain: f64,
        /// Subscriptions opened at once.
        #[arg(long, default_value_t = 256)]
        connect_concurrency: usize,
        /// Filler bytes per message.
        #[arg(long, default_value_t = 64)]
        pad: usize,
        /// Processes to watch, `name=pid[,pid...]` (repeat): `server` and `redis` go in the tables.
        #[arg(long = "pid")]
        pids: Vec<NamedPids>,
        /// Redis's port, to count the watched processes' Redis connections.
        #[arg(long)]
        redis_port: Option<u16>,
        /// Open the subscriptions and measure memory; publish nothing.
        #[arg(long)]
        idle: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Baseline (a): bare PUBLISH loop against the project's emit path.
    Emit {
        /// Redis URL.
        #[arg(long)]
        redis: String,
        /// Concurrent callers.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seconds per side.
        #[arg(long, default_value_t = 3.0)]
        duration: f64,
        /// Filler bytes per message.
        #[arg(long, default_value_t = 64)]
        pad: usize,
        /// Measure only the project's emit path, and report it under this name (a build of
        /// another revision, next to this run's own figures).
        #[arg(long)]
        label: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Baseline (b): bare subscriber with tokio fan-out against the broker's subscriptions.
    Fanout {
        /// Redis URL.
        #[arg(long)]
        redis: String,
        /// Receivers of the one channel.
        #[arg(long, default_value_t = 100)]
        receivers: usize,
        /// Offered messages per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Concurrent publishers.
        #[arg(long, default_value_t = 8)]
        publishers: usize,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 3.0)]
        duration: f64,
        /// Seconds to wait for deliveries after publishing.
        #[arg(long, default_value_t = 3.0)]
        drain: f64,
        /// Filler bytes per message.
        #[arg(long, default_value_t = 64)]
        pad: usize,
        #[command(flatten)]
        output: Output,
    },
    /// Baseline (c): redis-benchmark EVALSHA of the lease script against acquire + release.
    Lease {
        /// Redis URL (`redis://host:port/`).
        #[arg(long)]
        redis: String,
        /// Concurrent callers (and redis-benchmark clients).
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        /// Seconds of acquire + release.
        #[arg(long, default_value_t = 3.0)]
        duration: f64,
        /// redis-benchmark requests.
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        #[command(flatten)]
        output: Output,
    },
    /// The soak run (issue 14): long-lived streams, one channel and one user each, against one
    /// demo app in Redis mode; one event per stream per period, published through Redis. Prints
    /// the report and fails when any stream did not get exactly its channel's events.
    Soak {
        /// The app's base URL.
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
        /// The Redis the app runs on.
        #[arg(long, default_value = "redis://127.0.0.1:6399/")]
        redis: String,
        /// Concurrent streams.
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
        /// Seconds between a stream's events.
        #[arg(long, default_value_t = 5.0)]
        period: f64,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 300.0)]
        duration: f64,
        /// When to take the app's figures, seconds after publishing began (repeat).
        #[arg(long = "sample", default_values_t = [60.0, 180.0, 300.0])]
        samples: Vec<f64>,
        /// The app's process id (for RSS, fds and Redis connections).
        #[arg(long)]
        app_pid: Option<u32>,
        /// Publishing tasks.
        #[arg(long, default_value_t = 32)]
        publishers: usize,
        /// Streams opened at once.
        #[arg(long, default_value_t = 256)]
        connect_concurrency: usize,
        /// Seconds to wait for deliveries after publishing.
        #[arg(long, default_value_t = 10.0)]
        drain: f64,
        /// How far from the baseline the app's fds may be after the clients closed.
        #[arg(long, default_value_t = 10)]
        fd_tolerance: usize,
        /// Also write the report (JSON) to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Writes the Markdown report and its SVG charts from the records in a directory.
    Report {
        /// Directory of record files (`*.json`).
        #[arg(long)]
        results: PathBuf,
        /// The Markdown file to write.
        #[arg(long, default_value = "docs/benchmarks.md")]
        out: PathBuf,
        /// Directory for the SVG charts.
        #[arg(long, default_value = "docs/benchmarks")]
        charts: PathBuf,
        /// The chart directory as linked from the Markdown file.
        #[arg(long, default_value = "benchmarks")]
        chart_link: String,
        /// A `key=value` fact for the report (repeat).
        #[arg(long = "meta")]
        meta: Vec<String>,
        /// A statement of what was or was not measured (repeat).
        #[arg(long = "note")]
        notes: Vec<String>,
    },
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn emit(output: &Output, records: &[Record]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    println!("{}", serde_json::to_string_pretty(records)?);
    if let Some(path) = &output.out {
        write_records(path, records)?;
    }
    Ok(())
}

fn record(output: &Output, default_scenario: &str, server: &str, measurement: Measurement) -> Record {
    Record {
        scenario: output.scenario.clone().unwrap_or_else(|| default_scenario.to_owned()),
        server: server.to_owned(),
        run: output.run,
        measurement,
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        Command::Soak {
            url,
            redis,
            streams,
            period,
            duration,
            samples,
            app_pid,
            publishers,
            connect_concurrency,
            drain,
            fd_tolerance,
            out,
        } => {
            // Both ends of every stream are sockets of some process: this one needs one per stream.
            let want = u64::try_from(streams).unwrap_or(u64::MAX).saturating_add(1024);
            procstat::raise_fd_limit(want)?;
            let config = SoakConfig {
                base_url: url,
                redis_url: redis,
                streams,
                period: secs(period),
                duration: secs(duration),
                samples: samples.into_iter().map(secs).collect(),
                app_pid,
                publishers,
                connect_concurrency,
                drain: secs(drain),
                fd_tolerance,
                ..SoakConfig::default()
            };
            let report = soak::run(config).await?;
            print!("{}", report.to_text());
            if let Some(path) = &out {
                std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
            }
            let failures = report.delivery_failures();
            if failures.is_empty() {
                Ok(())
            } else {
                Err(format!("soak failed: {}", failures.join("; ")).into())
            }
        }
        Command::Load {
            url,
            target,
            server,
            centrifugo_api_key,
            centrifugo_secret,
            subscribers,
            channels,
            publishers,
            rate,
            duration,
            drain,
            connect_concurrency,
            pad,
            pids,
            redis_port,
            idle,
            output,
        } => {
            let target = match target {
                TargetKind::Stream => Target::Stream,
                TargetKind::Nchan => Target::Nchan,
                TargetKind::Centrifugo => Target::Centrifugo {
                    api_key: centrifugo_api_key,
                    hmac_secret: centrifugo_secret,
                },
            };
            let config = LoadConfig {
                base_url: url,
                target,
                subscribers,
                channels,
                publishers,
                rate,
                duration: secs(duration),
                drain: secs(drain),
                connect_concurrency,
                pad,
                pids,
                redis_port,
                idle,
                ..LoadConfig::default()
            };
            let result = load::run(config).await?;
            emit(
                &output,
                &[record(&output, "load", &server, Measurement::Load(Box::new(result)))],
            )
        }
        Command::Emit {
            redis,
            concurrency,
            duration,
            pad,
            label,
            output,
        } => {
            let cpu = baseline::RedisCpu::connect(&redis).await?;
            let scenario = format!("emit-{concurrency}");
            let mut records = Vec::with_capacity(2);
            if label.is_none() {
                let start = cpu.seconds().await?;
                let mut bare = baseline::bare_publish(&redis, concurrency, secs(duration), pad).await?;
                bare.redis_cpu_us_per_op = Some((cpu.seconds().await? - start) * 1e6 / bare.ops.max(1) as f64);
                records.push(record(&output, &scenario, report::BARE_PUBLISH, Measurement::Ops(bare)));
            }
            let start = cpu.seconds().await?;
            let mut ours = baseline::emit_path(&redis, concurrency, secs(duration), pad).await?;
            ours.redis_cpu_us_per_op = Some((cpu.seconds().await? - start) * 1e6 / ours.ops.max(1) as f64);
            let name = label.as_deref().unwrap_or(report::STREAM_EMIT);
            records.push(record(&output, &scenario, name, Measurement::Ops(ours)));
            emit(&output, &records)
        }
        Command::Fanout {
            redis,
            receivers,
            rate,
            publishers,
            duration,
            drain,
            pad,
            output,
        } => {
            let config = FanoutConfig {
                redis_url: redis,
                receivers,
                rate,
                publishers,
                duration: secs(duration),
                drain: secs(drain),
                pad,
            };
            let bare = baseline::bare_fanout(&config).await?;
            let ours = baseline::broker_fanout(&config).await?;
            let scenario = format!("fanout-{receivers}");
            emit(
                &output,
                &[
                    record(
                        &output,
                        &scenario,
                        report::BARE_FANOUT,
                        Measurement::Load(Box::new(bare)),
                    ),
                    record(
                        &output,
                        &scenario,
                        report::BROKER_FANOUT,
                        Measurement::Load(Box::new(ours)),
                    ),
                ],
            )
        }
        Command::Lease {
            redis,
            concurrency,
            duration,
            requests,
            output,
        } => {
            let url = reqwest::Url::parse(&redis)?;
            let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
            let port = url.port().unwrap_or(6379);
            let bench = baseline::redis_benchmark_acquire(&host, port, concurrency, requests).await?;
            let ours = baseline::lease_pairs(&redis, concurrency, secs(duration)).await?;
            emit(
                &output,
                &[
                    record(&output, "lease", "redis-benchmark-evalsha", Measurement::Ops(bench)),
                    record(&output, "lease", "stream-lease", Measurement::Ops(ours)),
                ],
            )
        }
        Command::Report {
            results,
            out,
            charts,
            chart_link,
            meta,
            notes,
        } => {
            let records = read_records(&results)?;
            let facts = meta
                .iter()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.trim().to_owned(), v.trim().to_owned()),
                    None => (kv.clone(), String::new()),
                })
                .collect();
            let written = report::write_report(&records, &ReportMeta { facts, notes }, &out, &charts, &chart_link)?;
            println!(
                "{}",
                serde_json::json!({"report": out, "records": records.len(), "charts": written})
            );
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stream-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
