//! TEMPORARY until the csf branch lands.
use crate::engine::{Action, Applied, Context, Step};
use crate::fsops::Transaction;
use anyhow::Result;
pub const OWNED_KEYS: &[&str] = &[
    "TESTING",
    "TCP_IN",
    "TCP_OUT",
    "UDP_IN",
    "UDP_OUT",
    "IPV6",
    "TCP6_IN",
    "TCP6_OUT",
    "UDP6_IN",
    "UDP6_OUT",
    "AUTO_UPDATES",
    "RESTRICT_SYSLOG",
];
macro_rules! placeholder {
    ($t:ident, $n:literal) => {
        pub struct $t;
        impl Step for $t {
            fn name(&self) -> &'static str {
                $n
            }
            fn skip_reason(&self, _cx: &Context) -> Option<String> {
                Some("not built yet".into())
            }
            fn plan(&self, _cx: &Context) -> Result<Vec<Action>> {
                Ok(vec![])
            }
            fn apply(&self, _cx: &Context, _tx: &mut Transaction) -> Result<Applied> {
                Ok(Applied::unchanged(""))
            }
            fn check(&self, _cx: &Context) -> Result<Vec<String>> {
                Ok(vec![])
            }
        }
    };
}
placeholder!(DownloadStep, "csf-download");
placeholder!(InstallStep, "csf-install");
placeholder!(FirewallStep, "firewall");
