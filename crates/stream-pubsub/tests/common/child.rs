//! A test that runs itself again as a child process: the same test binary, filtered to the same
//! test with `--exact`, given its input in an environment variable. Without the variable the test
//! is the parent, which starts the child and checks everything; with it, it is the child, which
//! does its part and ends the process with [`DONE`] before libtest could report a pass.

use std::io::Write as _;
use std::process::Command;

/// The exit code of a child that did its part.
pub const DONE: i32 = 77;

/// The input in `var`, when this process is the child a parent started with [`command`]; `None`
/// in a normal run. The variable holds `<parent pid>:<input>`: a process that another one
/// started with it set fails, instead of passing as a child that checks nothing.
pub fn input(var: &str) -> Option<String> {
    let value = std::env::var(var).ok()?;
    let (parent, input) = value
        .split_once(':')
        .unwrap_or_else(|| panic!("{var}={value:?}: want <parent pid>:<input>"));
    assert_eq!(
        parent.parse::<u32>().ok(),
        Some(std::os::unix::process::parent_id()),
        "{var} is set, but not by this process's parent: this is not the test's child"
    );
    Some(input.to_owned())
}

/// The command that runs `test` of this test binary as a child, with `input` in `var`.
pub fn command(test: &str, var: &str, input: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(var, format!("{}:{input}", std::process::id()));
    cmd
}

/// Runs a two-sided test: in the child that a parent started with [`command`] (with `var` set),
/// `child` with the input, then exit with [`DONE`]; in a normal run, `parent` on a two-thread
/// runtime.
pub fn parent_or_child(var: &str, child: impl FnOnce(&str), parent: impl std::future::Future<Output = ()>) {
    if let Some(input) = input(var) {
        child(&input);
        done();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(parent);
}

/// Ends the child after its part, with [`DONE`].
#[allow(
    clippy::exit,
    reason = "a child test process ends here, with the exit code its parent checks"
)]
pub fn done() -> ! {
    std::io::stdout().flush().expect("flush");
    std::process::exit(DONE)
}
