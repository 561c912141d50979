//! The daemon's heap kept small over time: glibc's allocator returns freed
//! memory to the system only from the top of its heap, so memory freed
//! below a live block stays resident, and the daemon's RSS follows the
//! highest its short-lived allocations ever reached rather than what it
//! holds (issue 15 item 4: the in-use heap flat for an hour while its
//! peaks, and the RSS with them, rose). Once a minute the daemon asks
//! glibc to give every whole free page back.

use std::time::Duration;

/// How often [`give_back`] runs in the daemon.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(60);

/// `malloc_trim(0)`: every whole free page of glibc's heaps goes back to the
/// system (live blocks are untouched); true when something was returned.
/// A few microseconds for the daemon's heap of about a megabyte.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn give_back() -> bool {
    // SAFETY: malloc_trim takes no pointers and has no preconditions; glibc
    // locks each arena while it walks it.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other C libraries return free memory themselves (or have no such call).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn give_back() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn give_back_runs() {
        let v: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; 64 * 1024]).collect();
        drop(v);
        // Whether anything came back depends on the allocator's state; the
        // call itself must be harmless.
        let _ = super::give_back();
        let after = vec![2u8; 1024];
        assert_eq!(after[1023], 2);
    }
}
