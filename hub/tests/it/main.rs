//! Integration tests: real nodes on loopback ports, real clients.
//!
//! One test binary with a module per area keeps link time down.

mod harness;

mod activity;
mod activity_api;
mod apikeys;
mod assets;
mod bad_input;
mod cluster;
mod control;
mod drain;
mod frames;
mod handshake;
mod jwks;
mod keys;
mod limits;
mod listen;
mod openapi;
mod patterns;
mod postgres_tls;
mod presence;
mod process;
mod quotas;
mod reconnect;
mod recovery;
mod redis_broker;
mod redis_cluster;
mod rest;
mod revoke;
mod rfc6455;
mod rolling;
mod seed;
mod tls;
mod webhooks;
