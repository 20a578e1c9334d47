//! Choosing a TCP port for a daemon before it starts.

use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;

/// Lowest port considered (below are well-known and registered services).
const LOWEST: u32 = 10000;

/// The kernel's ephemeral port range (`ip_local_port_range`), or Linux's
/// default when it cannot be read.
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .filter(|&(lo, hi)| lo <= hi && hi <= 65535)
        .unwrap_or((32768, 60999))
}

/// A TCP port on 127.0.0.1 that is free now, for a daemon that will bind
/// it shortly (a monitor whose address goes into `ceph.conf` first).
///
/// Chosen outside the kernel's ephemeral range: a port the kernel hands
/// out for `bind(0)` can be taken by any outgoing connection on the host
/// between this check and the daemon's bind (or before a restart), one
/// outside it only by an explicit bind. Falls back to the kernel's choice
/// when no such port is free.
pub fn free_local_port() -> std::io::Result<u16> {
    let (lo, hi) = ephemeral_range();
    let below = lo.saturating_sub(LOWEST);
    let above = 65535u32.saturating_sub(hi);
    let total = below + above;
    if total > 0 {
        for n in 0..1000u32 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(n);
            let r = (h.finish() % u64::from(total)) as u32;
            let port = if r < below {
                LOWEST + r
            } else {
                hi + 1 + (r - below)
            };
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chosen_port_is_bindable_and_outside_the_ephemeral_range() {
        let (lo, hi) = ephemeral_range();
        for _ in 0..50 {
            let p = u32::from(free_local_port().expect("a free port"));
            assert!(p >= LOWEST, "{p} is below {LOWEST}");
            assert!(p < lo || p > hi, "{p} is in the ephemeral range {lo}-{hi}");
            TcpListener::bind(("127.0.0.1", p as u16)).expect("the chosen port binds");
        }
    }
}
