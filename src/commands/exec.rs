//! `kvsync exec -- COMMAND [ARGS…]`: an all-or-nothing first round (retried
//! within `[agent] once_wait`), then the child starts with the rendered
//! `[env]`, then the agent loop supervises it ([`crate::exec`]).

use std::ffi::OsString;
use std::path::Path;

use crate::agent::Triggers;
use crate::commands::EXIT_SYNC_FAILED;
use crate::commands::once::{Failed, budgeted};
use crate::env::Env;
use crate::exec::{ExecCommand, StopSignal, Supervisor, signals};
use crate::sync::{Engine, RoundOptions};

/// Shell convention: the command was not found / could not be executed.
pub const EXIT_NOT_FOUND: u8 = 127;
pub const EXIT_NOT_EXECUTABLE: u8 = 126;

pub async fn run(
    path: &Path,
    env: &Env,
    engine: Engine,
    triggers: Triggers,
    stop: StopSignal,
    command: Vec<OsString>,
) -> u8 {
    let mut parts = command.into_iter();
    let Some(program) = parts.next() else {
        eprintln!("kvsync: exec needs a command after --");
        return crate::commands::EXIT_USAGE;
    };
    let command = ExecCommand {
        program,
        args: parts.collect(),
    };
    let wait = engine.config().agent.once_wait;
    let (result, _) = budgeted(
        &engine,
        RoundOptions::once(false),
        wait,
        triggers.stop.clone(),
    )
    .await;
    if *triggers.stop.borrow() {
        return signals::stopped_exit_code(stop.get());
    }
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(Failed(outcome)) => {
            tracing::error!("first sync failed; not starting the command");
            eprintln!(
                "kvsync: sync failed, command not started:\n{}\n({})",
                outcome.failure_text(),
                crate::TROUBLESHOOTING
            );
            return EXIT_SYNC_FAILED;
        }
    };
    let mut supervisor = Supervisor::new(command, engine.config().exec.clone(), stop);
    let values = outcome.env.unwrap_or_default();
    if let Err(e) = supervisor.start(&values) {
        eprintln!("kvsync: {e}");
        return match e.kind() {
            std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
            _ => EXIT_NOT_EXECUTABLE,
        };
    }
    drop(values);
    crate::agent::run_with(path, env, engine, triggers, Some(supervisor)).await
}
