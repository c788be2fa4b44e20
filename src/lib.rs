//! brickup: first-boot hardening for masternode VPSes.

pub mod archive;
pub mod download;
pub mod http;
pub mod root;
pub mod runner;
