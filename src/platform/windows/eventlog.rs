//! Where a Windows service logs: a daily rolling file under
//! `%ProgramData%\kvsync\logs` (14 files kept) with every line the console
//! would show, and warnings and errors also in the Windows Event Log
//! (Application log, source `kvsync`, registered by `service install`).
//! The same messages as on the console — never a value (kvsync's log lines
//! never hold one).
#![allow(unsafe_code)]

use std::fmt::Write as _;
use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::EventLog::{
    DeregisterEventSource, EVENTLOG_ERROR_TYPE, EVENTLOG_WARNING_TYPE, RegisterEventSourceW,
    ReportEventW,
};
use windows_sys::Win32::System::Registry::{
    HKEY, HKEY_LOCAL_MACHINE, KEY_WRITE, REG_DWORD, REG_EXPAND_SZ, REG_OPTION_NON_VOLATILE,
    RegCloseKey, RegCreateKeyExW, RegDeleteTreeW, RegSetValueExW,
};

use super::service::SERVICE_NAME;
use super::wide;
use crate::env::Env;

/// The source's registry key below HKLM.
const SOURCE_KEY: &str = r"SYSTEM\CurrentControlSet\Services\EventLog\Application\kvsync";
/// Rolling log files kept.
const LOG_FILES_KEPT: usize = 14;

/// Register the Event Log source `kvsync` (Application log). kvsync ships
/// no message table: events show their text after Windows' "description
/// not found" preamble.
pub fn register_source(exe: &Path) -> std::io::Result<()> {
    let key = wide(SOURCE_KEY);
    let mut hkey: HKEY = std::ptr::null_mut();
    // SAFETY: valid NUL-terminated key name and out-pointer.
    let rc = unsafe {
        RegCreateKeyExW(
            HKEY_LOCAL_MACHINE,
            key.as_ptr(),
            0,
            std::ptr::null(),
            REG_OPTION_NON_VOLATILE,
            KEY_WRITE,
            std::ptr::null(),
            &mut hkey,
            std::ptr::null_mut(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc as i32));
    }
    let file = wide(exe);
    let types: u32 = 0x7; // error, warning, information
    let name_file = wide("EventMessageFile");
    let name_types = wide("TypesSupported");
    // SAFETY: hkey is open; data pointers and byte lengths match.
    let rc = unsafe {
        let a = RegSetValueExW(
            hkey,
            name_file.as_ptr(),
            0,
            REG_EXPAND_SZ,
            file.as_ptr() as *const u8,
            (file.len() * 2) as u32,
        );
        let b = RegSetValueExW(
            hkey,
            name_types.as_ptr(),
            0,
            REG_DWORD,
            &types as *const u32 as *const u8,
            4,
        );
        RegCloseKey(hkey);
        if a != 0 { a } else { b }
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc as i32));
    }
    Ok(())
}

/// Remove the source's registry key.
pub fn unregister_source() -> std::io::Result<()> {
    let key = wide(SOURCE_KEY);
    // SAFETY: valid NUL-terminated key name.
    let rc = unsafe { RegDeleteTreeW(HKEY_LOCAL_MACHINE, key.as_ptr()) };
    // ERROR_FILE_NOT_FOUND (2): nothing to remove.
    if rc != 0 && rc != 2 {
        return Err(std::io::Error::from_raw_os_error(rc as i32));
    }
    Ok(())
}

/// A tracing layer reporting warnings and errors to the Event Log.
struct EventLogLayer {
    handle: HANDLE,
}

// SAFETY: an event source handle may be used from any thread.
unsafe impl Send for EventLogLayer {}
// SAFETY: ReportEventW is thread-safe.
unsafe impl Sync for EventLogLayer {}

impl Drop for EventLogLayer {
    fn drop(&mut self) {
        // SAFETY: registered in `init_service_logging`, released once.
        unsafe { DeregisterEventSource(self.handle) };
    }
}

/// The event's message and fields as one line (`message key=value ...`).
#[derive(Default)]
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for EventLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let kind = match *event.metadata().level() {
            Level::ERROR => EVENTLOG_ERROR_TYPE,
            Level::WARN => EVENTLOG_WARNING_TYPE,
            _ => return,
        };
        let mut line = Line::default();
        event.record(&mut line);
        let text = wide(&line.0);
        let strings = [text.as_ptr()];
        // SAFETY: the handle is open; one NUL-terminated string.
        unsafe {
            ReportEventW(
                self.handle,
                kind,
                0,
                1,
                std::ptr::null_mut(),
                1,
                0,
                strings.as_ptr(),
                std::ptr::null(),
            );
        }
    }
}

/// Logging for the service process: the rolling file (format as
/// configured on the command line, text by default) plus the Event Log
/// layer. The returned guard flushes the file on drop.
pub fn init_service_logging(
    env: &Env,
    format: Option<crate::config::LogFormat>,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let dir = super::log_dir(env);
    let _ = std::fs::create_dir_all(&dir);
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix(SERVICE_NAME)
        .filename_suffix("log")
        .max_log_files(LOG_FILES_KEPT)
        .build(&dir)
        .ok();
    let source = wide(SERVICE_NAME);
    // SAFETY: local machine, NUL-terminated source name.
    let handle = unsafe { RegisterEventSourceW(std::ptr::null(), source.as_ptr()) };
    let eventlog = (!handle.is_null()).then_some(EventLogLayer { handle });
    let (writer, guard) = match appender {
        Some(a) => {
            let (w, g) = tracing_appender::non_blocking(a);
            (Some(w), Some(g))
        }
        None => (None, None),
    };
    let json = matches!(format, Some(crate::config::LogFormat::Json));
    let file_layer = writer.map(|w| {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(w)
            .with_ansi(false)
            .with_target(false);
        if json {
            layer.json().flatten_event(true).boxed()
        } else {
            layer.boxed()
        }
    });
    let _ = tracing_subscriber::registry()
        .with(crate::logging::filter(env))
        .with(file_layer)
        .with(eventlog)
        .try_init();
    guard
}
