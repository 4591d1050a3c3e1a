//! The apps' start-up: the service from the environment, and the line the tests wait for. The
//! rest (logging, the exit code, the stop signal) is the worker crate's, shared by every demo
//! binary and re-exported ([`run_main`](crate::run_main), [`cancel_on_signal`](crate::cancel_on_signal)).

use std::net::SocketAddr;

use crate::backends::{StartError, app_backends};
use crate::config::Config;
use crate::service::DemoService;

impl DemoService {
    /// The app's service as the environment configures it: [`Config::from_env`], then
    /// [`app_backends`].
    pub async fn from_env() -> Result<Self, StartError> {
        let config = Config::from_env()?;
        let backends = app_backends(&config).await?;
        Ok(Self::new(config, backends))
    }
}

/// Announces that app `name` serves on `addr`: `listening on http://{addr}` on stdout (the tests
/// read it to find the port when `PORT=0`) and a log line with the mode.
pub fn announce_listening(name: &str, addr: SocketAddr, service: &DemoService) {
    println!("listening on http://{addr}");
    tracing::info!(%addr, mode = %service.health()["mode"], "{name} listening");
}
