//! `kvsync exec -- COMMAND [ARGS…]`: an all-or-nothing first round (retried
//! within `[agent] once_wait`), then the child starts with the rendered
//! `[env]`, then the agent loop supervises it ([`crate::exec`]).

use std::ffi::OsString;
use std::path::Path;

use crate::agent::Triggers;
use crate::app::AppError;
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
) -> Result<(), AppError> {
    let mut parts = command.into_iter();
    // clap requires at least one word after `--`.
    let Some(program) = parts.next() else {
        return Ok(());
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
        return child_status(signals::stopped_exit_code(stop.get()));
    }
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(Failed(outcome)) => {
            tracing::error!("first sync failed; not starting the command");
            return Err(AppError::Sync(format!(
                "{}\n(the command was not started)",
                outcome.failure_text()
            )));
        }
    };
    let mut supervisor = Supervisor::new(command, engine.config().exec.clone(), stop);
    let values = outcome.env.unwrap_or_default();
    if let Err(e) = supervisor.start(&values) {
        eprintln!("{}{e}", crate::app::PREFIX);
        return child_status(match e.kind() {
            std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
            _ => EXIT_NOT_EXECUTABLE,
        });
    }
    drop(values);
    child_status(crate::agent::run_with(path, env, engine, triggers, Some(supervisor)).await?)
}

/// kvsync's result for a child status: 0 is success, anything else is
/// passed through as the exit code.
fn child_status(code: u8) -> Result<(), AppError> {
    match code {
        0 => Ok(()),
        code => Err(AppError::Child(code)),
    }
}
