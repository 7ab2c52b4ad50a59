//! The native Windows service: `kvsync service install [-c FILE]` /
//! `uninstall` register and remove `kvsync.exe run --service -c FILE` with
//! the service control manager (SCM); `run --service` is what the SCM
//! starts. The service reports RUNNING before the first round (the SCM
//! allows ~30 s for a start), maps Stop / Shutdown / Preshutdown to the
//! agent's stop trigger (SIGTERM on Unix) and Paramchange to its reload
//! trigger (SIGHUP); config edits reload through the same watcher as on
//! Unix.
//!
//! Registration: automatic start, delayed; depends on `himds` when the Arc
//! agent's service exists; LocalSystem; restarted on failure (10 s, 60 s,
//! 5 min; count reset after a day). Exit codes: 0 stopped on request; 2
//! (bad config) is reported to the SCM as service-specific error 2 and not
//! restarted (failure actions apply to crashes only); any other failure
//! exits the process without reporting STOPPED, which the SCM treats as a
//! crash and restarts. Calls Wine does not implement (delayed start,
//! failure actions, Event Log) are warnings, never failures.
#![allow(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceDependency, ServiceErrorControl, ServiceExitCode, ServiceFailureActions,
    ServiceFailureResetPeriod, ServiceInfo, ServiceStartType, ServiceState, ServiceStatus,
    ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_dispatcher;
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use crate::agent::Triggers;
use crate::app::{EXIT_OK, EXIT_SYNC_FAILED, EXIT_USAGE};
use crate::env::Env;

/// The service's name (and its Event Log source).
pub const SERVICE_NAME: &str = "kvsync";
const DISPLAY_NAME: &str = "kvsync (Azure Key Vault sync)";
const DESCRIPTION: &str = "Keeps files in step with Azure Key Vault secrets and certificates, using the machine's managed identity (Azure Arc, Azure VM).";
/// The Arc agent's service, started before kvsync when present.
const HIMDS_SERVICE: &str = "himds";
/// How long the SCM waits for a stop we report as pending.
const STOP_WAIT_HINT: Duration = Duration::from_secs(30);

/// The command line the SCM runs: `"…\kvsync.exe" run --service -c FILE`.
pub fn launch_arguments(config: &Path) -> Vec<OsString> {
    vec![
        "run".into(),
        "--service".into(),
        "-c".into(),
        config.as_os_str().to_owned(),
    ]
}

/// `kvsync service install [-c FILE]`.
pub fn install(config: Option<&Path>, env: &Env) -> u8 {
    let config = config
        .map(Path::to_path_buf)
        .unwrap_or_else(|| super::default_config_path(env));
    let config = std::path::absolute(&config).unwrap_or(config);
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("kvsync: cannot find kvsync.exe's own path: {e}");
            return EXIT_SYNC_FAILED;
        }
    };
    let manager = match ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    ) {
        Ok(m) => m,
        Err(e) => {
            eprintln!(
                "kvsync: cannot open the service control manager (run as Administrator): {e}"
            );
            return EXIT_SYNC_FAILED;
        }
    };
    let himds = manager
        .open_service(HIMDS_SERVICE, ServiceAccess::QUERY_STATUS)
        .is_ok();
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe.clone(),
        launch_arguments: launch_arguments(&config),
        dependencies: if himds {
            vec![ServiceDependency::Service(HIMDS_SERVICE.into())]
        } else {
            Vec::new()
        },
        account_name: None,
        account_password: None,
    };
    let service = match manager.create_service(
        &info,
        ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_STATUS,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kvsync: cannot create the service `{SERVICE_NAME}`: {e}");
            return EXIT_SYNC_FAILED;
        }
    };
    println!(
        "kvsync: service `{SERVICE_NAME}` installed: {} run --service -c {}{}",
        exe.display(),
        config.display(),
        if himds { " (depends on himds)" } else { "" }
    );
    let warn = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!("kvsync: warning: {what}: {e} (the service works without it)");
    };
    if let Err(e) = service.set_description(DESCRIPTION) {
        warn("cannot set the service description", &e);
    }
    if let Err(e) = service.set_delayed_auto_start(true) {
        warn("cannot set delayed automatic start", &e);
    }
    let restart = |secs| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    };
    let actions = ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart(10), restart(60), restart(300)]),
    };
    if let Err(e) = service.update_failure_actions(actions) {
        warn("cannot set restart-on-failure actions", &e);
    }
    match super::eventlog::register_source(&exe) {
        Ok(()) => {
            println!("kvsync: Event Log source `{SERVICE_NAME}` registered (Application log)")
        }
        Err(e) => warn("cannot register the Event Log source", &e),
    }
    println!(
        "kvsync: not started; edit {}, run `kvsync check`, then `sc.exe start {SERVICE_NAME}`",
        config.display()
    );
    EXIT_OK
}

/// `kvsync service uninstall`: stop the service if running, delete it and
/// its Event Log source.
pub fn uninstall() -> u8 {
    let manager = match ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!(
                "kvsync: cannot open the service control manager (run as Administrator): {e}"
            );
            return EXIT_SYNC_FAILED;
        }
    };
    let service = match manager.open_service(
        SERVICE_NAME,
        ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kvsync: cannot open the service `{SERVICE_NAME}` (is it installed?): {e}");
            return EXIT_SYNC_FAILED;
        }
    };
    if service
        .query_status()
        .is_ok_and(|s| s.current_state != ServiceState::Stopped)
    {
        if let Err(e) = service.stop() {
            eprintln!("kvsync: warning: cannot stop the service: {e}");
        }
    }
    if let Err(e) = service.delete() {
        eprintln!("kvsync: cannot delete the service `{SERVICE_NAME}`: {e}");
        return EXIT_SYNC_FAILED;
    }
    if let Err(e) = super::eventlog::unregister_source() {
        eprintln!("kvsync: warning: cannot remove the Event Log source: {e}");
    }
    println!("kvsync: service `{SERVICE_NAME}` removed");
    EXIT_OK
}

/// What the SCM-started process needs in `service_main`.
struct Launch {
    config: PathBuf,
    env: Env,
    format: Option<crate::config::LogFormat>,
}

static LAUNCH: OnceLock<Launch> = OnceLock::new();

windows_service::define_windows_service!(ffi_service_main, service_main);

/// `kvsync run --service`: hand the thread to the SCM's dispatcher, which
/// calls [`service_main`] on its own thread and returns when it stopped.
pub fn run_service(config: &Path, env: &Env, format: Option<crate::config::LogFormat>) -> u8 {
    let _ = LAUNCH.set(Launch {
        config: config.to_path_buf(),
        env: env.clone(),
        format,
    });
    match service_dispatcher::start(SERVICE_NAME, ffi_service_main) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!(
                "kvsync: `run --service` is for the service control manager; from a console use `kvsync run` ({e})"
            );
            EXIT_USAGE
        }
    }
}

fn status(state: ServiceState, exit: ServiceExitCode, wait: Duration) -> ServiceStatus {
    let controls_accepted = if state == ServiceState::Running {
        ServiceControlAccept::STOP
            | ServiceControlAccept::SHUTDOWN
            | ServiceControlAccept::PRESHUTDOWN
            | ServiceControlAccept::PARAM_CHANGE
    } else {
        ServiceControlAccept::empty()
    };
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted,
        exit_code: exit,
        checkpoint: 0,
        wait_hint: wait,
        process_id: None,
    }
}

fn service_main(_arguments: Vec<OsString>) {
    let Some(launch) = LAUNCH.get() else {
        return;
    };
    let (reload_tx, reload) = mpsc::unbounded_channel();
    let (stop_tx, stop) = watch::channel(false);
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            let _ = stop_tx.send(true);
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::ParamChange => {
            let _ = reload_tx.send(());
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let Ok(handle) = service_control_handler::register(SERVICE_NAME, handler) else {
        return;
    };
    let _ = handle.set_service_status(status(
        ServiceState::Running,
        ServiceExitCode::NO_ERROR,
        Duration::ZERO,
    ));
    let _log_guard = super::eventlog::init_service_logging(&launch.env, launch.format);
    tracing::info!(config = %launch.config.display(), "kvsync service running");
    let code = run_agent(launch, Triggers { reload, stop });
    let exit = match code {
        EXIT_OK => ServiceExitCode::NO_ERROR,
        EXIT_USAGE => ServiceExitCode::ServiceSpecific(u32::from(EXIT_USAGE)),
        other => {
            // Not reporting STOPPED makes the SCM apply the restart actions.
            tracing::error!(exit = other, "kvsync service failed; the SCM restarts it");
            drop(_log_guard);
            std::process::exit(i32::from(other));
        }
    };
    let _ = handle.set_service_status(status(ServiceState::StopPending, exit, STOP_WAIT_HINT));
    tracing::info!(exit = code, "kvsync service stopped");
    drop(_log_guard);
    let _ = handle.set_service_status(status(ServiceState::Stopped, exit, Duration::ZERO));
}

fn run_agent(launch: &Launch, triggers: Triggers) -> u8 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return EXIT_SYNC_FAILED;
        }
    };
    rt.block_on(async {
        let result = match crate::app::engine(&launch.config, &launch.env, None) {
            Ok(engine) => crate::agent::run(&launch.config, &launch.env, engine, triggers).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => EXIT_OK,
            Err(e) => {
                tracing::error!(config = %launch.config.display(), error = %e, "kvsync service failed");
                crate::app::exit_code(&e)
            }
        }
    })
}

/// The config file the installed service runs with, from its launch
/// arguments (for tests and `service install` output).
pub fn config_from_arguments(args: &[impl AsRef<OsStr>]) -> Option<PathBuf> {
    let mut it = args.iter().map(AsRef::as_ref);
    while let Some(a) = it.next() {
        if a == OsStr::new("-c") || a == OsStr::new("--config") {
            return it.next().map(PathBuf::from);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_arguments_run_the_agent_with_the_config() {
        let args = launch_arguments(Path::new(r"C:\ProgramData\kvsync\kvsync.toml"));
        assert_eq!(args[0], "run");
        assert_eq!(args[1], "--service");
        assert_eq!(
            config_from_arguments(&args),
            Some(PathBuf::from(r"C:\ProgramData\kvsync\kvsync.toml"))
        );
    }
}
