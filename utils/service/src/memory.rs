//! How the C allocator keeps large buffers, for processes that hold one per connection.

/// Allocations of this size and up get pages of their own from the system, handed back on free.
const MMAP_THRESHOLD_BYTES: i32 = 128 * 1024;

/// Pins glibc's mmap threshold at 128 KiB (its initial value), so every large allocation is
/// mapped fresh and unmapped when freed. Returns whether the allocator took it (always false
/// off glibc, whose allocators do not move the threshold).
///
/// Why: the Sv2 Noise codec (codec_sv2 with its buffer pool) allocates four zeroed 320 KiB
/// buffers per connection, of which a connection that never sends a frame touches a few KiB.
/// Freshly mapped, those buffers cost no memory until written. But glibc raises the threshold
/// past 320 KiB the first time such a buffer is freed, and from then on serves them from its heap,
/// zeroing reused memory by writing it: every new connection then costs its full 1.25 MiB. A
/// flood of connections that finish the handshake and then say nothing until the setup timeout
/// closes them (and reconnect) took the pool from 200 MiB to 6 GiB in 30 s (5,000 connections);
/// with the threshold pinned it stays near 200 MiB.
pub fn map_large_allocations() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter; any value is valid to pass.
        let taken = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) } == 1;
        if taken {
            tracing::info!(
                threshold_bytes = MMAP_THRESHOLD_BYTES,
                "allocations this large and up are mapped fresh and returned on free"
            );
        } else {
            tracing::warn!("cannot pin the allocator's mmap threshold");
        }
        taken
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = MMAP_THRESHOLD_BYTES;
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Rounds of connections, each with zeroed 320 KiB buffers it never writes, as the Noise
    /// codec's: held, they cost no memory. (Without the pinned threshold the last round costs
    /// about half its 125 MiB.)
    #[test]
    fn unwritten_large_buffers_cost_no_memory_across_rounds() {
        assert!(map_large_allocations());
        let before = rss_kib();
        // On a thread of its own, as a connection task on a runtime worker (another arena).
        let grown_kib = std::thread::spawn(move || {
            for _ in 0..3 {
                let round: Vec<Vec<u8>> = (0..400).map(|_| vec![0u8; 320 * 1024]).collect();
                std::hint::black_box(&round);
            }
            let held: Vec<Vec<u8>> = (0..400).map(|_| vec![0u8; 320 * 1024]).collect();
            std::hint::black_box(&held);
            rss_kib().saturating_sub(before)
        })
        .join()
        .unwrap();
        assert!(grown_kib < 16 * 1024, "grew {grown_kib} KiB");
    }
}
