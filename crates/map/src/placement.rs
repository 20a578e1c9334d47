//! Weighted rendezvous hashing (straw2) over a one-level host hierarchy.

use std::collections::BTreeMap;

use crate::{FailureDomain, OsdId, OsdInfo};

/// A stable 64-bit hash of bytes with a seed: FNV-1a followed by the
/// splitmix64 finalizer for avalanche. Fixed forever: placement depends on it.
pub fn stable_hash(data: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// straw2: among `(item, weight)` pairs pick the one with the highest
/// `ln(u) / weight` where `u` is a per-(key, item) uniform draw in (0, 1].
/// Changing one item's weight only moves keys to or from that item.
/// Returns `None` when every weight is zero.
pub fn straw2_choose(key: u64, items: &[(u64, u32)]) -> Option<u64> {
    let mut best: Option<(f64, u64)> = None;
    for &(item, weight) in items {
        if weight == 0 {
            continue;
        }
        let h = mix64(key ^ mix64(item.wrapping_add(0x51_7cc1_b727_220a)));
        // 53 random bits -> u in (0, 1]; never 0 so ln is finite.
        let u = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let draw = u.ln() / (weight as f64 / crate::WEIGHT_ONE as f64);
        match best {
            Some((b, _)) if b >= draw => {}
            _ => best = Some((draw, item)),
        }
    }
    best.map(|(_, item)| item)
}

/// Choose up to `size` OSDs for `pg_key` from `candidates`, distinct per
/// failure domain, in a stable order (the first is the primary).
pub(crate) fn place(
    pg_key: u64,
    size: usize,
    domain: FailureDomain,
    candidates: &[&OsdInfo],
) -> Vec<OsdId> {
    let mut chosen = Vec::with_capacity(size);
    match domain {
        FailureDomain::Osd => {
            let mut items: Vec<(u64, u32)> =
                candidates.iter().map(|o| (o.id as u64, o.weight)).collect();
            for r in 0..size {
                let key = mix64(pg_key ^ (r as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
                let Some(pick) = straw2_choose(key, &items) else {
                    break;
                };
                items.retain(|&(i, _)| i != pick);
                chosen.push(pick as OsdId);
            }
        }
        FailureDomain::Host => {
            let mut hosts: BTreeMap<&str, Vec<(u64, u32)>> = BTreeMap::new();
            for o in candidates {
                hosts
                    .entry(o.host.as_str())
                    .or_default()
                    .push((o.id as u64, o.weight));
            }
            let mut host_items: Vec<(u64, u32, &str)> = hosts
                .iter()
                .map(|(h, osds)| {
                    let w = osds.iter().map(|&(_, w)| w).fold(0u32, u32::saturating_add);
                    (stable_hash(h.as_bytes(), 1), w, *h)
                })
                .collect();
            for r in 0..size {
                let key = mix64(pg_key ^ (r as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
                let pairs: Vec<(u64, u32)> = host_items.iter().map(|&(h, w, _)| (h, w)).collect();
                let Some(pick) = straw2_choose(key, &pairs) else {
                    break;
                };
                let Some(pos) = host_items.iter().position(|&(h, _, _)| h == pick) else {
                    break;
                };
                let (_, _, name) = host_items.remove(pos);
                let Some(osds) = hosts.get(name) else { break };
                if let Some(osd) = straw2_choose(mix64(key ^ pick), osds) {
                    chosen.push(osd as OsdId);
                }
            }
        }
    }
    debug_assert!(chosen.len() <= size);
    chosen
}
