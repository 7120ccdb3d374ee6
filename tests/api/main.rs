//! Integration tests: the real server on loopback (port 0) with a real redb
//! file in a temp dir, driven over HTTP.

mod cli;
mod connections;
mod crash;
mod delivery;
mod events;
mod helpers;
mod receiver;
mod rules;
mod workspaces;
