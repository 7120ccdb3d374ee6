//! Switchyard: a self-hosted event router. Events come in once, are stored
//! durably in one redb file, and are routed to each workspace's destinations.
//!
//! `main.rs` is a thin command line over this library; tests start the real
//! server in-process through [`server::Server`].

pub mod api;
pub mod bench;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod delivery;
pub mod destinations;
pub mod embed;
pub mod ingest;
pub mod model;
pub mod retention;
pub mod routing;
pub mod rules;
pub mod secret;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
