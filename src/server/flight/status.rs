//! Engine errors as gRPC statuses: the code a client can act on, the engine's message.

use tonic::{Code, Status};

use crate::error::{Error, Kind};

/// The status a client gets for `error`.
pub fn status(error: &Error) -> Status {
    Status::new(code(error.kind()), error.to_string())
}

fn code(kind: Kind) -> Code {
    match kind {
        Kind::BadInput | Kind::Invalid => Code::InvalidArgument,
        Kind::NotFound => Code::NotFound,
        Kind::AlreadyExists => Code::AlreadyExists,
        Kind::Unauthenticated => Code::Unauthenticated,
        Kind::PermissionDenied => Code::PermissionDenied,
        Kind::Unavailable => Code::Unavailable,
        Kind::ResourceExhausted => Code::ResourceExhausted,
        Kind::Internal => Code::Internal,
    }
}
