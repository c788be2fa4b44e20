//! brickup: first-boot hardening for masternode VPSes - SSH key, sshd, csf firewall, and a signed
//! status report - converged safely, once at first boot and again by hand for repair.

pub mod archive;
pub mod cli;
pub mod config;
pub mod csf;
pub mod download;
pub mod engine;
pub mod facts;
pub mod firewall;
pub mod fsops;
pub mod http;
pub mod keys;
pub mod lock;
pub mod packages;
pub mod redact;
pub mod report;
pub mod root;
pub mod run;
pub mod runner;
pub mod sshd;
pub mod systemd;
pub mod updates;
pub mod userdata;
