//! Engine errors as gRPC statuses: the code a client can act on, the engine's message.

use datafusion::error::DataFusionError;
use tonic::{Code, Status};

use crate::error::{Cause, Error, cause};

/// The status a client gets for `error`.
pub fn status(error: &Error) -> Status {
    Status::new(code(error), error.to_string())
}

fn code(error: &Error) -> Code {
    match error {
        Error::InvalidName { .. }
        | Error::ReservedName { .. }
        | Error::InvalidId { .. }
        | Error::UnknownSourceType { .. }
        | Error::InvalidConfig { .. }
        | Error::Usage(_) => Code::InvalidArgument,
        Error::ConnectionExists { .. } => Code::AlreadyExists,
        Error::ConnectionNotFound(_) => Code::NotFound,
        Error::Source { .. } | Error::Fetch { .. } => Code::Unavailable,
        Error::Shared(inner) => code(inner),
        Error::Sql(e) => sql_code(e),
        Error::SecretKey(_)
        | Error::SecretDecrypt { .. }
        | Error::NoDataDir
        | Error::InvalidStoreUrl { .. }
        | Error::StoreTooNew { .. }
        | Error::StoreMigrationChanged { .. }
        | Error::Store { .. }
        | Error::Io { .. } => Code::Internal,
    }
}

fn sql_code(error: &DataFusionError) -> Code {
    let error = match cause(error) {
        Cause::Quarry(quarry) => return code(quarry),
        Cause::DataFusion(error) => error,
    };
    match error {
        // DataFusion names a missing table or column only in the message.
        DataFusionError::Plan(_) | DataFusionError::SchemaError(..)
            if names_something_missing(&error.to_string()) =>
        {
            Code::NotFound
        }
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_)
        | DataFusionError::Execution(_)
        | DataFusionError::ArrowError(..) => Code::InvalidArgument,
        DataFusionError::ResourcesExhausted(_) => Code::ResourceExhausted,
        _ => Code::Internal,
    }
}

fn names_something_missing(message: &str) -> bool {
    message.contains("not found") || message.contains("No field named")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_what_went_wrong() {
        let plan = |m: &str| Error::Sql(DataFusionError::Plan(m.into()));
        assert_eq!(
            status(&plan("table 'a.b.c' not found")).code(),
            Code::NotFound
        );
        assert_eq!(status(&plan("bad")).code(), Code::InvalidArgument);
        assert_eq!(
            status(&Error::ConnectionNotFound("x".into())).code(),
            Code::NotFound
        );
        let wrapped = Error::Sql(DataFusionError::External(Box::new(Error::Usage(
            "u".into(),
        ))));
        assert_eq!(status(&wrapped).code(), Code::InvalidArgument);
        assert_eq!(
            status(&Error::Sql(DataFusionError::Internal("x".into()))).code(),
            Code::Internal
        );
    }
}
