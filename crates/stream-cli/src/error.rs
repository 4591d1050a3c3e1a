//! How a command fails, and the exit status that says so.

use std::process::ExitCode;

/// Why a command stopped short.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Bad input or settings (an argument, an environment variable): exit status 2, like the
    /// command line's own usage errors.
    Usage(String),
    /// A service failed (Redis, OpenSearch) or answered something unusable: exit status 1.
    Failed(String),
    /// Standard output was closed (piped into `head`, say): nothing more to print, exit 0.
    Closed,
}

impl CliError {
    /// Prints the error on stderr and gives the exit status.
    pub(crate) fn report(self) -> ExitCode {
        match self {
            Self::Usage(message) => {
                eprintln!("stream-cli: error: {message}");
                ExitCode::from(2)
            }
            Self::Failed(message) => {
                eprintln!("stream-cli: error: {message}");
                ExitCode::FAILURE
            }
            Self::Closed => ExitCode::SUCCESS,
        }
    }
}

impl From<std::io::Error> for CliError {
    /// A failed write to stdout: a closed pipe ends the command quietly.
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Self::Closed
        } else {
            Self::Failed(format!("cannot write the output: {e}"))
        }
    }
}

/// An error and its sources as one line: `outer: inner: innermost`. A source whose text the line
/// already holds (errors that print their source themselves) is not repeated.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = e.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped: {0}")]
    struct Wrapped(#[source] std::io::Error);

    #[test]
    fn the_chain_names_each_source_once() {
        let io = || std::io::Error::other("refused");
        assert_eq!(chain(&Outer(io())), "outer: refused");
        assert_eq!(chain(&Wrapped(io())), "wrapped: refused");
    }
}
