//! Integration tests: the real server on loopback (port 0) with a real redb
//! file in a temp dir, driven over HTTP.

mod backend;
mod capabilities;
mod chat;
mod cli;
mod connections;
mod crash;
mod cross_node;
mod delivery;
mod docs;
mod email;
mod embed;
mod embed_browser;
mod events;
mod export;
mod fake_chat;
mod fake_pagerduty;
mod fake_resend;
mod fake_slack;
mod helpers;
mod limits;
mod meshes;
mod multinode;
mod noise;
mod openapi;
mod package;
mod pagerduty;
mod postgres_outage;
mod queue_window;
mod receiver;
mod retention;
mod rules;
mod slack;
mod storage_faults;
mod upgrade;
mod workspaces;
