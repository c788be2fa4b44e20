//! brickup: first-boot hardening for masternode VPSes.

pub mod identity;
pub mod receive;
pub mod report;
pub mod root;
pub mod runner;
