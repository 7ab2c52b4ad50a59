//! Process-wide hardening applied first thing in `main`: no core dumps
//! (a core of kvsync holds secret values and tokens) and no ptrace attach
//! by other processes of the same user (`PR_SET_DUMPABLE = 0`, Linux).
//! The systemd units add `LimitCORE=0`. Hooks are unaffected: `execve`
//! resets the flag for the programs kvsync starts.

/// Mark the process non-dumpable. Errors are ignored (the units' `LimitCORE=0`
/// still applies); returns whether the flag was set.
pub fn no_core_dumps() -> bool {
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::set_dumpable(false).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn process_becomes_non_dumpable() {
        assert!(super::no_core_dumps());
        assert_eq!(nix::sys::prctl::get_dumpable().ok(), Some(false));
    }
}
