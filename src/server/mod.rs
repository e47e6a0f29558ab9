//! The network faces of `quarry serve`: Flight SQL and HTTP, the users and tokens they
//! both check, the client sessions they both keep, and the listener they share. They talk
//! to the engine's API only.

pub mod auth;
pub mod client_sessions;
pub mod flight;
pub mod http;
mod running;

pub use running::{RunningServer, Shutdown, bind};
