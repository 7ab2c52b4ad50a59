//! The process environment, injected rather than read from globals, so tests
//! can describe a host (Arc agent installed or not, env vars set) without
//! touching the real one.

use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
    /// Path whose existence means "the Arc agent is installed".
    pub arc_agent_binary: PathBuf,
}

impl Env {
    /// Snapshot of the real process environment.
    pub fn from_process() -> Self {
        let mut env = Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            arc_agent_binary: PathBuf::new(),
        };
        env.arc_agent_binary = crate::platform::arc_agent_binary(&env);
        env
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

    /// A variable whose name matches `key` ignoring ASCII case (Windows
    /// names are case-insensitive: `ProgramData`, `PROGRAMDATA`).
    pub fn var_ignore_case(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, v)| k.eq_ignore_ascii_case(key) && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    pub fn arc_agent_installed(&self) -> bool {
        self.arc_agent_binary.exists()
    }
}
