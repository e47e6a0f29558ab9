//! Integration tests, in one binary so DataFusion is linked once. Tests that need a server
//! talk to the real PostgreSQL/MariaDB given by QUARRY_TEST_PG_URL / QUARRY_TEST_MYSQL_URL.

mod access_modes;
mod audit;
mod ballista;
mod cache_suite;
mod cli;
mod config_rules;
mod console;
mod correctness;
mod credentials;
mod differential;
mod files;
mod first_hour;
mod flight;
mod flight_python;
mod http;
mod http_schemathesis;
mod join_order;
mod keys;
mod live_status;
mod malformed;
mod memory_tier;
mod mysql_source;
mod postgres_source;
mod refresh_modes;
mod render;
mod repl;
mod s3;
mod secrets;
mod shared_store;
mod source_query;
mod sql_layer;
mod sqlite_source;
mod ssh_tunnel;
mod store_suite;
mod support;
