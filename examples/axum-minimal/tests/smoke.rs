//! Runs the example on port 0: a job's stream has its three progress events, then `done`, then
//! ends; a malformed channel id is 404.

#[path = "../../minimal-smoke.rs"]
mod minimal_smoke;

#[tokio::test]
async fn a_job_streams_to_its_end() {
    minimal_smoke::run(env!("CARGO_BIN_EXE_axum-minimal")).await;
}
