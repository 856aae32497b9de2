//! `sitrep.json`, the first entry: enough to know what a bundle is before reading it.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ToolInfo, Window};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BundleHeader {
    /// Bundle layout version; see [`crate::FORMAT_VERSION`].
    pub format_version: u32,
    pub tool: ToolInfo,
    pub created_at: DateTime<Utc>,
    pub window: Window,
    /// The kubeconfig context the collection ran against, if Kubernetes was collected.
    pub context: Option<String>,
    /// The cluster name that context points at.
    pub cluster: Option<String>,
    /// Namespaces collected; empty with `all_namespaces`.
    pub namespaces: Vec<String>,
    pub all_namespaces: bool,
}
