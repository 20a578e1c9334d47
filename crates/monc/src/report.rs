//! Ceph's forms of the monitors' status (`ceph status`, `ceph health`):
//! JSON and text built from a [`ClusterStatus`] and the map, shared by the
//! `ceph` command and the C library's `rados_mon_command`, so both answer
//! alike.

use std::collections::BTreeMap;

use quarry_map::ClusterMap;
use serde_json::{json, Value};

use crate::wire::{ClusterStatus, Health, HealthCheck, PgScrubErrors};

/// Health as Ceph's JSON prints it: checks keyed by code.
pub fn health_json(health: &str, checks: &[HealthCheck], detail: bool) -> Value {
    let mut m = serde_json::Map::new();
    for c in checks {
        let mut v = json!({
            "severity": c.severity.to_string(),
            "summary": {"message": c.summary, "count": c.count},
            "muted": false,
        });
        if detail {
            v["detail"] = c
                .detail
                .iter()
                .map(|d| json!({"message": d}))
                .collect::<Vec<_>>()
                .into();
        }
        m.insert(c.code.clone(), v);
    }
    json!({"status": health, "checks": m, "mutes": []})
}

/// Health as `ceph health [detail]` prints it: the status and the checks'
/// summaries on one line, then with `detail` each check and its lines.
pub fn health_text(health: &str, checks: &[HealthCheck], detail: bool) -> String {
    let mut s = String::new();
    let summaries: Vec<&str> = checks.iter().map(|c| c.summary.as_str()).collect();
    if checks.is_empty() {
        s += &format!("{health}\n");
    } else {
        s += &format!("{health} {}\n", summaries.join("; "));
    }
    if detail {
        for c in checks {
            let sev = match c.severity {
                Health::Err => "ERR",
                _ => "WRN",
            };
            s += &format!("[{sev}] {}: {}\n", c.code, c.summary);
            for d in &c.detail {
                s += &format!("    {d}\n");
            }
        }
    }
    s
}

/// `ceph status --format json`: the fields monitoring tools read (fsid,
/// health, quorum, OSD and PG counts, PG states, objects and bytes).
pub fn status_json(st: &ClusterStatus, map: &ClusterMap, objects: u64, bytes: u64) -> Value {
    let pgs = pg_states(map, &st.inconsistent);
    json!({
        "fsid": st.fsid,
        "health": health_json(&st.health.to_string(), &st.checks, false),
        "quorum_names": st.quorum,
        "monmap": {"num_mons": st.mons.len()},
        "osdmap": {"epoch": st.epoch, "num_osds": st.num_osds,
            "num_up_osds": st.num_up_osds, "num_in_osds": st.num_in_osds},
        "pgmap": {"num_pools": st.num_pools, "num_pgs": st.num_pgs,
            "num_objects": objects, "data_bytes": bytes,
            "pgs_by_state": pgs.iter().map(|(k, v)| json!({"state_name": k, "count": v})).collect::<Vec<_>>()},
    })
}

/// PG states from the map: a PG with an activation record whose acting set
/// is complete is `active+clean`, with fewer replicas `active+undersized`,
/// with fewer OSDs up than the pool's `min_size` `undersized+peered` (no
/// I/O, as Ceph's), without a record `unknown`; `+inconsistent` when its
/// primary reports scrub errors.
pub fn pg_states(map: &ClusterMap, inconsistent: &[PgScrubErrors]) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for p in map.pools.values() {
        for seed in 0..p.pg_num {
            let pg = quarry_map::PgId { pool: p.id, seed };
            *out.entry(pg_state(map, pg, inconsistent)).or_insert(0) += 1;
        }
    }
    out
}

/// One PG's state as [`pg_states`] counts it.
pub fn pg_state(map: &ClusterMap, pg: quarry_map::PgId, inconsistent: &[PgScrubErrors]) -> String {
    let (size, min_size) = map
        .pools
        .get(&pg.pool)
        .map_or((0, 0), |p| (p.size, p.min_size.max(1)));
    // The activation record stays in the map after members go down; the
    // up set tells whether the PG can still be active (the monitors' health
    // check counts it the same way).
    let up_set = map.pg_up_set(pg).unwrap_or_default();
    let up = up_set.len() as u32;
    let mut state = match map.pg_history.get(&pg) {
        // Every member of its last acting set is down: peering waits for
        // one of them (or for `ceph osd lost`), as Ceph's `down`.
        Some(h) if !h.acting.iter().any(|o| up_set.contains(o)) => "down",
        Some(_) if up < min_size => "undersized+peered",
        Some(h) if h.acting.len() as u32 >= size => "active+clean",
        Some(_) => "active+undersized",
        None => "unknown",
    }
    .to_string();
    if inconsistent.iter().any(|e| e.pg == pg) {
        state.push_str("+inconsistent");
    }
    state
}
