//! brickup: first-boot hardening for masternode VPSes - SSH key, sshd, csf firewall, and a signed
//! status report - converged safely, once at first boot and again by hand for repair.

pub(crate) mod account;
pub mod archive;
pub(crate) mod authorized_keys;
#[cfg(feature = "testing")]
pub use authorized_keys::check_line as check_authorized_key_line;
#[cfg(feature = "testing")]
pub use sshd::keywords::known as sshd_keyword_known;
pub mod cli;
pub mod config;
pub mod csf;
pub mod download;
pub(crate) mod drift;
pub mod engine;
pub mod facts;
pub(crate) mod firewall;
pub(crate) mod firstboot;
pub mod fsops;
pub mod http;
pub mod keys;
pub(crate) mod lock;
pub(crate) mod login;
pub(crate) mod mirrors;
pub(crate) mod os;
pub mod outcome;
pub mod packages;
pub(crate) mod passwd;
pub(crate) mod patterns;
pub mod ports;
pub(crate) mod progress;
pub(crate) mod redact;
pub mod report;
pub mod root;
pub(crate) mod run;
pub mod runner;
pub mod sshd;
pub(crate) mod systemd;
pub(crate) mod updates;
pub(crate) mod userdata;
