//! brickup: first-boot hardening for masternode VPSes.

pub mod root;
pub mod runner;
