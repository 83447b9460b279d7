//! CRM and back office for small forex/CFD brokers. See README.md for the architecture.
#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod config;
pub mod domain;
pub mod http;
pub mod ops;
pub mod security;
pub mod store;
