//! TEMPORARY until the report branch lands.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    pub url: String,
    pub hmac_secret_file: Option<std::path::PathBuf>,
}
impl ReportConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        vec![]
    }
}
