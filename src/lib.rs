//! brickup: first-boot hardening for masternode VPSes.

pub mod csfconf;
pub mod root;
pub mod runner;
