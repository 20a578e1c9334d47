//! The cluster map and placement.
//!
//! The monitor owns the authoritative [`ClusterMap`] (replicated by Raft);
//! every OSD and client holds a copy and computes placement from it alone:
//! object name → placement group by a stable hash ([`ClusterMap::object_pg`]),
//! placement group → ordered OSD set by weighted rendezvous hashing in the
//! style of CRUSH's straw2, over a host failure domain
//! ([`ClusterMap::pg_up_set`]). Nobody is asked per I/O.
//!
//! Architecture invariant: pure data and pure functions. No I/O, no clocks,
//! no randomness: two processes with the same map compute the same answer.

mod placement;

pub use placement::{stable_hash, straw2_choose};

use std::collections::BTreeMap;

use quarry_rados::{PoolId, SnapId};
use serde::{Deserialize, Serialize};

/// OSD id (`osd.N`).
pub type OsdId = u32;
/// Map epoch: strictly increases with every change the monitor commits.
pub type Epoch = u64;

/// Weight unit: 1.0 = 0x10000, as CRUSH's fixed point.
pub const WEIGHT_ONE: u32 = 0x10000;
/// Largest OSD weight (65535.0, what the 16.16 fixed point holds).
pub const MAX_OSD_WEIGHT: u32 = u16::MAX as u32 * WEIGHT_ONE;

/// Where replicas of a placement group must differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureDomain {
    /// No two replicas on one host (default with several hosts).
    Host,
    /// No two replicas on one OSD (default on a one-host cluster).
    Osd,
}

/// A monitor in the map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonInfo {
    /// Name (`a`, `b`, `c`).
    pub name: String,
    /// Raft node id.
    pub rank: u64,
    /// `ip:port` it listens on.
    pub addr: String,
}

/// An OSD as the map knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsdInfo {
    /// Id.
    pub id: OsdId,
    /// `ip:port` it serves on (empty until it first boots).
    pub addr: String,
    /// Host name (failure domain).
    pub host: String,
    /// Running and reachable.
    pub up: bool,
    /// Counted for placement (an `out` OSD holds no PGs).
    pub in_cluster: bool,
    /// Placement weight in units of [`WEIGHT_ONE`].
    pub weight: u32,
    /// Epoch at which it last came up (a restarted OSD gets a new one).
    pub up_from: Epoch,
    /// Epoch at which it was last marked down (0 = never).
    pub down_at: Epoch,
}

/// A pool as the map knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolDef {
    /// Id, never reused.
    pub id: PoolId,
    /// Unique name.
    pub name: String,
    /// Replicas wanted.
    pub size: u32,
    /// Fewest replicas that may accept writes.
    pub min_size: u32,
    /// Placement groups (power of two not required; stable_mod is used).
    pub pg_num: u32,
    /// Failure domain for its replicas.
    pub failure_domain: FailureDomain,
    /// Last allocated self-managed snapshot id.
    pub snap_seq: SnapId,
    /// Removed self-managed snapshot ids, ascending (OSDs trim their clones).
    pub removed_snaps: Vec<SnapId>,
    /// Application tag (`rbd`), as `ceph osd pool application enable`.
    pub application: Option<String>,
}

/// A placement group: a pool and a seed in `0..pg_num`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PgId {
    /// The pool.
    pub pool: PoolId,
    /// PG number inside the pool.
    pub seed: u32,
}

impl std::fmt::Display for PgId {
    /// Ceph's `1.1f` form.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:x}", self.pool, self.seed)
    }
}

/// The last acting set of a PG that went active (accepted writes), so a
/// later primary can refuse to go active without one of its members:
/// that is what guarantees no acknowledged write is lost across failovers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgHistory {
    /// Epoch at which that acting set went active.
    pub epoch: Epoch,
    /// The acting set, primary first.
    pub acting: Vec<OsdId>,
}

/// The cluster map: everything a client or OSD needs to place and route.
/// Secrets are not in it (the auth database stays on the monitors).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Cluster id (uuid string).
    pub fsid: String,
    /// Epoch of this map.
    pub epoch: Epoch,
    /// Monitors.
    pub mons: Vec<MonInfo>,
    /// OSDs by id.
    pub osds: BTreeMap<OsdId, OsdInfo>,
    /// Pools by id.
    pub pools: BTreeMap<PoolId, PoolDef>,
    /// Next pool id to allocate.
    pub next_pool_id: PoolId,
    /// Per-PG activation history (see [`PgHistory`]).
    pub pg_history: BTreeMap<PgId, PgHistory>,
    /// Fenced client addresses (`ceph osd blocklist`): canonical
    /// [`ClientAddr`] text → expiry (unix seconds). OSDs refuse every
    /// request of a client that matches a live entry.
    pub blocklist: BTreeMap<String, u64>,
}

/// A client address as Ceph writes it, `ip:port/nonce`. A Quarry client's
/// address is `<ip the OSD sees>:0/<global id>`: the nonce names one client
/// instance. A blocklist entry with port 0 and nonce 0 fences a whole IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr {
    /// IP address.
    pub ip: std::net::IpAddr,
    /// Port (0 for clients).
    pub port: u16,
    /// Instance nonce (Quarry: the client's global id; 0 = any).
    pub nonce: u64,
}

impl ClientAddr {
    /// Parse `ip`, `ip:port`, `ip:port/nonce` or `[v6]:port/nonce` (an
    /// optional `v1:`/`v2:`/`any:` prefix, as Ceph prints, is accepted).
    pub fn parse(s: &str) -> Result<ClientAddr, String> {
        let t = s.trim();
        let t = ["any:", "v1:", "v2:"]
            .iter()
            .find_map(|p| t.strip_prefix(p))
            .unwrap_or(t);
        let (hostport, nonce) = match t.split_once('/') {
            Some((h, n)) => (
                h,
                n.parse::<u64>()
                    .map_err(|_| format!("invalid address '{s}': bad nonce '{n}'"))?,
            ),
            None => (t, 0),
        };
        if let Ok(ip) = hostport.parse::<std::net::IpAddr>() {
            return Ok(ClientAddr { ip, port: 0, nonce });
        }
        let sa = hostport
            .parse::<std::net::SocketAddr>()
            .map_err(|_| format!("invalid address '{s}': expected ip[:port][/nonce]"))?;
        Ok(ClientAddr {
            ip: sa.ip(),
            port: sa.port(),
            nonce,
        })
    }
}

impl std::fmt::Display for ClientAddr {
    /// `127.0.0.1:0/4123`, `[::1]:0/4123`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}",
            std::net::SocketAddr::new(self.ip, self.port),
            self.nonce
        )
    }
}

/// Placement failures.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The pool id is not in the map.
    #[error("pool {0} does not exist")]
    NoSuchPool(PoolId),
}

impl MapError {
    /// errno for the C ABI.
    pub fn errno(&self) -> quarry_common::Errno {
        quarry_common::Errno::ENOENT
    }
}

impl ClusterMap {
    /// An empty map at epoch 0.
    pub fn new(fsid: impl Into<String>) -> Self {
        ClusterMap {
            fsid: fsid.into(),
            epoch: 0,
            mons: Vec::new(),
            osds: BTreeMap::new(),
            pools: BTreeMap::new(),
            next_pool_id: 1,
            pg_history: BTreeMap::new(),
            blocklist: BTreeMap::new(),
        }
    }

    /// Whether a client (seen at `ip`, global id `nonce`) is fenced at
    /// `now_unix`: an unexpired entry for exactly that instance, or for its
    /// whole IP. Two map lookups; nothing when the blocklist is empty.
    pub fn is_blocklisted(&self, ip: std::net::IpAddr, nonce: u64, now_unix: u64) -> bool {
        if self.blocklist.is_empty() {
            return false;
        }
        let live = |a: ClientAddr| {
            self.blocklist
                .get(&a.to_string())
                .is_some_and(|&until| until > now_unix)
        };
        live(ClientAddr { ip, port: 0, nonce })
            || live(ClientAddr {
                ip,
                port: 0,
                nonce: 0,
            })
    }

    /// Look a pool up by name.
    pub fn pool_by_name(&self, name: &str) -> Option<&PoolDef> {
        self.pools.values().find(|p| p.name == name)
    }

    /// The PG an object belongs to. The namespace takes part in the hash
    /// (as in RADOS), so equal names in two namespaces spread independently.
    pub fn object_pg(&self, pool: PoolId, namespace: &str, name: &str) -> Result<PgId, MapError> {
        let def = self.pools.get(&pool).ok_or(MapError::NoSuchPool(pool))?;
        let mut key = Vec::with_capacity(namespace.len() + name.len() + 1);
        key.extend_from_slice(namespace.as_bytes());
        key.push(0x1f);
        key.extend_from_slice(name.as_bytes());
        let h = stable_hash(&key, 0);
        Ok(PgId {
            pool,
            seed: stable_mod(h as u32, def.pg_num),
        })
    }

    /// The OSDs CRUSH-style placement picks for a PG, primary first, among
    /// `in` OSDs with non-zero weight, honouring the failure domain; this
    /// includes OSDs that are down (they stay mapped until marked out).
    pub fn pg_raw_set(&self, pg: PgId) -> Result<Vec<OsdId>, MapError> {
        let def = self
            .pools
            .get(&pg.pool)
            .ok_or(MapError::NoSuchPool(pg.pool))?;
        let candidates: Vec<&OsdInfo> = self
            .osds
            .values()
            .filter(|o| o.in_cluster && o.weight > 0)
            .collect();
        let pg_key = (pg.pool as u64) << 32 | pg.seed as u64;
        Ok(placement::place(
            pg_key,
            def.size as usize,
            def.failure_domain,
            &candidates,
        ))
    }

    /// The up set: [`Self::pg_raw_set`] without the OSDs that are down,
    /// order kept (its first member is the primary).
    pub fn pg_up_set(&self, pg: PgId) -> Result<Vec<OsdId>, MapError> {
        let raw = self.pg_raw_set(pg)?;
        Ok(raw
            .into_iter()
            .filter(|id| self.osds.get(id).is_some_and(|o| o.up))
            .collect())
    }

    /// The primary OSD of a PG, if any replica is up.
    pub fn pg_primary(&self, pg: PgId) -> Result<Option<OsdId>, MapError> {
        Ok(self.pg_up_set(pg)?.first().copied())
    }

    /// Every PG of a pool.
    pub fn pool_pgs(&self, pool: PoolId) -> Result<Vec<PgId>, MapError> {
        let def = self.pools.get(&pool).ok_or(MapError::NoSuchPool(pool))?;
        Ok((0..def.pg_num).map(|seed| PgId { pool, seed }).collect())
    }

    /// Whether there is exactly one host among the OSDs (then pools default
    /// to the OSD failure domain, as a one-host Ceph cluster must).
    pub fn single_host(&self) -> bool {
        let mut hosts = self.osds.values().map(|o| o.host.as_str());
        match hosts.next() {
            None => true,
            Some(first) => hosts.all(|h| h == first),
        }
    }
}

/// Ceph's stable_mod: maps `x` into `0..b` so that growing `b` moves as few
/// inputs as possible.
pub fn stable_mod(x: u32, b: u32) -> u32 {
    if b <= 1 {
        return 0;
    }
    let bmask = b.next_power_of_two() - 1;
    if (x & bmask) < b {
        x & bmask
    } else {
        x & (bmask >> 1)
    }
}

#[cfg(test)]
mod tests;
