//! The deploy job: what the worker runs, and the job message that carries it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use stream_core::{EmitError, Emitter, InvalidContext, LogLevel, StreamContext, UserId};

/// The body of `POST /deployments` and `POST /deploy`. Missing fields take the defaults
/// (`demo`, `dev`, `api`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The project.
    #[serde(default = "default_project")]
    pub project: String,
    /// The environment.
    #[serde(default = "default_environment")]
    pub environment: String,
    /// The service.
    #[serde(default = "default_service")]
    pub service: String,
}

fn default_project() -> String {
    "demo".into()
}
fn default_environment() -> String {
    "dev".into()
}
fn default_service() -> String {
    "api".into()
}

impl Default for DeployRequest {
    fn default() -> Self {
        Self {
            project: default_project(),
            environment: default_environment(),
            service: default_service(),
        }
    }
}

/// One job on the queue: the serialized [`StreamContext`], the request, and the step delay of the
/// app that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployJob {
    /// [`StreamContext::to_dict`].
    pub stream_ctx: Map<String, Value>,
    /// The request.
    pub config: DeployRequest,
    /// The delay between steps, in milliseconds.
    pub step_ms: u64,
    /// The channel's owner, as the app registered it: the worker renews that owner record with
    /// each heartbeat, so that a registry that lost it (a Redis restart without persistence) has it
    /// again and the owner can resume the stream. Absent in jobs of older apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A job message that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InvalidJob {
    /// Not a job's JSON.
    #[error("invalid job JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The context inside is invalid.
    #[error(transparent)]
    Context(#[from] InvalidContext),
}

impl DeployJob {
    /// A job for `ctx`, whose channel `owner` registered (if known).
    pub fn new(ctx: &StreamContext, owner: Option<&UserId>, config: DeployRequest, step: Duration) -> Self {
        Self {
            stream_ctx: ctx.to_dict(),
            config,
            step_ms: step.as_millis() as u64,
            owner: owner.map(|o| o.as_str().to_owned()),
        }
    }

    /// The channel's owner, when the job names a valid one.
    pub fn owner(&self) -> Option<UserId> {
        self.owner.as_deref().and_then(|o| UserId::new(o).ok())
    }

    /// The JSON that goes on the queue.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a job always serializes")
    }

    /// Reads a job from the queue, with its context.
    pub fn from_json(json: &str) -> Result<(Self, StreamContext), InvalidJob> {
        let job: Self = serde_json::from_str(json)?;
        let ctx = StreamContext::from_dict(job.stream_ctx.clone())?;
        Ok((job, ctx))
    }

    /// The step delay.
    pub fn step(&self) -> Duration {
        Duration::from_millis(self.step_ms)
    }
}

/// The two fake servers the job deploys to (documentation addresses, RFC 5737: nothing is
/// contacted).
pub const SERVERS: [&str; 2] = ["192.0.2.11", "192.0.2.12"];

/// Runs the deploy job: log and progress (building 10, pushing 40, deploying 70), then
/// `deploy_start`, one `deploy_success` per fake server and `complete(success = true, …)`,
/// `step` apart. Every emit is one publish.
pub async fn run_deploy_job(emitter: &Emitter, request: &DeployRequest, step: Duration) -> Result<(), EmitError> {
    let DeployRequest {
        project,
        environment,
        service,
    } = request;
    let pause = || tokio::time::sleep(step);
    emitter
        .log(
            &format!("🚀 Starting deployment of {service} ({project}/{environment})..."),
            LogLevel::Info,
        )
        .await?;
    for (percent, step_name, message) in [
        (10, "building", format!("Building image {project}/{service}")),
        (
            40,
            "pushing",
            format!("Pushing image {project}/{service} to the registry"),
        ),
        (70, "deploying", format!("Deploying to {environment}")),
    ] {
        pause().await;
        emitter.progress(percent, Some(step_name), None).await?;
        pause().await;
        emitter.log(&message, LogLevel::Info).await?;
    }
    pause().await;
    emitter.deploy_start(environment, SERVERS.len() as u32).await?;
    for (i, ip) in SERVERS.iter().enumerate() {
        pause().await;
        let url = format!("http://{ip}:8080");
        emitter
            .deploy_success(ip, &format!("{service}-{}", i + 1), Some(&url))
            .await?;
    }
    pause().await;
    let result = json!({
        "deployment_id": format!("dep-{}", emitter.channel_id()),
        "servers": SERVERS,
    });
    let Value::Object(result) = result else { unreachable!() };
    emitter.complete(true, None, result).await?;
    Ok(())
}
