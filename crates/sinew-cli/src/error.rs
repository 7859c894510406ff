//! Errors of the CLI: a one-line message and the exit code documented in `--help`.

use sinew::{Code, Status};
use std::fmt;

/// The process exit codes (see `sinew --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ExitCode {
    Failure = 1,
    Usage = 2,
    Unreachable = 3,
    UnknownMethod = 4,
    BadJson = 5,
    JsonDoesNotFit = 6,
    DeadlineExceeded = 7,
    ErrorStatus = 8,
}

/// A failure to report: what happened, in one line, and how to exit.
#[derive(Debug)]
pub(crate) struct CliError {
    code: ExitCode,
    message: String,
}

impl CliError {
    pub(crate) fn new(code: ExitCode, message: impl Into<String>) -> CliError {
        CliError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> CliError {
        CliError::new(ExitCode::Usage, message)
    }

    pub(crate) fn failure(message: impl Into<String>) -> CliError {
        CliError::new(ExitCode::Failure, message)
    }

    pub(crate) fn exit_code(&self) -> ExitCode {
        self.code
    }

    /// The message, on one line whatever the underlying error printed.
    pub(crate) fn message(&self) -> String {
        self.message.replace('\n', " ")
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Status> for CliError {
    /// A status from a call: its code decides the exit code.
    fn from(status: Status) -> CliError {
        let code = match status.code() {
            Code::Unavailable => ExitCode::Unreachable,
            Code::DeadlineExceeded => ExitCode::DeadlineExceeded,
            Code::Unimplemented => ExitCode::UnknownMethod,
            Code::InvalidArgument if status.message().starts_with("invalid address") => {
                ExitCode::Usage
            }
            _ => ExitCode::ErrorStatus,
        };
        CliError::new(code, status.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(error: std::io::Error) -> CliError {
        CliError::failure(error.to_string())
    }
}

impl From<sinew::messaging::Error> for CliError {
    /// A broker's refusal, or a failure to reach it.
    fn from(error: sinew::messaging::Error) -> CliError {
        match error {
            sinew::messaging::Error::Remote(status) => CliError::from(status),
            sinew::messaging::Error::Subject(_)
            | sinew::messaging::Error::InvalidHeader { .. }
            | sinew::messaging::Error::PayloadTooLarge { .. } => CliError::usage(error.to_string()),
            other => CliError::new(ExitCode::ErrorStatus, other.to_string()),
        }
    }
}
