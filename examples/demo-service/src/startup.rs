//! The apps' start-up: the service from the environment, and the line the tests wait for. The
//! rest (logging, the exit code, the stop signal) is the worker crate's, shared by every demo
//! binary and re-exported ([`run_main`](crate::run_main), [`cancel_on_signal`](crate::cancel_on_signal)).

use std::net::SocketAddr;

use crate::backends::{StartError, app_backends};
use crate::config::Config;
use crate::service::DemoService;

impl DemoService {
    /// The app's service as the environment configures it: installs the Prometheus recorder
    /// ([`crate::metrics::install`]), then [`Config::from_env`], then [`app_backends`]. Connected in Redis mode without `STREAM_TOKEN_SECRET` it logs a warning: stream
    /// tokens then work only on the instance that made them.
    pub async fn from_env() -> Result<Self, StartError> {
        // First, so that every metric the backends register from here on is recorded.
        crate::metrics::install();
        let config = Config::from_env()?;
        let backends = app_backends(&config).await?;
        if config.worker.redis_source().is_some() && config.token_secret.is_none() {
            tracing::warn!(
                "STREAM_TOKEN_SECRET is unset in Redis mode: stream tokens are signed with a random key of this \
                 process, so a stream_url works only on the instance that made it (not on another instance, nor \
                 after a restart); set the same STREAM_TOKEN_SECRET (at least 32 bytes) on every instance"
            );
        }
        Ok(Self::new(config, backends))
    }
}

/// Announces that app `name` serves on `addr`: `listening on http://{addr}` on stdout (the tests
/// read it to find the port when `PORT=0`) and a log line with the mode.
pub fn announce_listening(name: &str, addr: SocketAddr, service: &DemoService) {
    println!("listening on http://{addr}");
    tracing::info!(%addr, mode = %service.health()["mode"], "{name} listening");
}
