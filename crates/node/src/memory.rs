//! How the host's memory allocator is set up.
//!
//! Every plugin runs on its own thread, and glibc's malloc gives threads
//! their own arenas (up to eight per core) which keep what was freed in
//! them. In the 30-minute soak (50 plugins, 10 of them loaded, updated and
//! unloaded over and over) the daemon's resident memory climbed to 218 MiB
//! and kept 196 MiB after every plugin was unloaded (the empty daemon:
//! 20 MiB); with two arenas the same churn stayed at 105 MiB and fell to
//! 83 MiB (docs/src/reliability.md). Plugins allocate little on the host's
//! heap (their memory is their own linear memory), so fewer arenas cost
//! little contention.

/// Arenas the host asks glibc for, unless `MALLOC_ARENA_MAX` says otherwise.
pub const DEFAULT_ARENAS: i32 = 2;

/// Cap glibc's malloc arenas at [`DEFAULT_ARENAS`], before the host starts
/// its threads. A `MALLOC_ARENA_MAX` in the environment wins (glibc has
/// read it already). Returns the cap set, if any.
pub fn cap_malloc_arenas() -> Option<i32> {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return None;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's tuning; it is called
        // before the host starts its worker threads.
        if unsafe { libc::mallopt(libc::M_ARENA_MAX, DEFAULT_ARENAS) } == 1 {
            return Some(DEFAULT_ARENAS);
        }
    }
    None
}

/// Give memory freed by an unloaded plugin back to the system (glibc keeps
/// it in its arenas otherwise).
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory at the top of each
    // arena and unused pages inside them; it takes malloc's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
