//! The process environment, injected rather than read from globals, so tests
//! can describe a host (Arc agent installed or not, env vars set) without
//! touching the real one.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Default location of the Arc agent's HIMDS binary (PROTOCOL.md §1).
#[cfg(unix)]
pub const ARC_AGENT_BINARY: &str = "/opt/azcmagent/bin/himds";
#[cfg(windows)]
pub const ARC_AGENT_BINARY: &str = r"C:\Program Files\AzureConnectedMachineAgent\himds.exe";

#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    /// Path whose existence means "the Arc agent is installed".
    pub arc_agent_binary: PathBuf,
}

impl Env {
    /// Snapshot of the real process environment.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
            arc_agent_binary: PathBuf::from(ARC_AGENT_BINARY),
        }
    }

    /// An empty environment (tests): no variables, no Arc agent.
    pub fn empty() -> Self {
        Self {
            vars: BTreeMap::new(),
            arc_agent_binary: PathBuf::from("/nonexistent/kvsync-test/himds"),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.vars.insert(key.to_owned(), value.into());
        self
    }

    /// A variable's value; empty values count as unset.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn arc_agent_installed(&self) -> bool {
        self.arc_agent_binary.exists()
    }
}
