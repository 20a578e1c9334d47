//! The replicated state machine: cluster map, auth database, counters.
//!
//! Architecture invariant: [`MonState::apply`] is a pure function of the
//! state and the command. Everything non-deterministic (fresh keys, clock
//! readings, config defaults) is resolved by the proposing monitor and
//! carried inside the [`StateCmd`], so every replica computes the same
//! state from the same log.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use quarry_auth::{EntityCaps, Secret};
use quarry_common::entity::EntityName;
use quarry_common::options::mondb::ConfigDb;
use quarry_common::Errno;
use quarry_map::{
    ClusterMap, Epoch, FailureDomain, MonInfo, OsdId, OsdInfo, PgHistory, PgId, PoolDef,
    MAX_OSD_WEIGHT, WEIGHT_ONE,
};
use quarry_monc::{AppOp, AuthEntry, MonReply, PgScrubErrors, PoolApplications};
use quarry_rados::{PoolId, SnapId};

/// Largest pool size accepted (Ceph's limit is also 10).
const MAX_POOL_SIZE: u32 = 10;
/// Largest pg_num accepted (bounds the map and per-PG work).
const MAX_PG_NUM: u32 = 65_536;
/// Longest pool name accepted.
const MAX_POOL_NAME: usize = 255;
/// Most applications enabled on one pool (Ceph's limit).
const MAX_POOL_APPLICATIONS: usize = 4;
/// Most keys of one application on one pool (Ceph's limit).
const MAX_POOL_APPLICATION_KEYS: usize = 64;
/// Longest application name, key or value (Ceph's limit).
const MAX_POOL_APPLICATION_LENGTH: usize = 128;

/// One entity of the auth database.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRecord {
    /// Ceph base64 key.
    pub key: String,
    /// Caps by service.
    pub caps: EntityCaps,
}

impl std::fmt::Debug for AuthRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRecord")
            .field("key", &"<redacted>")
            .field("caps", &self.caps)
            .finish()
    }
}

impl AuthRecord {
    /// The secret (None if the stored key is somehow unparseable).
    pub fn secret(&self) -> Option<Secret> {
        Secret::from_base64(&self.key).ok()
    }
}

/// The whole replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonState {
    /// False until the first `Bootstrap` entry is applied.
    pub initialized: bool,
    /// The cluster map.
    pub map: ClusterMap,
    /// Entities by name.
    pub auth: BTreeMap<String, AuthRecord>,
    /// Key that signs tickets (OSDs verify with it).
    pub service_key: [u8; 32],
    /// Next global id to hand out (monitors reserve ranges).
    pub next_global_id: u64,
    /// When each down OSD went down (unix seconds, from the leader's clock).
    pub osd_down_since: BTreeMap<OsdId, u64>,
    /// OSDs marked out by the failure detector (marked in again on boot).
    pub auto_out: BTreeSet<OsdId>,
    /// The central config database (`ceph config set`): section → option →
    /// value.
    pub config: ConfigDb,
    /// PGs whose last deep scrub found bad copies, as their primaries
    /// reported them (cleared by a later clean scrub or a full repair).
    pub scrub_errors: BTreeMap<PgId, PgScrubErrors>,
    /// When each PG's last deep scrub finished (unix seconds, the proposing
    /// monitor's clock): primaries schedule the next one from it, across
    /// their restarts and failovers.
    pub scrub_stamps: BTreeMap<PgId, u64>,
    /// OSD flags set by the operator (`ceph osd set noout`): see
    /// [`OSD_FLAGS`]. With `scrub_errors` and `scrub_stamps`, the last
    /// fields: states stored before them decode through
    /// [`MonState::decode`].
    pub osd_flags: BTreeSet<String>,
    /// `nearfull_ratio` x 1000: an OSD whose filesystem is fuller is
    /// HEALTH_WARN (Ceph's default 0.85).
    pub nearfull_milli: u32,
    /// `full_ratio` x 1000: an OSD whose filesystem is fuller takes no
    /// more writes that need space (Ceph's default 0.95).
    pub full_milli: u32,
    /// Pool quotas (`ceph osd pool set-quota`); a pool without any has no
    /// entry. States stored before it decode through [`MonStateV3`].
    pub pool_quotas: BTreeMap<PoolId, PoolQuota>,
    /// Each pool's application metadata (`ceph osd pool application`); a
    /// pool with none has no entry. The map's `PoolDef::application` names
    /// one of them (the one enabled first, while it stays), so the map's
    /// wire layout did not change. The last field: states stored before
    /// it decode through [`MonStateV4`].
    pub pool_apps: BTreeMap<PoolId, PoolApplications>,
}

/// The application metadata a map's pools imply when no richer record
/// exists (states stored before `pool_apps`): each tagged pool's tag.
fn apps_from_map(map: &ClusterMap) -> BTreeMap<PoolId, PoolApplications> {
    map.pools
        .values()
        .filter_map(|p| {
            let app = p.application.clone()?;
            Some((p.id, BTreeMap::from([(app, BTreeMap::new())])))
        })
        .collect()
}

/// [`MonState`] as stored before pool application metadata (session 22).
#[derive(Deserialize)]
pub(crate) struct MonStateV4 {
    initialized: bool,
    map: ClusterMap,
    auth: BTreeMap<String, AuthRecord>,
    service_key: [u8; 32],
    next_global_id: u64,
    osd_down_since: BTreeMap<OsdId, u64>,
    auto_out: BTreeSet<OsdId>,
    config: ConfigDb,
    scrub_errors: BTreeMap<PgId, PgScrubErrors>,
    scrub_stamps: BTreeMap<PgId, u64>,
    osd_flags: BTreeSet<String>,
    nearfull_milli: u32,
    full_milli: u32,
    pool_quotas: BTreeMap<PoolId, PoolQuota>,
}

impl From<MonStateV4> for MonState {
    fn from(v: MonStateV4) -> MonState {
        MonState {
            pool_apps: apps_from_map(&v.map),
            initialized: v.initialized,
            map: v.map,
            auth: v.auth,
            service_key: v.service_key,
            next_global_id: v.next_global_id,
            osd_down_since: v.osd_down_since,
            auto_out: v.auto_out,
            config: v.config,
            scrub_errors: v.scrub_errors,
            scrub_stamps: v.scrub_stamps,
            osd_flags: v.osd_flags,
            nearfull_milli: v.nearfull_milli,
            full_milli: v.full_milli,
            pool_quotas: v.pool_quotas,
        }
    }
}

/// A pool's quotas, Ceph's `quota_max_objects` and `quota_max_bytes` (0: no
/// limit). A pool at either is `POOL_FULL`: its writes that need space wait.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolQuota {
    /// Most objects.
    pub max_objects: u64,
    /// Most bytes of data (one copy, as the pool's usage counts them).
    pub max_bytes: u64,
}

/// [`MonState`] as stored before pool quotas (session 20).
#[derive(Deserialize)]
pub(crate) struct MonStateV3 {
    initialized: bool,
    map: ClusterMap,
    auth: BTreeMap<String, AuthRecord>,
    service_key: [u8; 32],
    next_global_id: u64,
    osd_down_since: BTreeMap<OsdId, u64>,
    auto_out: BTreeSet<OsdId>,
    config: ConfigDb,
    scrub_errors: BTreeMap<PgId, PgScrubErrors>,
    scrub_stamps: BTreeMap<PgId, u64>,
    osd_flags: BTreeSet<String>,
    nearfull_milli: u32,
    full_milli: u32,
}

impl From<MonStateV3> for MonState {
    fn from(v: MonStateV3) -> MonState {
        MonState {
            pool_apps: apps_from_map(&v.map),
            initialized: v.initialized,
            map: v.map,
            auth: v.auth,
            service_key: v.service_key,
            next_global_id: v.next_global_id,
            osd_down_since: v.osd_down_since,
            auto_out: v.auto_out,
            config: v.config,
            scrub_errors: v.scrub_errors,
            scrub_stamps: v.scrub_stamps,
            osd_flags: v.osd_flags,
            nearfull_milli: v.nearfull_milli,
            full_milli: v.full_milli,
            pool_quotas: BTreeMap::new(),
        }
    }
}

/// Ceph's default `mon_osd_nearfull_ratio` (0.85), per mille.
pub const NEARFULL_MILLI: u32 = 850;
/// Ceph's default `mon_osd_full_ratio` (0.95), per mille.
pub const FULL_MILLI: u32 = 950;

/// The OSD flags the monitors honour: `noout` (the failure detector marks
/// no OSD out), `nodown` (nor down), `noin` (a booting OSD is not marked
/// in: neither a new one nor one the detector marked out).
pub const OSD_FLAGS: [&str; 3] = ["noout", "nodown", "noin"];

/// [`MonState`] as stored before scrub errors were kept (session 18).
#[derive(Deserialize)]
pub(crate) struct MonStateV2 {
    initialized: bool,
    map: ClusterMap,
    auth: BTreeMap<String, AuthRecord>,
    service_key: [u8; 32],
    next_global_id: u64,
    osd_down_since: BTreeMap<OsdId, u64>,
    auto_out: BTreeSet<OsdId>,
    config: ConfigDb,
}

impl From<MonStateV2> for MonState {
    fn from(v: MonStateV2) -> MonState {
        MonState {
            pool_apps: apps_from_map(&v.map),
            initialized: v.initialized,
            map: v.map,
            auth: v.auth,
            service_key: v.service_key,
            next_global_id: v.next_global_id,
            osd_down_since: v.osd_down_since,
            auto_out: v.auto_out,
            config: v.config,
            scrub_errors: BTreeMap::new(),
            scrub_stamps: BTreeMap::new(),
            osd_flags: BTreeSet::new(),
            nearfull_milli: NEARFULL_MILLI,
            full_milli: FULL_MILLI,
            pool_quotas: BTreeMap::new(),
        }
    }
}

/// [`MonState`] as stored before the config database existed (postcard is
/// not self-describing, so the old layout is decoded explicitly).
#[derive(Deserialize)]
pub(crate) struct MonStateV1 {
    initialized: bool,
    map: ClusterMap,
    auth: BTreeMap<String, AuthRecord>,
    service_key: [u8; 32],
    next_global_id: u64,
    osd_down_since: BTreeMap<OsdId, u64>,
    auto_out: BTreeSet<OsdId>,
}

impl From<MonStateV1> for MonState {
    fn from(v: MonStateV1) -> MonState {
        MonState {
            pool_apps: apps_from_map(&v.map),
            initialized: v.initialized,
            map: v.map,
            auth: v.auth,
            service_key: v.service_key,
            next_global_id: v.next_global_id,
            osd_down_since: v.osd_down_since,
            auto_out: v.auto_out,
            config: ConfigDb::new(),
            scrub_errors: BTreeMap::new(),
            scrub_stamps: BTreeMap::new(),
            osd_flags: BTreeSet::new(),
            nearfull_milli: NEARFULL_MILLI,
            full_milli: FULL_MILLI,
            pool_quotas: BTreeMap::new(),
        }
    }
}

/// A stored record whose last field is a [`MonState`] in any of its
/// layouts (postcard is not self-describing: older layouts are decoded
/// explicitly, newest first).
pub(crate) trait WithLegacyState: Sized {
    /// The same record with the state as stored before pool applications.
    type V4: for<'a> Deserialize<'a>;
    /// The same record with the state as stored before pool quotas.
    type V3: for<'a> Deserialize<'a>;
    /// The same record with the state as stored before scrub errors.
    type V2: for<'a> Deserialize<'a>;
    /// The same record with the state as stored before the config database.
    type V1: for<'a> Deserialize<'a>;
    /// Convert the V4 form.
    fn from_v4(old: Self::V4) -> Self;
    /// Convert the V3 form.
    fn from_v3(old: Self::V3) -> Self;
    /// Convert the V2 form.
    fn from_v2(old: Self::V2) -> Self;
    /// Convert the V1 form.
    fn from_v1(old: Self::V1) -> Self;
}

/// Decode `bytes` as `T` in its current layout or an older one (a monitor
/// upgraded in place keeps its state).
pub(crate) fn decode_compat<T>(bytes: &[u8]) -> Result<T, postcard::Error>
where
    T: WithLegacyState + for<'a> Deserialize<'a>,
{
    match postcard::from_bytes::<T>(bytes) {
        Ok(v) => Ok(v),
        Err(e) => postcard::from_bytes::<T::V4>(bytes)
            .map(T::from_v4)
            .or_else(|_| postcard::from_bytes::<T::V3>(bytes).map(T::from_v3))
            .or_else(|_| postcard::from_bytes::<T::V2>(bytes).map(T::from_v2))
            .or_else(|_| postcard::from_bytes::<T::V1>(bytes).map(T::from_v1))
            .map_err(|_| e),
    }
}

impl WithLegacyState for MonState {
    type V4 = MonStateV4;
    type V3 = MonStateV3;
    type V2 = MonStateV2;
    type V1 = MonStateV1;
    fn from_v4(old: MonStateV4) -> MonState {
        old.into()
    }
    fn from_v3(old: MonStateV3) -> MonState {
        old.into()
    }
    fn from_v2(old: MonStateV2) -> MonState {
        old.into()
    }
    fn from_v1(old: MonStateV1) -> MonState {
        old.into()
    }
}

/// Default values the proposer fills in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolParams {
    /// Pool name.
    pub name: String,
    /// PG count.
    pub pg_num: u32,
    /// Replicas.
    pub size: u32,
    /// Min replicas.
    pub min_size: u32,
    /// Application tag.
    pub application: Option<String>,
    /// Failure domain; None = decide from the map (one host → osd).
    pub failure_domain: Option<FailureDomain>,
}

/// A replicated log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateCmd {
    /// First entry: the initial state (ignored once initialized).
    Bootstrap {
        /// Cluster id.
        fsid: String,
        /// Monitors.
        mons: Vec<MonInfo>,
        /// Initial entities: name, base64 key, caps.
        entities: Vec<(String, String, EntityCaps)>,
        /// Ticket signing key.
        service_key: [u8; 32],
    },
    /// Reserve `count` global ids; returns the first.
    AllocGlobalIds {
        /// How many.
        count: u64,
    },
    /// Create a pool.
    PoolCreate(PoolParams),
    /// Delete a pool.
    PoolDelete {
        /// Name.
        name: String,
    },
    /// Set a pool variable.
    PoolSet {
        /// Name.
        name: String,
        /// Variable.
        var: String,
        /// Value.
        val: String,
    },
    /// Allocate a self-managed snapshot id.
    SnapCreate {
        /// Pool.
        pool: PoolId,
    },
    /// Remove a self-managed snapshot.
    SnapRemove {
        /// Pool.
        pool: PoolId,
        /// Snapshot.
        snap: SnapId,
    },
    /// An OSD booted.
    OsdBoot {
        /// Id.
        id: OsdId,
        /// Address.
        addr: String,
        /// Host.
        host: String,
    },
    /// Mark OSDs down (admin or failure detector).
    OsdDown {
        /// Ids.
        ids: Vec<OsdId>,
        /// Leader's clock.
        now_unix: u64,
    },
    /// Mark OSDs out; `auto` when the failure detector does it.
    OsdOut {
        /// Ids.
        ids: Vec<OsdId>,
        /// By the failure detector.
        auto: bool,
    },
    /// Mark an OSD in.
    OsdIn {
        /// Id.
        id: OsdId,
    },
    /// Record PG activations.
    PgActivated {
        /// (pg, epoch, acting) triples.
        items: Vec<(PgId, Epoch, Vec<OsdId>)>,
    },
    /// Create an entity or return the existing one.
    AuthGetOrCreate {
        /// Entity.
        entity: String,
        /// Caps.
        caps: EntityCaps,
        /// Caps were given (an existing entity must then match).
        caps_given: bool,
        /// Key to use if the entity is new.
        new_key: String,
    },
    /// Add an entity with a given key.
    AuthAdd {
        /// Entity.
        entity: String,
        /// Key.
        key: String,
        /// Caps.
        caps: EntityCaps,
    },
    /// Delete an entity.
    AuthDel {
        /// Entity.
        entity: String,
    },
    /// Replace an entity's caps.
    AuthCaps {
        /// Entity.
        entity: String,
        /// Caps.
        caps: EntityCaps,
    },
    /// Fence a client address until `until_unix` (`osd blocklist add`);
    /// entries expired at `now_unix` are dropped on the way.
    BlocklistAdd {
        /// Canonical `ip:port/nonce`.
        addr: String,
        /// Expiry, unix seconds.
        until_unix: u64,
        /// Leader's clock.
        now_unix: u64,
    },
    /// Lift a fence (`osd blocklist rm`); absent entries are not an error.
    BlocklistRm {
        /// Canonical `ip:port/nonce`.
        addr: String,
        /// Leader's clock.
        now_unix: u64,
    },
    /// Store a config database value (validated by the proposer).
    ConfigSet {
        /// Section.
        section: String,
        /// Canonical option name.
        name: String,
        /// Value.
        value: String,
    },
    /// Remove a config database value (absent is not an error).
    ConfigRm {
        /// Section.
        section: String,
        /// Canonical option name.
        name: String,
    },
    /// A primary's deep scrub of a PG: its bad copies (0 clears the PG),
    /// and when it finished (the proposer's clock).
    PgScrubbed {
        /// What it found.
        report: PgScrubErrors,
        /// Unix seconds.
        now_unix: u64,
    },
    /// Set or clear an OSD flag (one of [`OSD_FLAGS`]).
    OsdFlag {
        /// The flag.
        flag: String,
        /// Set or clear.
        set: bool,
    },
    /// Set the full (else the nearfull) ratio, per mille.
    SetFullRatio {
        /// Which.
        full: bool,
        /// 1..=1000.
        milli: u32,
    },
    /// Rename a pool (`osd pool rename`); objects, PGs and quotas follow
    /// its id.
    PoolRename {
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// Set one quota of a pool (`max_objects` or `max_bytes`; 0 removes it).
    PoolQuota {
        /// Pool name.
        name: String,
        /// `max_objects` or `max_bytes`.
        field: String,
        /// The limit.
        value: u64,
    },
    /// Change a pool's application metadata.
    PoolApplication {
        /// Pool name.
        pool: String,
        /// The change.
        op: AppOp,
    },
    /// Set an OSD's placement weight (`osd crush reweight`). Appended after
    /// the others: a variant's place is its tag in the stored log.
    OsdWeight {
        /// Id.
        id: OsdId,
        /// Units of `WEIGHT_ONE`, at most [`MAX_OSD_WEIGHT`].
        weight: u32,
    },
    /// Remove down OSDs from the map (`osd rm`); `purge` also deletes each
    /// one's `osd.N` entity (`osd purge`).
    OsdRemove {
        /// Ids.
        ids: Vec<OsdId>,
        /// Delete the entities too.
        purge: bool,
    },
    /// [`StateCmd::OsdBoot`] of an OSD with `osd_crush_initial_weight`
    /// set: `weight` is its weight if the map has no entry for it yet.
    OsdBootWeighted {
        /// Id.
        id: OsdId,
        /// `ip:port`.
        addr: String,
        /// Host.
        host: String,
        /// Units of `WEIGHT_ONE`, at most `MAX_OSD_WEIGHT`.
        weight: u32,
    },
    /// A down OSD's data is gone for good (`osd lost`): it leaves every
    /// PG's recorded acting set, so peering stops waiting for it.
    OsdLost {
        /// Id.
        id: OsdId,
    },
}

/// A refusal, with errno and message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmdError {
    /// Positive errno.
    pub errno: i32,
    /// Message.
    pub message: String,
}

fn err(e: Errno, message: impl Into<String>) -> CmdError {
    CmdError {
        errno: e.code(),
        message: message.into(),
    }
}

/// What applying an entry produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// Nothing to report (blank/membership entries).
    None,
    /// A command reply.
    Reply(MonReply),
    /// An epoch (boot, pg activation).
    Epoch(Epoch),
    /// First of a reserved global id range.
    GlobalIds(u64),
}

/// The result of one entry, as the raft state machine returns it.
pub type CmdResult = Result<Applied, CmdError>;

/// Validate an entity name (`mon.` is the monitors' shared entity).
pub fn check_entity(name: &str) -> Result<(), CmdError> {
    if name == "mon." {
        return Ok(());
    }
    EntityName::parse(name)
        .map(|_| ())
        .map_err(|e| err(Errno::EINVAL, e.to_string()))
}

fn check_pool_name(name: &str) -> Result<(), CmdError> {
    if name.is_empty() || name.len() > MAX_POOL_NAME {
        return Err(err(
            Errno::EINVAL,
            format!("invalid pool name '{name}': 1 to {MAX_POOL_NAME} bytes"),
        ));
    }
    if name.chars().any(|c| c.is_control() || c == '/' || c == '@') {
        return Err(err(
            Errno::EINVAL,
            format!("invalid pool name '{name}': no '/', '@' or control characters"),
        ));
    }
    Ok(())
}

impl MonState {
    /// An empty, uninitialized state.
    pub fn new() -> MonState {
        MonState {
            initialized: false,
            map: ClusterMap::new(""),
            auth: BTreeMap::new(),
            service_key: [0u8; 32],
            next_global_id: 1,
            osd_down_since: BTreeMap::new(),
            auto_out: BTreeSet::new(),
            config: ConfigDb::new(),
            scrub_errors: BTreeMap::new(),
            scrub_stamps: BTreeMap::new(),
            osd_flags: BTreeSet::new(),
            nearfull_milli: NEARFULL_MILLI,
            full_milli: FULL_MILLI,
            pool_quotas: BTreeMap::new(),
            pool_apps: BTreeMap::new(),
        }
    }

    /// The auth entry of an entity for display.
    pub fn auth_entry(&self, name: &str) -> Option<AuthEntry> {
        self.auth.get(name).map(|r| AuthEntry {
            entity: name.to_string(),
            key: r.key.clone(),
            caps: r.caps.0.clone(),
        })
    }

    fn pool_mut_by_name(&mut self, name: &str) -> Result<&mut PoolDef, CmdError> {
        self.map
            .pools
            .values_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| err(Errno::ENOENT, format!("pool '{name}' does not exist")))
    }

    fn bump(&mut self) -> Epoch {
        self.map.epoch += 1;
        self.map.epoch
    }

    /// Apply one entry. Errors leave the state unchanged.
    pub fn apply(&mut self, cmd: &StateCmd) -> CmdResult {
        if !self.initialized && !matches!(cmd, StateCmd::Bootstrap { .. }) {
            return Err(err(
                Errno::EAGAIN,
                "monitor cluster is not bootstrapped yet",
            ));
        }
        match cmd {
            StateCmd::Bootstrap {
                fsid,
                mons,
                entities,
                service_key,
            } => {
                if self.initialized {
                    return Ok(Applied::None);
                }
                self.initialized = true;
                self.map = ClusterMap::new(fsid.clone());
                self.map.mons = mons.clone();
                self.map.epoch = 1;
                self.service_key = *service_key;
                for (name, key, caps) in entities {
                    self.auth.insert(
                        name.clone(),
                        AuthRecord {
                            key: key.clone(),
                            caps: caps.clone(),
                        },
                    );
                }
                Ok(Applied::Epoch(self.map.epoch))
            }
            StateCmd::AllocGlobalIds { count } => {
                let first = self.next_global_id;
                self.next_global_id = first.saturating_add(*count);
                Ok(Applied::GlobalIds(first))
            }
            StateCmd::PoolCreate(p) => self.pool_create(p),
            StateCmd::PoolDelete { name } => {
                let id =
                    self.map.pool_by_name(name).map(|p| p.id).ok_or_else(|| {
                        err(Errno::ENOENT, format!("pool '{name}' does not exist"))
                    })?;
                self.map.pools.remove(&id);
                self.map.pg_history.retain(|pg, _| pg.pool != id);
                self.scrub_errors.retain(|pg, _| pg.pool != id);
                self.scrub_stamps.retain(|pg, _| pg.pool != id);
                self.pool_quotas.remove(&id);
                self.pool_apps.remove(&id);
                Ok(Applied::Reply(MonReply::Ok { epoch: self.bump() }))
            }
            StateCmd::PoolSet { name, var, val } => self.pool_set(name, var, val),
            StateCmd::PoolApplication { pool, op } => self.pool_application(pool, op),
            StateCmd::SnapCreate { pool } => {
                let p = self
                    .map
                    .pools
                    .get_mut(pool)
                    .ok_or_else(|| err(Errno::ENOENT, format!("pool {pool} does not exist")))?;
                p.snap_seq += 1;
                let snap = p.snap_seq;
                Ok(Applied::Reply(MonReply::Snap {
                    snap,
                    epoch: self.bump(),
                }))
            }
            StateCmd::SnapRemove { pool, snap } => {
                let p = self
                    .map
                    .pools
                    .get_mut(pool)
                    .ok_or_else(|| err(Errno::ENOENT, format!("pool {pool} does not exist")))?;
                if *snap == 0 || *snap > p.snap_seq {
                    return Err(err(
                        Errno::ENOENT,
                        format!("snapshot {snap} does not exist in pool {pool}"),
                    ));
                }
                match p.removed_snaps.binary_search(snap) {
                    // Already removed: idempotent, as a retried request must be.
                    Ok(_) => Ok(Applied::Reply(MonReply::Ok {
                        epoch: self.map.epoch,
                    })),
                    Err(pos) => {
                        p.removed_snaps.insert(pos, *snap);
                        Ok(Applied::Reply(MonReply::Ok { epoch: self.bump() }))
                    }
                }
            }
            StateCmd::OsdBoot { id, addr, host } => Ok(self.osd_boot(*id, addr, host, WEIGHT_ONE)),
            StateCmd::OsdBootWeighted {
                id,
                addr,
                host,
                weight,
            } => {
                check_weight(*id, *weight)?;
                Ok(self.osd_boot(*id, addr, host, *weight))
            }
            StateCmd::OsdDown { ids, now_unix } => {
                for id in ids {
                    if !self.map.osds.contains_key(id) {
                        return Err(err(Errno::ENOENT, format!("osd.{id} does not exist")));
                    }
                }
                let epoch = self.map.epoch + 1;
                let mut changed = false;
                for id in ids {
                    if let Some(o) = self.map.osds.get_mut(id) {
                        if o.up {
                            o.up = false;
                            o.down_at = epoch;
                            self.osd_down_since.insert(*id, *now_unix);
                            changed = true;
                        }
                    }
                }
                let epoch = if changed { self.bump() } else { self.map.epoch };
                Ok(Applied::Reply(MonReply::Ok { epoch }))
            }
            StateCmd::OsdOut { ids, auto } => {
                for id in ids {
                    if !self.map.osds.contains_key(id) {
                        return Err(err(Errno::ENOENT, format!("osd.{id} does not exist")));
                    }
                }
                let mut changed = false;
                for id in ids {
                    if let Some(o) = self.map.osds.get_mut(id) {
                        if o.in_cluster {
                            o.in_cluster = false;
                            changed = true;
                            if *auto {
                                self.auto_out.insert(*id);
                            }
                        }
                    }
                }
                let epoch = if changed { self.bump() } else { self.map.epoch };
                Ok(Applied::Reply(MonReply::Ok { epoch }))
            }
            StateCmd::OsdIn { id } => {
                let o = self
                    .map
                    .osds
                    .get_mut(id)
                    .ok_or_else(|| err(Errno::ENOENT, format!("osd.{id} does not exist")))?;
                self.auto_out.remove(id);
                if o.in_cluster {
                    return Ok(Applied::Reply(MonReply::Ok {
                        epoch: self.map.epoch,
                    }));
                }
                o.in_cluster = true;
                Ok(Applied::Reply(MonReply::Ok { epoch: self.bump() }))
            }
            StateCmd::BlocklistAdd {
                addr,
                until_unix,
                now_unix,
            } => {
                self.map.blocklist.retain(|_, until| *until > *now_unix);
                self.map.blocklist.insert(addr.clone(), *until_unix);
                Ok(Applied::Reply(MonReply::Ok { epoch: self.bump() }))
            }
            StateCmd::BlocklistRm { addr, now_unix } => {
                let before = self.map.blocklist.len();
                self.map.blocklist.retain(|_, until| *until > *now_unix);
                let removed = self.map.blocklist.remove(addr).is_some();
                let epoch = if removed || before != self.map.blocklist.len() {
                    self.bump()
                } else {
                    self.map.epoch
                };
                Ok(Applied::Reply(MonReply::Ok { epoch }))
            }
            StateCmd::PgActivated { items } => {
                let mut changed = false;
                for (pg, epoch, acting) in items {
                    if !self.map.pools.contains_key(&pg.pool) {
                        continue;
                    }
                    let newer = self.map.pg_history.get(pg).is_none_or(|h| {
                        h.epoch < *epoch || (h.epoch == *epoch && h.acting != *acting)
                    });
                    if newer {
                        self.map.pg_history.insert(
                            *pg,
                            PgHistory {
                                epoch: *epoch,
                                acting: acting.clone(),
                            },
                        );
                        changed = true;
                    }
                }
                let epoch = if changed { self.bump() } else { self.map.epoch };
                Ok(Applied::Epoch(epoch))
            }
            StateCmd::AuthGetOrCreate {
                entity,
                caps,
                caps_given,
                new_key,
            } => {
                check_entity(entity)?;
                if let Some(r) = self.auth.get(entity) {
                    if *caps_given && r.caps != *caps {
                        return Err(err(
                            Errno::EINVAL,
                            format!("key for {entity} exists but its caps do not match"),
                        ));
                    }
                } else {
                    self.auth.insert(
                        entity.clone(),
                        AuthRecord {
                            key: new_key.clone(),
                            caps: caps.clone(),
                        },
                    );
                }
                Ok(Applied::Reply(MonReply::Auth(
                    self.auth_entry(entity).into_iter().collect(),
                )))
            }
            StateCmd::AuthAdd { entity, key, caps } => {
                check_entity(entity)?;
                if let Some(r) = self.auth.get(entity) {
                    if r.key != *key {
                        return Err(err(
                            Errno::EINVAL,
                            format!("entity {entity} exists but key does not match"),
                        ));
                    }
                }
                self.auth.insert(
                    entity.clone(),
                    AuthRecord {
                        key: key.clone(),
                        caps: caps.clone(),
                    },
                );
                Ok(Applied::Reply(MonReply::Auth(
                    self.auth_entry(entity).into_iter().collect(),
                )))
            }
            StateCmd::AuthDel { entity } => {
                if entity == "mon." {
                    return Err(err(Errno::EINVAL, "the mon. entity cannot be deleted"));
                }
                if self.auth.remove(entity).is_none() {
                    return Err(err(
                        Errno::ENOENT,
                        format!("failed to find {entity} in keyring"),
                    ));
                }
                Ok(Applied::Reply(MonReply::Ok {
                    epoch: self.map.epoch,
                }))
            }
            StateCmd::AuthCaps { entity, caps } => {
                let r = self
                    .auth
                    .get_mut(entity)
                    .ok_or_else(|| err(Errno::ENOENT, format!("couldn't find entry {entity}")))?;
                r.caps = caps.clone();
                Ok(Applied::Reply(MonReply::Ok {
                    epoch: self.map.epoch,
                }))
            }
            // The config database is not part of the cluster map: no epoch.
            StateCmd::ConfigSet {
                section,
                name,
                value,
            } => {
                self.config
                    .entry(section.clone())
                    .or_default()
                    .insert(name.clone(), value.clone());
                Ok(Applied::Reply(MonReply::Ok {
                    epoch: self.map.epoch,
                }))
            }
            StateCmd::ConfigRm { section, name } => {
                if let Some(opts) = self.config.get_mut(section) {
                    opts.remove(name);
                    if opts.is_empty() {
                        self.config.remove(section);
                    }
                }
                Ok(Applied::Reply(MonReply::Ok {
                    epoch: self.map.epoch,
                }))
            }
            StateCmd::PgScrubbed {
                report: e,
                now_unix,
            } => {
                let exists = self
                    .map
                    .pools
                    .get(&e.pg.pool)
                    .is_some_and(|p| e.pg.seed < p.pg_num);
                if !exists {
                    return Err(err(Errno::ENOENT, format!("pg {} does not exist", e.pg)));
                }
                if e.errors == 0 {
                    self.scrub_errors.remove(&e.pg);
                } else {
                    self.scrub_errors.insert(e.pg, *e);
                }
                self.scrub_stamps.insert(e.pg, *now_unix);
                Ok(Applied::None)
            }
            StateCmd::SetFullRatio { full, milli } => {
                let (nearfull, fullr) = if *full {
                    (self.nearfull_milli, *milli)
                } else {
                    (*milli, self.full_milli)
                };
                if !(1..=1000).contains(milli) {
                    return Err(err(Errno::EINVAL, "a ratio must be above 0 and at most 1"));
                }
                if nearfull > fullr {
                    return Err(err(
                        Errno::EINVAL,
                        format!(
                            "the nearfull ratio ({}) must not exceed the full ratio ({})",
                            f64::from(nearfull) / 1000.0,
                            f64::from(fullr) / 1000.0
                        ),
                    ));
                }
                self.nearfull_milli = nearfull;
                self.full_milli = fullr;
                Ok(Applied::Reply(MonReply::Ok {
                    epoch: self.map.epoch,
                }))
            }
            StateCmd::PoolRename { from, to } => {
                let exists = |n: &str| self.map.pool_by_name(n).is_some();
                match (exists(from), exists(to)) {
                    // Done before (Ceph answers success here too).
                    (false, true) => {
                        return Ok(Applied::Reply(MonReply::Renamed {
                            renamed: false,
                            epoch: self.map.epoch,
                        }))
                    }
                    (false, false) => {
                        return Err(err(Errno::ENOENT, format!("unrecognized pool '{from}'")))
                    }
                    (true, true) => {
                        return Err(err(Errno::EEXIST, format!("pool '{to}' already exists")))
                    }
                    (true, false) => {}
                }
                check_pool_name(to)?;
                self.pool_mut_by_name(from)?.name = to.clone();
                Ok(Applied::Reply(MonReply::Renamed {
                    renamed: true,
                    epoch: self.bump(),
                }))
            }
            StateCmd::PoolQuota { name, field, value } => {
                let id = self
                    .map
                    .pool_by_name(name)
                    .map(|p| p.id)
                    .ok_or_else(|| err(Errno::ENOENT, format!("unrecognized pool '{name}'")))?;
                let mut q = self.pool_quotas.get(&id).copied().unwrap_or_default();
                match field.as_str() {
                    "max_objects" => q.max_objects = *value,
                    "max_bytes" => q.max_bytes = *value,
                    other => {
                        return Err(err(
                            Errno::EINVAL,
                            format!(
                                "unrecognized quota field '{other}' (max_objects or max_bytes)"
                            ),
                        ))
                    }
                }
                if q == PoolQuota::default() {
                    self.pool_quotas.remove(&id);
                } else {
                    self.pool_quotas.insert(id, q);
                }
                Ok(Applied::Reply(MonReply::Ok {
                    epoch: self.map.epoch,
                }))
            }
            StateCmd::OsdWeight { id, weight } => {
                check_weight(*id, *weight)?;
                let o = self.map.osds.get_mut(id).ok_or_else(|| {
                    err(
                        Errno::ENOENT,
                        format!("device 'osd.{id}' does not appear in the crush map"),
                    )
                })?;
                if o.weight == *weight {
                    return Ok(Applied::Reply(MonReply::Ok {
                        epoch: self.map.epoch,
                    }));
                }
                o.weight = *weight;
                Ok(Applied::Reply(MonReply::Ok { epoch: self.bump() }))
            }
            StateCmd::OsdRemove { ids, purge } => {
                // All or none: check every id before changing anything.
                for id in ids {
                    match self.map.osds.get(id) {
                        // Already gone: a retried request must succeed.
                        None => {}
                        Some(o) if o.up => {
                            return Err(err(
                                Errno::EBUSY,
                                format!("osd.{id} is still up; it must be down before removal"),
                            ))
                        }
                        Some(_) => {}
                    }
                }
                // A PG whose last acting set holds only these OSDs would
                // wait for them forever once they are gone.
                let last_copy = self.map.pg_history.iter().find(|(_, h)| {
                    h.acting.iter().all(|o| ids.contains(o))
                        && h.acting.iter().any(|o| self.map.osds.contains_key(o))
                });
                if let Some((pg, h)) = last_copy {
                    return Err(err(
                        Errno::EBUSY,
                        format!(
                            "pg {pg} was last active on {:?} only: removing them would leave it waiting for them forever; if their data is gone, `ceph osd lost` them first",
                            h.acting
                        ),
                    ));
                }
                let mut changed = false;
                for id in ids {
                    if self.map.osds.remove(id).is_some() {
                        changed = true;
                    }
                    self.osd_down_since.remove(id);
                    self.auto_out.remove(id);
                    if *purge {
                        self.auth.remove(&format!("osd.{id}"));
                    }
                }
                let epoch = if changed { self.bump() } else { self.map.epoch };
                Ok(Applied::Reply(MonReply::Ok { epoch }))
            }
            StateCmd::OsdLost { id } => {
                match self.map.osds.get(id) {
                    None => {
                        return Err(err(Errno::ENOENT, format!("osd.{id} does not exist")));
                    }
                    Some(o) if o.up => {
                        return Err(err(
                            Errno::EBUSY,
                            format!("osd.{id} is not down; it must be down to be marked lost"),
                        ));
                    }
                    Some(_) => {}
                }
                // A PG left with no recorded members peers from its up set
                // as a new one does: its newest surviving copies win.
                self.map.pg_history.retain(|_, h| {
                    h.acting.retain(|o| o != id);
                    !h.acting.is_empty()
                });
                Ok(Applied::Reply(MonReply::Ok { epoch: self.bump() }))
            }
            StateCmd::OsdFlag { flag, set } => {
                if !OSD_FLAGS.contains(&flag.as_str()) {
                    return Err(err(
                        Errno::EINVAL,
                        format!(
                            "flag '{flag}' is not supported (supported: {})",
                            OSD_FLAGS.join(", ")
                        ),
                    ));
                }
                if *set {
                    self.osd_flags.insert(flag.clone());
                } else {
                    self.osd_flags.remove(flag);
                }
                Ok(Applied::Reply(MonReply::Ok {
                    epoch: self.map.epoch,
                }))
            }
        }
    }

    /// An OSD boots at `addr` on `host`; `weight` if it is new to the map.
    fn osd_boot(&mut self, id: OsdId, addr: &str, host: &str, weight: u32) -> Applied {
        let epoch = self.map.epoch + 1;
        // `noin`: nothing booting is marked in (an OSD the
        // detector marked out comes in at a boot after the unset).
        let noin = self.osd_flags.contains("noin");
        let auto_in = !noin && self.auto_out.remove(&id);
        let o = self.map.osds.entry(id).or_insert_with(|| OsdInfo {
            id,
            addr: String::new(),
            host: String::new(),
            up: false,
            in_cluster: !noin,
            weight,
            up_from: 0,
            down_at: 0,
        });
        o.addr = addr.to_string();
        o.host = host.to_string();
        o.up = true;
        o.up_from = epoch;
        if auto_in {
            o.in_cluster = true;
        }
        self.osd_down_since.remove(&id);
        Applied::Epoch(self.bump())
    }

    /// The state in its stored form, from any of its layouts.
    pub fn decode(bytes: &[u8]) -> Result<MonState, postcard::Error> {
        decode_compat(bytes)
    }

    fn pool_create(&mut self, p: &PoolParams) -> CmdResult {
        check_pool_name(&p.name)?;
        if self.map.pool_by_name(&p.name).is_some() {
            return Err(err(
                Errno::EEXIST,
                format!("pool '{}' already exists", p.name),
            ));
        }
        check_size(p.size, p.min_size)?;
        check_pg_num(p.pg_num)?;
        let failure_domain = p.failure_domain.unwrap_or(if self.map.single_host() {
            FailureDomain::Osd
        } else {
            FailureDomain::Host
        });
        let id = self.map.next_pool_id;
        self.map.next_pool_id += 1;
        self.map.pools.insert(
            id,
            PoolDef {
                id,
                name: p.name.clone(),
                size: p.size,
                min_size: p.min_size,
                pg_num: p.pg_num,
                failure_domain,
                snap_seq: 0,
                removed_snaps: Vec::new(),
                application: p.application.clone(),
            },
        );
        if let Some(app) = &p.application {
            self.pool_apps
                .insert(id, BTreeMap::from([(app.clone(), BTreeMap::new())]));
        }
        Ok(Applied::Reply(MonReply::PoolCreated {
            pool: id,
            epoch: self.bump(),
        }))
    }

    fn pool_set(&mut self, name: &str, var: &str, val: &str) -> CmdResult {
        let num = || -> Result<u32, CmdError> {
            val.trim().parse::<u32>().map_err(|_| {
                err(
                    Errno::EINVAL,
                    format!("value '{val}' for {var} is not a non-negative integer"),
                )
            })
        };
        let pool = self.pool_mut_by_name(name)?;
        match var {
            "size" => {
                let size = num()?;
                let min_size = pool.min_size.min(size);
                check_size(size, min_size)?;
                pool.size = size;
                pool.min_size = min_size;
            }
            "min_size" => {
                let min_size = num()?;
                check_size(pool.size, min_size)?;
                pool.min_size = min_size;
            }
            "pg_num" => {
                let n = num()?;
                check_pg_num(n)?;
                pool.pg_num = n;
            }
            "application" => {
                // The one-tag form older clients send: the pool's only
                // application afterwards (or none).
                let v = val.trim();
                let id = pool.id;
                if v.is_empty() {
                    pool.application = None;
                    self.pool_apps.remove(&id);
                } else {
                    check_app_word("application name", v)?;
                    pool.application = Some(v.to_string());
                    self.pool_apps
                        .insert(id, BTreeMap::from([(v.to_string(), BTreeMap::new())]));
                }
            }
            "failure_domain" | "crush_failure_domain" => {
                pool.failure_domain = match val.trim() {
                    "host" => FailureDomain::Host,
                    "osd" => FailureDomain::Osd,
                    other => {
                        return Err(err(
                            Errno::EINVAL,
                            format!("failure domain '{other}': expected host or osd"),
                        ));
                    }
                };
            }
            other => {
                return Err(err(
                    Errno::EINVAL,
                    format!("unrecognized variable '{other}' (supported: size, min_size, pg_num, application, failure_domain)"),
                ));
            }
        }
        Ok(Applied::Reply(MonReply::Ok { epoch: self.bump() }))
    }
}

impl MonState {
    /// `osd pool application enable|disable|set|rm`, with Ceph's rules,
    /// limits and texts; the no-ops (enabling an enabled application,
    /// disabling one that is not, removing an absent key) succeed and
    /// leave the epoch alone.
    fn pool_application(&mut self, pool: &str, op: &AppOp) -> CmdResult {
        let id = self
            .map
            .pool_by_name(pool)
            .map(|p| p.id)
            .ok_or_else(|| err(Errno::ENOENT, format!("unrecognized pool '{pool}'")))?;
        let mut apps = self.pool_apps.get(&id).cloned().unwrap_or_default();
        let not_enabled =
            |app: &str| format!("application '{app}' is not enabled on pool '{pool}'");
        let message = match op {
            AppOp::Enable { app, force } => {
                check_app_word("application name", app)?;
                if apps.contains_key(app) {
                    return Ok(self.app_reply(format!(
                        "application '{app}' already enabled on pool '{pool}'"
                    )));
                }
                if !apps.is_empty() && !force {
                    return Err(err(Errno::EPERM, format!("Are you SURE? Pool '{pool}' already has an enabled application; pass --yes-i-really-mean-it to proceed anyway")));
                }
                if apps.len() >= MAX_POOL_APPLICATIONS {
                    return Err(err(
                        Errno::EINVAL,
                        format!("too many enabled applications on pool '{pool}'; max {MAX_POOL_APPLICATIONS}"),
                    ));
                }
                apps.insert(app.clone(), BTreeMap::new());
                format!("enabled application '{app}' on pool '{pool}'")
            }
            AppOp::Disable { app, force } => {
                if !force {
                    return Err(err(Errno::EPERM, "Are you SURE? Disabling an application within a pool might result in loss of application functionality; pass --yes-i-really-mean-it to proceed anyway"));
                }
                if apps.remove(app).is_none() {
                    return Ok(self.app_reply(not_enabled(app)));
                }
                format!("disable application '{app}' on pool '{pool}'")
            }
            AppOp::Set { app, key, value } => {
                let keys = apps
                    .get_mut(app)
                    .ok_or_else(|| err(Errno::ENOENT, not_enabled(app)))?;
                check_app_word("key", key)?;
                if value == "all" {
                    return Err(err(Errno::EINVAL, "value cannot be 'all'"));
                }
                if value.len() > MAX_POOL_APPLICATION_LENGTH {
                    return Err(err(
                        Errno::EINVAL,
                        format!(
                            "value '{value}' too long; max length {MAX_POOL_APPLICATION_LENGTH}"
                        ),
                    ));
                }
                if !keys.contains_key(key) && keys.len() >= MAX_POOL_APPLICATION_KEYS {
                    return Err(err(
                        Errno::EINVAL,
                        format!("too many keys set for application '{app}' on pool '{pool}'; max {MAX_POOL_APPLICATION_KEYS}"),
                    ));
                }
                keys.insert(key.clone(), value.clone());
                format!("set application '{app}' key '{key}' to '{value}' on pool '{pool}'")
            }
            AppOp::Rm { app, key } => {
                let keys = apps
                    .get_mut(app)
                    .ok_or_else(|| err(Errno::ENOENT, not_enabled(app)))?;
                if keys.remove(key).is_none() {
                    return Ok(self.app_reply(format!(
                        "application '{app}' on pool '{pool}' does not have key '{key}'"
                    )));
                }
                format!("removed application '{app}' key '{key}' on pool '{pool}'")
            }
        };
        // The map's tag stays while its application does; else the first left.
        let tag = match self.map.pools.get(&id).and_then(|p| p.application.clone()) {
            Some(t) if apps.contains_key(&t) => Some(t),
            _ => apps.keys().next().cloned(),
        };
        if let Some(p) = self.map.pools.get_mut(&id) {
            p.application = tag;
        }
        if apps.is_empty() {
            self.pool_apps.remove(&id);
        } else {
            self.pool_apps.insert(id, apps);
        }
        Ok(Applied::Reply(MonReply::Applied {
            message,
            epoch: self.bump(),
        }))
    }

    /// A successful no-op's reply (the epoch unchanged).
    fn app_reply(&self, message: String) -> Applied {
        Applied::Reply(MonReply::Applied {
            message,
            epoch: self.map.epoch,
        })
    }
}

/// An application name or key: non-empty, not `all`, at most
/// [`MAX_POOL_APPLICATION_LENGTH`] bytes, no whitespace or control
/// characters.
fn check_app_word(what: &str, w: &str) -> Result<(), CmdError> {
    if w.is_empty() {
        return Err(err(Errno::EINVAL, format!("{what} must be provided")));
    }
    if w == "all" {
        return Err(err(Errno::EINVAL, format!("{what} cannot be 'all'")));
    }
    if w.len() > MAX_POOL_APPLICATION_LENGTH {
        return Err(err(
            Errno::EINVAL,
            format!("{what} '{w}' too long; max length {MAX_POOL_APPLICATION_LENGTH}"),
        ));
    }
    if w.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(Errno::EINVAL, format!("invalid {what} '{w}'")));
    }
    Ok(())
}

impl Default for MonState {
    fn default() -> Self {
        MonState::new()
    }
}

fn check_size(size: u32, min_size: u32) -> Result<(), CmdError> {
    if size == 0 || size > MAX_POOL_SIZE {
        return Err(err(
            Errno::EINVAL,
            format!("pool size must be between 1 and {MAX_POOL_SIZE}"),
        ));
    }
    if min_size == 0 || min_size > size {
        return Err(err(
            Errno::EINVAL,
            format!("pool min_size must be between 1 and size ({size})"),
        ));
    }
    Ok(())
}

fn check_weight(id: OsdId, weight: u32) -> Result<(), CmdError> {
    if weight > MAX_OSD_WEIGHT {
        return Err(err(
            Errno::EINVAL,
            format!(
                "weight {} of osd.{id} out of range 0..={}",
                f64::from(weight) / f64::from(WEIGHT_ONE),
                MAX_OSD_WEIGHT / WEIGHT_ONE
            ),
        ));
    }
    Ok(())
}

fn check_pg_num(n: u32) -> Result<(), CmdError> {
    if n == 0 || n > MAX_PG_NUM {
        return Err(err(
            Errno::EINVAL,
            format!("pg_num {n} out of range 1..={MAX_PG_NUM}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot() -> MonState {
        let mut s = MonState::new();
        s.apply(&StateCmd::Bootstrap {
            fsid: "f".into(),
            mons: vec![],
            entities: vec![(
                "client.admin".into(),
                Secret::generate(0).to_base64(),
                EntityCaps::admin(),
            )],
            service_key: [1; 32],
        })
        .expect("bootstrap");
        s
    }

    fn pool(name: &str) -> StateCmd {
        StateCmd::PoolCreate(PoolParams {
            name: name.into(),
            pg_num: 8,
            size: 3,
            min_size: 2,
            application: None,
            failure_domain: None,
        })
    }

    #[test]
    fn uninitialized_refuses() {
        let mut s = MonState::new();
        assert!(s.apply(&pool("rbd")).is_err());
    }

    #[test]
    fn pools_snaps_epochs() {
        let mut s = boot();
        let e0 = s.map.epoch;
        assert!(matches!(
            s.apply(&pool("rbd")),
            Ok(Applied::Reply(MonReply::PoolCreated { pool: 1, .. }))
        ));
        assert_eq!(
            s.apply(&pool("rbd")).unwrap_err().errno,
            Errno::EEXIST.code()
        );
        assert_eq!(s.map.epoch, e0 + 1);
        let mut last = 0;
        for _ in 0..5 {
            match s.apply(&StateCmd::SnapCreate { pool: 1 }) {
                Ok(Applied::Reply(MonReply::Snap { snap, .. })) => {
                    assert!(snap > last);
                    last = snap;
                }
                other => panic!("{other:?}"),
            }
        }
        s.apply(&StateCmd::SnapRemove { pool: 1, snap: 3 })
            .expect("rm");
        s.apply(&StateCmd::SnapRemove { pool: 1, snap: 2 })
            .expect("rm");
        s.apply(&StateCmd::SnapRemove { pool: 1, snap: 3 })
            .expect("idempotent");
        assert_eq!(s.map.pools[&1].removed_snaps, vec![2, 3]);
        assert!(s.apply(&StateCmd::SnapRemove { pool: 1, snap: 9 }).is_err());
        assert!(s.apply(&StateCmd::SnapCreate { pool: 7 }).is_err());
        s.apply(&StateCmd::PoolSet {
            name: "rbd".into(),
            var: "size".into(),
            val: "1".into(),
        })
        .expect("size");
        assert_eq!((s.map.pools[&1].size, s.map.pools[&1].min_size), (1, 1));
        assert!(s
            .apply(&StateCmd::PoolSet {
                name: "rbd".into(),
                var: "min_size".into(),
                val: "2".into()
            })
            .is_err());
        let before = s.clone();
        assert!(s
            .apply(&StateCmd::PoolSet {
                name: "rbd".into(),
                var: "bogus".into(),
                val: "2".into()
            })
            .is_err());
        assert_eq!(before, s);
        s.apply(&StateCmd::PoolDelete { name: "rbd".into() })
            .expect("delete");
        assert!(matches!(
            s.apply(&pool("rbd")),
            Ok(Applied::Reply(MonReply::PoolCreated { pool: 2, .. }))
        ));
    }

    #[test]
    fn blocklist_add_rm_expire() {
        let mut s = boot();
        let e0 = s.map.epoch;
        let add = |addr: &str, until: u64, now: u64| StateCmd::BlocklistAdd {
            addr: addr.into(),
            until_unix: until,
            now_unix: now,
        };
        s.apply(&add("127.0.0.1:0/7", 100, 10)).expect("add");
        assert_eq!(s.map.epoch, e0 + 1);
        assert_eq!(s.map.blocklist.get("127.0.0.1:0/7"), Some(&100));
        // An expired entry is dropped when the next one is added.
        s.apply(&add("127.0.0.1:0/8", 300, 150)).expect("add");
        assert!(!s.map.blocklist.contains_key("127.0.0.1:0/7"));
        let rm = |addr: &str| StateCmd::BlocklistRm {
            addr: addr.into(),
            now_unix: 160,
        };
        let e = s.map.epoch;
        s.apply(&rm("127.0.0.1:0/9")).expect("rm absent");
        assert_eq!(s.map.epoch, e, "nothing changed");
        s.apply(&rm("127.0.0.1:0/8")).expect("rm");
        assert!(s.map.blocklist.is_empty());
        assert_eq!(s.map.epoch, e + 1);
    }

    #[test]
    fn config_db_and_old_layout() {
        let mut s = boot();
        let set = |sec: &str, v: &str| StateCmd::ConfigSet {
            section: sec.into(),
            name: "rbd_cache".into(),
            value: v.into(),
        };
        s.apply(&set("client", "false")).expect("set");
        s.apply(&set("client", "true")).expect("overwrite");
        s.apply(&set("global", "false")).expect("set");
        assert_eq!(s.config["client"]["rbd_cache"], "true");
        let rm = |sec: &str| StateCmd::ConfigRm {
            section: sec.into(),
            name: "rbd_cache".into(),
        };
        s.apply(&rm("client")).expect("rm");
        s.apply(&rm("client")).expect("rm again is fine");
        assert!(!s.config.contains_key("client"));
        let b = postcard::to_stdvec(&s).expect("enc");
        assert_eq!(MonState::decode(&b).expect("dec"), s);

        // A state written before the config database existed still loads.
        #[derive(Serialize)]
        struct Old<'a> {
            initialized: bool,
            map: &'a ClusterMap,
            auth: &'a BTreeMap<String, AuthRecord>,
            service_key: [u8; 32],
            next_global_id: u64,
            osd_down_since: &'a BTreeMap<OsdId, u64>,
            auto_out: &'a BTreeSet<OsdId>,
        }
        let old = postcard::to_stdvec(&Old {
            initialized: true,
            map: &s.map,
            auth: &s.auth,
            service_key: s.service_key,
            next_global_id: s.next_global_id,
            osd_down_since: &s.osd_down_since,
            auto_out: &s.auto_out,
        })
        .expect("enc");
        let back = MonState::decode(&old).expect("old layout");
        assert_eq!(back.auth, s.auth);
        assert!(back.config.is_empty());
    }

    #[test]
    fn scrub_errors_are_kept_per_pg_and_the_v2_layout_loads() {
        let mut s = boot();
        s.apply(&pool("rbd")).expect("pool");
        let id = s.map.pool_by_name("rbd").expect("rbd").id;
        let e = |seed, errors| StateCmd::PgScrubbed {
            report: PgScrubErrors {
                pg: PgId { pool: id, seed },
                errors,
                objects: 1,
            },
            now_unix: 1000 + u64::from(seed),
        };
        s.apply(&e(3, 2)).expect("errors");
        s.apply(&e(5, 1)).expect("errors");
        assert_eq!(s.scrub_errors.len(), 2);
        assert_eq!(s.scrub_errors[&PgId { pool: id, seed: 3 }].errors, 2);
        // A clean scrub clears its PG; unknown PGs are refused.
        s.apply(&e(5, 0)).expect("clean");
        assert_eq!(s.scrub_errors.len(), 1);
        // Every scrub, clean or not, stamps its PG.
        assert_eq!(
            s.scrub_stamps
                .iter()
                .map(|(pg, t)| (pg.seed, *t))
                .collect::<Vec<_>>(),
            [(3, 1003), (5, 1005)]
        );
        assert_eq!(
            s.apply(&e(8, 1)).expect_err("seed past pg_num").errno,
            Errno::ENOENT.code()
        );
        let ghost = StateCmd::PgScrubbed {
            report: PgScrubErrors {
                pg: PgId { pool: 99, seed: 0 },
                errors: 1,
                objects: 1,
            },
            now_unix: 1,
        };
        assert_eq!(
            s.apply(&ghost).expect_err("no pool").errno,
            Errno::ENOENT.code()
        );
        let b = postcard::to_stdvec(&s).expect("enc");
        assert_eq!(MonState::decode(&b).expect("dec"), s);

        // A state written before scrub errors were kept (config database
        // included) still loads, with none.
        s.apply(&StateCmd::ConfigSet {
            section: "global".into(),
            name: "rbd_cache".into(),
            value: "false".into(),
        })
        .expect("config");
        #[derive(Serialize)]
        struct V2<'a> {
            initialized: bool,
            map: &'a ClusterMap,
            auth: &'a BTreeMap<String, AuthRecord>,
            service_key: [u8; 32],
            next_global_id: u64,
            osd_down_since: &'a BTreeMap<OsdId, u64>,
            auto_out: &'a BTreeSet<OsdId>,
            config: &'a ConfigDb,
        }
        let v2 = postcard::to_stdvec(&V2 {
            initialized: true,
            map: &s.map,
            auth: &s.auth,
            service_key: s.service_key,
            next_global_id: s.next_global_id,
            osd_down_since: &s.osd_down_since,
            auto_out: &s.auto_out,
            config: &s.config,
        })
        .expect("enc");
        let back = MonState::decode(&v2).expect("v2 layout");
        assert_eq!(back.config, s.config);
        assert_eq!(back.map, s.map);
        assert!(back.scrub_errors.is_empty());
        assert_eq!(
            (back.nearfull_milli, back.full_milli),
            (NEARFULL_MILLI, FULL_MILLI),
            "an older state gets Ceph's default ratios"
        );
        // A state written before pool quotas (with scrub errors, flags and
        // ratios) still loads, with no quotas.
        s.apply(&StateCmd::OsdFlag {
            flag: "noout".into(),
            set: true,
        })
        .expect("flag");
        #[derive(Serialize)]
        struct V3<'a> {
            initialized: bool,
            map: &'a ClusterMap,
            auth: &'a BTreeMap<String, AuthRecord>,
            service_key: [u8; 32],
            next_global_id: u64,
            osd_down_since: &'a BTreeMap<OsdId, u64>,
            auto_out: &'a BTreeSet<OsdId>,
            config: &'a ConfigDb,
            scrub_errors: &'a BTreeMap<PgId, PgScrubErrors>,
            scrub_stamps: &'a BTreeMap<PgId, u64>,
            osd_flags: &'a BTreeSet<String>,
            nearfull_milli: u32,
            full_milli: u32,
        }
        let v3 = postcard::to_stdvec(&V3 {
            initialized: true,
            map: &s.map,
            auth: &s.auth,
            service_key: s.service_key,
            next_global_id: s.next_global_id,
            osd_down_since: &s.osd_down_since,
            auto_out: &s.auto_out,
            config: &s.config,
            scrub_errors: &s.scrub_errors,
            scrub_stamps: &s.scrub_stamps,
            osd_flags: &s.osd_flags,
            nearfull_milli: 800,
            full_milli: s.full_milli,
        })
        .expect("enc");
        let back = MonState::decode(&v3).expect("v3 layout");
        assert_eq!(back.scrub_errors, s.scrub_errors);
        assert_eq!(back.osd_flags, s.osd_flags);
        assert_eq!(back.nearfull_milli, 800);
        assert!(back.pool_quotas.is_empty());
        // Quotas: set, kept across encoding, one field at a time; both at
        // 0 drop the entry; unknown pools and fields are refused.
        let quota = |field: &str, value: u64| StateCmd::PoolQuota {
            name: "rbd".into(),
            field: field.into(),
            value,
        };
        s.apply(&quota("max_objects", 10)).expect("quota");
        s.apply(&quota("max_bytes", 1 << 30)).expect("quota");
        let id = s.map.pool_by_name("rbd").expect("pool").id;
        assert_eq!(
            s.pool_quotas.get(&id),
            Some(&PoolQuota {
                max_objects: 10,
                max_bytes: 1 << 30
            })
        );
        let b = postcard::to_stdvec(&s).expect("enc");
        assert_eq!(MonState::decode(&b).expect("dec"), s);
        s.apply(&quota("max_objects", 0)).expect("quota");
        s.apply(&quota("max_bytes", 0)).expect("quota");
        assert!(s.pool_quotas.is_empty());
        assert_eq!(
            s.apply(&quota("max_files", 1)).expect_err("field").errno,
            Errno::EINVAL.code()
        );
        let e = s
            .apply(&StateCmd::PoolQuota {
                name: "nope".into(),
                field: "max_bytes".into(),
                value: 1,
            })
            .expect_err("pool");
        assert_eq!(e.errno, Errno::ENOENT.code());
        s.apply(&quota("max_objects", 5)).expect("quota");
        // Deleting the pool forgets its PGs and its quota.
        s.apply(&StateCmd::PoolDelete { name: "rbd".into() })
            .expect("delete");
        assert!(s.scrub_errors.is_empty() && s.scrub_stamps.is_empty());
        assert!(s.pool_quotas.is_empty());
    }

    #[test]
    fn pool_applications_follow_cephs_rules_and_the_v4_layout_loads() {
        let mut s = boot();
        s.apply(&StateCmd::PoolCreate(PoolParams {
            application: Some("rbd".into()),
            ..match pool("vms") {
                StateCmd::PoolCreate(p) => p,
                _ => unreachable!("pool() builds a PoolCreate"),
            }
        }))
        .expect("create");
        let id = s.map.pool_by_name("vms").expect("pool").id;
        assert_eq!(
            s.pool_apps[&id],
            BTreeMap::from([("rbd".to_string(), BTreeMap::new())])
        );
        // A state stored before `pool_apps` gets each pool's tag back.
        #[derive(Serialize)]
        struct V4<'a> {
            initialized: bool,
            map: &'a ClusterMap,
            auth: &'a BTreeMap<String, AuthRecord>,
            service_key: [u8; 32],
            next_global_id: u64,
            osd_down_since: &'a BTreeMap<OsdId, u64>,
            auto_out: &'a BTreeSet<OsdId>,
            config: &'a ConfigDb,
            scrub_errors: &'a BTreeMap<PgId, PgScrubErrors>,
            scrub_stamps: &'a BTreeMap<PgId, u64>,
            osd_flags: &'a BTreeSet<String>,
            nearfull_milli: u32,
            full_milli: u32,
            pool_quotas: &'a BTreeMap<PoolId, PoolQuota>,
        }
        let v4 = postcard::to_stdvec(&V4 {
            initialized: true,
            map: &s.map,
            auth: &s.auth,
            service_key: s.service_key,
            next_global_id: s.next_global_id,
            osd_down_since: &s.osd_down_since,
            auto_out: &s.auto_out,
            config: &s.config,
            scrub_errors: &s.scrub_errors,
            scrub_stamps: &s.scrub_stamps,
            osd_flags: &s.osd_flags,
            nearfull_milli: s.nearfull_milli,
            full_milli: s.full_milli,
            pool_quotas: &s.pool_quotas,
        })
        .expect("enc");
        assert_eq!(MonState::decode(&v4).expect("v4 layout"), s);

        let app = |op: AppOp| StateCmd::PoolApplication {
            pool: "vms".into(),
            op,
        };
        let enable = |a: &str, force| {
            app(AppOp::Enable {
                app: a.into(),
                force,
            })
        };
        let errno = |r: CmdResult| r.expect_err("refused").errno;
        let message = |r: CmdResult| match r {
            Ok(Applied::Reply(MonReply::Applied { message, .. })) => message,
            other => panic!("{other:?}"),
        };
        // Enabling an enabled one is a no-op that leaves the epoch alone.
        let e0 = s.map.epoch;
        assert_eq!(
            message(s.apply(&enable("rbd", false))),
            "application 'rbd' already enabled on pool 'vms'"
        );
        assert_eq!(s.map.epoch, e0);
        assert_eq!(errno(s.apply(&enable("rgw", false))), Errno::EPERM.code());
        s.apply(&enable("rgw", true)).expect("forced");
        assert!(s.map.epoch > e0);
        s.apply(&app(AppOp::Set {
            app: "rgw".into(),
            key: "zone".into(),
            value: "z1".into(),
        }))
        .expect("set");
        assert_eq!(s.pool_apps[&id]["rgw"]["zone"], "z1");
        // The map's tag stays on the first application while it lasts.
        assert_eq!(s.map.pools[&id].application.as_deref(), Some("rbd"));
        for a in ["a1", "a2"] {
            s.apply(&enable(a, true)).expect("third and fourth");
        }
        assert_eq!(errno(s.apply(&enable("a3", true))), Errno::EINVAL.code());
        for bad in ["", "all", "two words", &"x".repeat(129)] {
            assert_eq!(
                errno(s.apply(&enable(bad, true))),
                Errno::EINVAL.code(),
                "{bad:?}"
            );
        }
        let set = |a: &str, k: &str, v: &str| {
            app(AppOp::Set {
                app: a.into(),
                key: k.into(),
                value: v.into(),
            })
        };
        assert_eq!(
            errno(s.apply(&set("cephfs", "k", "v"))),
            Errno::ENOENT.code()
        );
        assert_eq!(
            errno(s.apply(&set("rgw", "k", &"v".repeat(129)))),
            Errno::EINVAL.code()
        );
        assert_eq!(
            errno(s.apply(&set("rgw", "k", "all"))),
            Errno::EINVAL.code()
        );
        for i in 1..64 {
            s.apply(&set("a1", &format!("k{i}"), "v"))
                .expect("keys up to 64");
        }
        s.apply(&set("a1", "k0", "v")).expect("the 64th key");
        assert_eq!(errno(s.apply(&set("a1", "k64", "v"))), Errno::EINVAL.code());
        s.apply(&set("a1", "k0", "w"))
            .expect("overwriting is no new key");
        // Disabling needs force; of one not enabled it is a no-op.
        let disable = |a: &str, force| {
            app(AppOp::Disable {
                app: a.into(),
                force,
            })
        };
        assert_eq!(errno(s.apply(&disable("a1", false))), Errno::EPERM.code());
        s.apply(&disable("a1", true)).expect("disable");
        assert_eq!(
            message(s.apply(&disable("a1", true))),
            "application 'a1' is not enabled on pool 'vms'"
        );
        let rm = |k: &str| {
            app(AppOp::Rm {
                app: "rgw".into(),
                key: k.into(),
            })
        };
        s.apply(&rm("zone")).expect("rm");
        assert_eq!(
            message(s.apply(&rm("zone"))),
            "application 'rgw' on pool 'vms' does not have key 'zone'"
        );
        // Kept across encoding.
        let b = postcard::to_stdvec(&s).expect("enc");
        assert_eq!(MonState::decode(&b).expect("dec"), s);
        // Without rbd the tag moves to what is left; without any, none.
        s.apply(&disable("rbd", true)).expect("disable rbd");
        assert_eq!(s.map.pools[&id].application.as_deref(), Some("a2"));
        for a in ["a2", "rgw"] {
            s.apply(&disable(a, true)).expect("disable");
        }
        assert_eq!(s.map.pools[&id].application, None);
        assert!(!s.pool_apps.contains_key(&id));
        // The one-tag `pool set application` form replaces them all.
        s.apply(&enable("x", false)).expect("enable");
        s.apply(&StateCmd::PoolSet {
            name: "vms".into(),
            var: "application".into(),
            val: "rbd".into(),
        })
        .expect("set");
        assert_eq!(s.pool_apps[&id].keys().collect::<Vec<_>>(), ["rbd"]);
        assert_eq!(
            errno(s.apply(&StateCmd::PoolApplication {
                pool: "nope".into(),
                op: AppOp::Enable {
                    app: "rbd".into(),
                    force: false
                },
            })),
            Errno::ENOENT.code()
        );
        s.apply(&StateCmd::PoolDelete { name: "vms".into() })
            .expect("delete");
        assert!(s.pool_apps.is_empty());
    }

    #[test]
    fn osd_weights_and_removal() {
        let mut s = boot();
        let boot = |id| StateCmd::OsdBoot {
            id,
            addr: format!("127.0.0.1:{}", 6800 + id),
            host: "h".into(),
        };
        for id in 0..3 {
            s.apply(&boot(id)).expect("boot");
            s.apply(&StateCmd::AuthAdd {
                entity: format!("osd.{id}"),
                key: Secret::generate(id.into()).to_base64(),
                caps: EntityCaps::admin(),
            })
            .expect("osd key");
        }
        let weight = |id, weight| StateCmd::OsdWeight { id, weight };
        let e0 = s.map.epoch;
        s.apply(&weight(1, 2 * WEIGHT_ONE)).expect("reweight");
        assert_eq!(s.map.osds[&1].weight, 2 * WEIGHT_ONE);
        assert_eq!(s.map.epoch, e0 + 1, "a new weight is a new map");
        s.apply(&weight(1, 2 * WEIGHT_ONE)).expect("same weight");
        assert_eq!(s.map.epoch, e0 + 1, "the same weight changes nothing");
        s.apply(&weight(1, MAX_OSD_WEIGHT)).expect("largest weight");
        let code = |r: CmdResult| r.expect_err("refused").errno;
        assert_eq!(
            code(s.apply(&weight(1, MAX_OSD_WEIGHT + 1))),
            Errno::EINVAL.code()
        );
        assert_eq!(code(s.apply(&weight(9, 0))), Errno::ENOENT.code());
        // A weight survives the OSD's restart, also one naming an initial weight.
        s.apply(&boot(1)).expect("reboot");
        assert_eq!(s.map.osds[&1].weight, MAX_OSD_WEIGHT);
        let weighted = |id, weight| StateCmd::OsdBootWeighted {
            id,
            addr: "127.0.0.1:7000".into(),
            host: "h2".into(),
            weight,
        };
        s.apply(&weighted(1, 0)).expect("reboot with a weight");
        assert_eq!(s.map.osds[&1].weight, MAX_OSD_WEIGHT);
        assert_eq!(
            code(s.apply(&weighted(5, MAX_OSD_WEIGHT + 1))),
            Errno::EINVAL.code()
        );
        assert!(!s.map.osds.contains_key(&5));
        s.apply(&weighted(5, 0)).expect("new OSD at weight 0");
        assert!(s.map.osds[&5].up && s.map.osds[&5].weight == 0);

        let remove = |ids: Vec<OsdId>, purge| StateCmd::OsdRemove { ids, purge };
        // Up OSDs stay, all of them, even beside a down one.
        s.apply(&StateCmd::OsdDown {
            ids: vec![2],
            now_unix: 5,
        })
        .expect("down");
        let e1 = s.map.epoch;
        assert_eq!(
            code(s.apply(&remove(vec![2, 0], false))),
            Errno::EBUSY.code()
        );
        assert!(s.map.osds.contains_key(&2) && s.map.epoch == e1);
        // `rm` keeps the key: the OSD may boot again (weight 1 then).
        s.apply(&remove(vec![2], false)).expect("rm");
        assert!(!s.map.osds.contains_key(&2) && s.map.epoch == e1 + 1);
        assert!(!s.osd_down_since.contains_key(&2));
        assert!(s.auth.contains_key("osd.2"));
        s.apply(&remove(vec![2], false))
            .expect("rm again is a no-op");
        assert_eq!(s.map.epoch, e1 + 1);
        s.apply(&boot(2)).expect("boot after rm");
        assert_eq!(s.map.osds[&2].weight, WEIGHT_ONE);
        // `purge` deletes the key too.
        s.apply(&StateCmd::OsdDown {
            ids: vec![2],
            now_unix: 6,
        })
        .expect("down");
        s.apply(&remove(vec![2], true)).expect("purge");
        assert!(!s.map.osds.contains_key(&2) && !s.auth.contains_key("osd.2"));
        assert!(s.auth.contains_key("osd.0") && s.map.osds.contains_key(&0));
    }

    #[test]
    fn a_lost_osd_leaves_pg_histories_and_only_then_may_go() {
        let mut s = boot();
        s.apply(&pool("p")).expect("pool");
        for id in 0..3 {
            s.apply(&StateCmd::OsdBoot {
                id,
                addr: format!("127.0.0.1:{}", 6800 + id),
                host: "h".into(),
            })
            .expect("boot");
        }
        let pid = s.map.pool_by_name("p").expect("pool").id;
        let pg = |seed| PgId { pool: pid, seed };
        s.apply(&StateCmd::PgActivated {
            items: vec![
                (pg(0), s.map.epoch, vec![2]),
                (pg(1), s.map.epoch, vec![2, 0]),
            ],
        })
        .expect("activated");
        let code = |r: CmdResult| r.expect_err("refused").errno;
        let lost = |id| StateCmd::OsdLost { id };
        assert_eq!(code(s.apply(&lost(2))), Errno::EBUSY.code(), "up");
        assert_eq!(code(s.apply(&lost(7))), Errno::ENOENT.code());
        s.apply(&StateCmd::OsdDown {
            ids: vec![2],
            now_unix: 1,
        })
        .expect("down");
        // pg 0 was last active on osd.2 alone: removing it would strand it.
        let rm = StateCmd::OsdRemove {
            ids: vec![2],
            purge: false,
        };
        let e = s.apply(&rm).expect_err("last copy");
        assert_eq!(e.errno, Errno::EBUSY.code());
        assert!(e.message.contains("osd lost"), "{}", e.message);
        assert!(s.map.osds.contains_key(&2));
        let e0 = s.map.epoch;
        s.apply(&lost(2)).expect("lost");
        assert_eq!(s.map.epoch, e0 + 1);
        assert!(!s.map.pg_history.contains_key(&pg(0)), "no member left");
        assert_eq!(s.map.pg_history[&pg(1)].acting, vec![0]);
        s.apply(&rm).expect("rm after lost");
    }

    #[test]
    fn osd_flags_are_kept_and_noin_keeps_booting_osds_out() {
        let mut s = boot();
        let flag = |f: &str, set| StateCmd::OsdFlag {
            flag: f.into(),
            set,
        };
        s.apply(&flag("noout", true)).expect("noout");
        s.apply(&flag("noin", true)).expect("noin");
        assert_eq!(
            s.apply(&flag("norebalance", true))
                .expect_err("unsupported")
                .errno,
            Errno::EINVAL.code()
        );
        assert_eq!(
            s.osd_flags.iter().map(String::as_str).collect::<Vec<_>>(),
            ["noin", "noout"]
        );
        let boot = |id| StateCmd::OsdBoot {
            id,
            addr: "127.0.0.1:1".into(),
            host: "h".into(),
        };
        // A new OSD boots up but not in; one the detector marked out stays out.
        s.apply(&boot(0)).expect("boot");
        assert!(s.map.osds[&0].up && !s.map.osds[&0].in_cluster);
        s.apply(&flag("noin", false)).expect("unset");
        s.apply(&boot(1)).expect("boot");
        assert!(s.map.osds[&1].in_cluster);
        s.apply(&StateCmd::OsdOut {
            ids: vec![1],
            auto: true,
        })
        .expect("out");
        s.apply(&flag("noin", true)).expect("noin");
        s.apply(&boot(1)).expect("reboot");
        assert!(!s.map.osds[&1].in_cluster, "noin: stays out");
        s.apply(&flag("noin", false)).expect("unset");
        s.apply(&boot(1)).expect("reboot");
        assert!(
            s.map.osds[&1].in_cluster,
            "auto-out comes in once noin is gone"
        );
        let b = postcard::to_stdvec(&s).expect("enc");
        assert_eq!(MonState::decode(&b).expect("dec"), s);
    }

    #[test]
    fn full_ratios_are_checked() {
        let mut s = boot();
        let set = |full, milli| StateCmd::SetFullRatio { full, milli };
        assert_eq!((s.nearfull_milli, s.full_milli), (850, 950));
        for bad in [
            set(true, 0),
            set(true, 1001),
            set(false, 960),
            set(true, 800),
        ] {
            assert_eq!(
                s.apply(&bad).expect_err("refused").errno,
                Errno::EINVAL.code(),
                "{bad:?}"
            );
        }
        s.apply(&set(false, 10)).expect("nearfull");
        s.apply(&set(true, 20)).expect("full");
        assert_eq!((s.nearfull_milli, s.full_milli), (10, 20));
        let b = postcard::to_stdvec(&s).expect("enc");
        assert_eq!(MonState::decode(&b).expect("dec"), s);
    }

    #[test]
    fn osd_lifecycle() {
        let mut s = boot();
        let boot = StateCmd::OsdBoot {
            id: 0,
            addr: "127.0.0.1:1".into(),
            host: "h".into(),
        };
        let Ok(Applied::Epoch(e)) = s.apply(&boot) else {
            panic!()
        };
        assert_eq!(s.map.osds[&0].up_from, e);
        s.apply(&StateCmd::OsdDown {
            ids: vec![0],
            now_unix: 5,
        })
        .expect("down");
        assert!(!s.map.osds[&0].up);
        s.apply(&StateCmd::OsdOut {
            ids: vec![0],
            auto: true,
        })
        .expect("out");
        assert!(!s.map.osds[&0].in_cluster);
        s.apply(&boot).expect("reboot");
        assert!(
            s.map.osds[&0].up && s.map.osds[&0].in_cluster,
            "auto-out comes back in"
        );
        s.apply(&StateCmd::OsdOut {
            ids: vec![0],
            auto: false,
        })
        .expect("out");
        s.apply(&boot).expect("reboot");
        assert!(!s.map.osds[&0].in_cluster, "manual out stays out");
        assert!(s
            .apply(&StateCmd::OsdDown {
                ids: vec![9],
                now_unix: 5
            })
            .is_err());
    }

    #[test]
    fn auth_db() {
        let mut s = boot();
        let caps = EntityCaps::from_pairs(&[("mon", "profile rbd")]).expect("caps");
        let goc = |k: &str| StateCmd::AuthGetOrCreate {
            entity: "client.glance".into(),
            caps: caps.clone(),
            caps_given: true,
            new_key: k.into(),
        };
        let k1 = Secret::generate(0).to_base64();
        let k2 = Secret::generate(0).to_base64();
        s.apply(&goc(&k1)).expect("create");
        let Ok(Applied::Reply(MonReply::Auth(v))) = s.apply(&goc(&k2)) else {
            panic!()
        };
        assert_eq!(v[0].key, k1, "get-or-create returns the existing key");
        assert!(s
            .apply(&StateCmd::AuthGetOrCreate {
                entity: "client.glance".into(),
                caps: EntityCaps::admin(),
                caps_given: true,
                new_key: k2.clone()
            })
            .is_err());
        assert!(s
            .apply(&StateCmd::AuthGetOrCreate {
                entity: "bogus".into(),
                caps: EntityCaps::default(),
                caps_given: false,
                new_key: k2.clone()
            })
            .is_err());
        s.apply(&StateCmd::AuthDel {
            entity: "client.glance".into(),
        })
        .expect("del");
        assert!(s
            .apply(&StateCmd::AuthDel {
                entity: "client.glance".into()
            })
            .is_err());
        let Ok(Applied::GlobalIds(a)) = s.apply(&StateCmd::AllocGlobalIds { count: 10 }) else {
            panic!()
        };
        let Ok(Applied::GlobalIds(b)) = s.apply(&StateCmd::AllocGlobalIds { count: 10 }) else {
            panic!()
        };
        assert_eq!(b, a + 10);
    }
}
