//! The client↔monitor protocol: message kinds and bodies carried in
//! quarry-proto frames. The monitor (quarry-mon) speaks the same types.
//!
//! Every connection starts with the handshake of `quarry_auth::handshake`
//! (`Hello` → `Challenge` → `Prove` → `AuthOk`); nothing else is served
//! before it succeeds. Requests carry a request id echoed by the response;
//! map pushes (after `Subscribe`) use request id 0.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use quarry_map::{ClusterMap, Epoch, MonInfo, OsdId, PgId, PoolDef};
use quarry_rados::{PoolId, SnapId};

/// Frame kind of a [`Request`].
pub const KIND_REQUEST: u8 = 1;
/// Frame kind of a [`Response`].
pub const KIND_RESPONSE: u8 = 2;
/// Frame kind of a pushed map ([`Response::Map`], request id 0).
pub const KIND_MAP_PUSH: u8 = 3;

/// A request from a client, OSD or CLI to a monitor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Start of the handshake.
    Hello {
        /// Entity name (`client.admin`).
        entity: String,
        /// Fresh client nonce.
        client_nonce: [u8; 16],
        /// Whether the client signs its frames after the handshake
        /// (`cephx_sign_messages`); both proofs cover it.
        sign: bool,
    },
    /// The client's proof (after checking the monitor's).
    Prove {
        /// `quarry_auth::client_proof`.
        proof: [u8; 32],
    },
    /// Fetch the current map.
    GetMap,
    /// Push every map with an epoch above `have` on this connection.
    Subscribe {
        /// Newest epoch the client already has.
        have: Epoch,
    },
    /// An administrative command.
    Command(MonCommand),
    /// A fresh ticket (renewal before expiry).
    GetTicket {
        /// Fresh nonce for wrapping the session key.
        nonce: [u8; 16],
    },
    /// The cluster's service key (osd.* only).
    GetServiceKey {
        /// Fresh nonce for wrapping the key.
        nonce: [u8; 16],
    },
    /// An OSD starts serving.
    OsdBoot {
        /// Its id (must match the authenticated `osd.N`).
        id: OsdId,
        /// `ip:port` it serves on.
        addr: String,
        /// Host name (failure domain).
        host: String,
        /// `osd_crush_initial_weight` when set: the weight of an OSD the
        /// monitors have no entry for yet (units of `WEIGHT_ONE`).
        initial_weight: Option<u32>,
    },
    /// An OSD is alive.
    OsdBeacon {
        /// Its id.
        id: OsdId,
    },
    /// A PG went active with this acting set.
    PgActivated {
        /// The PG.
        pg: PgId,
        /// Map epoch the primary activated at.
        epoch: Epoch,
        /// Acting set, primary first.
        acting: Vec<OsdId>,
    },
    /// A primary deep-scrubbed a PG: how many bad copies it found (0:
    /// none, which clears the PG's scrub errors). Answered with `Ok`.
    PgScrubbed(PgScrubErrors),
    /// An OSD's data filesystem (statvfs), sent with its beacons. Answered
    /// with [`Response::Fullness`].
    OsdStatfs {
        /// Its id.
        id: OsdId,
        /// Filesystem size in bytes.
        total_bytes: u64,
        /// Bytes available to it.
        avail_bytes: u64,
        /// Usage of the pools whose PGs it leads (as primary): objects and
        /// bytes summed over those PGs, for the pools' quotas.
        pools: Vec<PoolUsage>,
    },
}

/// Objects and logical bytes of one pool (one copy), as counted by the
/// primaries of its PGs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    /// The pool.
    pub pool: PoolId,
    /// Objects.
    pub objects: u64,
    /// Bytes of data (one copy).
    pub bytes: u64,
}

/// A pool's quotas (0: none) and its usage as the monitors know it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolQuotaInfo {
    /// Pool id.
    pub pool: PoolId,
    /// Pool name.
    pub name: String,
    /// Most objects (0: no limit).
    pub max_objects: u64,
    /// Most bytes (0: no limit).
    pub max_bytes: u64,
    /// Objects now (from the primaries' last reports).
    pub objects: u64,
    /// Bytes now.
    pub bytes: u64,
}

/// A monitor's answer (or push).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    /// Handshake step 2: the monitor's nonce and proof.
    Challenge {
        /// Fresh server nonce.
        server_nonce: [u8; 16],
        /// `quarry_auth::server_proof`.
        server_proof: [u8; 32],
        /// Whether the monitor signs its frames after the handshake.
        sign: bool,
    },
    /// Handshake done.
    AuthOk {
        /// Global id of this session.
        global_id: u64,
        /// The ticket.
        ticket: WireTicket,
    },
    /// A cluster map (reply to `GetMap`, or a push).
    Map(Box<ClusterMap>),
    /// Reply to a command.
    Reply(MonReply),
    /// Reply to `GetTicket`.
    Ticket(WireTicket),
    /// Reply to `GetServiceKey`: the key wrapped under the entity's secret
    /// with nonces (request nonce, `server_nonce`).
    ServiceKey {
        /// Server's nonce for the wrap.
        server_nonce: [u8; 16],
        /// Wrapped key.
        wrapped: [u8; 32],
    },
    /// Reply to `OsdBoot` / `PgActivated`: the epoch that records it.
    Epoch(Epoch),
    /// Success without data (`OsdBeacon`, `Subscribe`).
    Ok,
    /// Failure, with errno and a message for the user.
    Error {
        /// Positive errno.
        errno: i32,
        /// Human-readable reason.
        message: String,
    },
    /// Reply to `OsdStatfs`: the full ratios and the OSDs now full (their
    /// PGs take no writes that need space).
    Fullness(Fullness),
}

/// The cluster's full ratios (per mille of an OSD's filesystem used) and
/// the OSDs at or above the full one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fullness {
    /// `nearfull_ratio` x 1000 (HEALTH_WARN above it).
    pub nearfull_milli: u32,
    /// `full_ratio` x 1000 (writes refused above it).
    pub full_milli: u32,
    /// OSDs whose last report is at or above the full ratio.
    pub full_osds: Vec<OsdId>,
    /// Pools at their quota (`POOL_FULL`): writes that need space wait
    /// until the quota is raised or space is freed, as Ceph's do.
    pub quota_full_pools: Vec<PoolId>,
}

/// A ticket on the wire: the session key is wrapped under the entity's
/// secret with (`client_nonce`, `server_nonce`) of the exchange.
#[derive(Clone, Serialize, Deserialize)]
pub struct WireTicket {
    /// Signed blob for OSDs.
    pub blob: Vec<u8>,
    /// Server nonce used for wrapping (the client nonce is the request's).
    pub server_nonce: [u8; 16],
    /// `quarry_auth::wrap_session_key` output.
    pub wrapped_session_key: [u8; 32],
    /// Expiry, seconds since the epoch.
    pub expires_unix: u64,
}

impl std::fmt::Debug for WireTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireTicket")
            .field("blob_len", &self.blob.len())
            .field("expires_unix", &self.expires_unix)
            .finish_non_exhaustive()
    }
}

/// Administrative commands (what `ceph osd pool ...`, `ceph auth ...` do).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MonCommand {
    /// `osd pool create NAME [PG_NUM]` with optional size/min_size/application.
    PoolCreate {
        /// Pool name.
        name: String,
        /// PG count (default `osd_pool_default_pg_num`).
        pg_num: Option<u32>,
        /// Replicas (default `osd_pool_default_size`).
        size: Option<u32>,
        /// Min replicas for writes (default `osd_pool_default_min_size`).
        min_size: Option<u32>,
        /// Application tag (`rbd`).
        application: Option<String>,
    },
    /// `osd pool delete NAME` (needs `mon_allow_pool_delete`).
    PoolDelete {
        /// Pool name.
        name: String,
    },
    /// `osd pool set NAME VAR VAL` for `size`, `min_size`, `pg_num`,
    /// `application`.
    PoolSet {
        /// Pool name.
        name: String,
        /// Variable.
        var: String,
        /// Value.
        val: String,
    },
    /// `osd pool ls`.
    PoolList,
    /// Allocate a self-managed snapshot id (`pool.snap_seq + 1`).
    SnapCreate {
        /// Pool id.
        pool: PoolId,
    },
    /// Remove a self-managed snapshot (appended to `removed_snaps`).
    SnapRemove {
        /// Pool id.
        pool: PoolId,
        /// Snapshot id.
        snap: SnapId,
    },
    /// `osd down N`.
    OsdDown {
        /// OSD id.
        id: OsdId,
    },
    /// `osd out N`.
    OsdOut {
        /// OSD id.
        id: OsdId,
    },
    /// `osd in N`.
    OsdIn {
        /// OSD id.
        id: OsdId,
    },
    /// `auth get-or-create ENTITY [SVC CAPS]...`.
    AuthGetOrCreate {
        /// Entity name.
        entity: String,
        /// `(service, caps text)` pairs.
        caps: Vec<(String, String)>,
    },
    /// `auth add ENTITY [SVC CAPS]...` with an optional given key (base64).
    AuthAdd {
        /// Entity name.
        entity: String,
        /// Key to install (a random one if absent).
        key: Option<String>,
        /// `(service, caps text)` pairs.
        caps: Vec<(String, String)>,
    },
    /// `auth get ENTITY`.
    AuthGet {
        /// Entity name.
        entity: String,
    },
    /// `auth ls`.
    AuthList,
    /// `auth del ENTITY`.
    AuthDel {
        /// Entity name.
        entity: String,
    },
    /// `auth caps ENTITY [SVC CAPS]...` (replaces all caps).
    AuthCaps {
        /// Entity name.
        entity: String,
        /// `(service, caps text)` pairs.
        caps: Vec<(String, String)>,
    },
    /// `auth print-key ENTITY`.
    AuthPrintKey {
        /// Entity name.
        entity: String,
    },
    /// `status` / `health`.
    Status,
    /// `osd blocklist add ADDR [EXPIRE_SECONDS]` (default
    /// `mon_osd_blocklist_default_expire`, 1 hour).
    BlocklistAdd {
        /// Client address, `ip[:port][/nonce]`.
        addr: String,
        /// Seconds until the entry expires.
        expire_secs: Option<u64>,
    },
    /// `osd blocklist rm ADDR`.
    BlocklistRm {
        /// Client address.
        addr: String,
    },
    /// `osd blocklist ls`.
    BlocklistList,
    /// `config set WHO NAME VALUE` (needs mon `allow *`).
    ConfigSet {
        /// Section: `global`, a type (`osd`) or an entity (`osd.0`).
        who: String,
        /// Option name.
        name: String,
        /// Value.
        value: String,
    },
    /// `config rm WHO NAME` (needs mon `allow *`; absent is not an error).
    ConfigRm {
        /// Section.
        who: String,
        /// Option name.
        name: String,
    },
    /// `config dump`: every stored value.
    ConfigDump,
    /// The stored values an entity or type sees (`config get WHO`), each
    /// from its most specific section. Any session may ask for its own.
    ConfigGet {
        /// `global`, a type or an entity.
        who: String,
    },
    /// Set (`set`) or clear an OSD map flag (`ceph osd set|unset noout`).
    OsdFlag {
        /// `noout`, `nodown` or `noin`.
        flag: String,
        /// Set or clear.
        set: bool,
    },
    /// When each PG was last deep-scrubbed (`ceph pg ls`; OSDs schedule
    /// their scrubs from it). Answered with [`MonReply::ScrubStamps`].
    ScrubStamps,
    /// `ceph osd set-full-ratio` / `set-nearfull-ratio`.
    SetFullRatio {
        /// The full ratio (else the nearfull one).
        full: bool,
        /// The ratio x 1000 (1..=1000).
        milli: u32,
    },
    /// Each OSD's last filesystem report (`ceph osd df`). Answered with
    /// [`MonReply::OsdUsage`].
    OsdDf,
    /// `osd pool set-quota NAME max_objects|max_bytes N` (0 removes it).
    PoolSetQuota {
        /// Pool name.
        name: String,
        /// `max_objects` or `max_bytes`.
        field: String,
        /// The limit (0: none).
        value: u64,
    },
    /// `osd pool get-quota NAME`. Answered with [`MonReply::PoolQuota`].
    PoolGetQuota {
        /// Pool name.
        name: String,
    },
    /// `osd pool rename FROM TO`. Answered with [`MonReply::Renamed`].
    PoolRename {
        /// Current name.
        from: String,
        /// New name.
        to: String,
    },
    /// `osd pool application enable|disable|set|rm`. Answered with
    /// [`MonReply::Applied`] (Ceph's status text, also for the no-ops).
    PoolApplication {
        /// Pool name.
        pool: String,
        /// The change.
        op: AppOp,
    },
    /// A pool's applications and their keys (`osd pool application get`).
    /// Answered with [`MonReply::PoolApplications`].
    PoolApplicationGet {
        /// Pool name.
        pool: String,
    },
    /// `osd crush reweight osd.N W`: an OSD's placement weight.
    OsdCrushReweight {
        /// OSD id.
        id: OsdId,
        /// New weight in units of `quarry_map::WEIGHT_ONE`.
        weight: u32,
    },
    /// `osd rm N...` (`purge`: `osd purge N`, which also deletes the
    /// OSD's key): take down OSDs out of the map for good.
    OsdRemove {
        /// OSD ids.
        ids: Vec<OsdId>,
        /// Delete each one's `osd.N` entity too.
        purge: bool,
    },
    /// `osd lost N`: a down OSD's data is gone for good; PGs waiting for
    /// it go on without it.
    OsdLost {
        /// OSD id.
        id: OsdId,
    },
}

/// A pool's application metadata: application name -> its keys and values
/// (Ceph's `application_metadata`).
pub type PoolApplications = BTreeMap<String, BTreeMap<String, String>>;

/// A change to a pool's application metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppOp {
    /// Enable an application (`force`: beside others already enabled).
    Enable {
        /// Application name.
        app: String,
        /// `--yes-i-really-mean-it`.
        force: bool,
    },
    /// Disable an application and drop its keys (`force` required).
    Disable {
        /// Application name.
        app: String,
        /// `--yes-i-really-mean-it`.
        force: bool,
    },
    /// Set one key of an enabled application.
    Set {
        /// Application name.
        app: String,
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Remove one key of an enabled application.
    Rm {
        /// Application name.
        app: String,
        /// Key.
        key: String,
    },
}

/// Replies to [`MonCommand`]s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MonReply {
    /// Done; the map epoch that records the change (or the current one).
    Ok {
        /// Epoch.
        epoch: Epoch,
    },
    /// Pool created.
    PoolCreated {
        /// New pool id.
        pool: PoolId,
        /// Epoch that records it.
        epoch: Epoch,
    },
    /// Pools (for `PoolList`).
    Pools(Vec<PoolDef>),
    /// Snapshot id allocated.
    Snap {
        /// The new id.
        snap: SnapId,
        /// Epoch that records it.
        epoch: Epoch,
    },
    /// Auth entries (get-or-create, add, get, ls).
    Auth(Vec<AuthEntry>),
    /// A key in base64 (print-key).
    Key(String),
    /// Cluster status.
    Status(ClusterStatus),
    /// Blocklist entries: canonical address, expiry (unix seconds).
    Blocklist(Vec<(String, u64)>),
    /// A blocklist entry was added or removed (`existed`: it was there before).
    Blocklisted {
        /// Canonical address.
        addr: String,
        /// Expiry, unix seconds (0 for a removal).
        until_unix: u64,
        /// Whether the entry existed before the command.
        existed: bool,
        /// Epoch that records it.
        epoch: Epoch,
    },
    /// Config database entries (`ConfigDump`, `ConfigGet`).
    Config(Vec<ConfigEntry>),
    /// Per PG, when its last deep scrub finished (unix seconds, the
    /// monitors' clock), for `ScrubStamps`.
    ScrubStamps(Vec<(PgId, u64)>),
    /// Per OSD that reported recently: (id, filesystem bytes, bytes
    /// available), for `OsdDf`.
    OsdUsage(Vec<(OsdId, u64, u64)>),
    /// A pool's quotas and usage, for `PoolGetQuota`.
    PoolQuota(PoolQuotaInfo),
    /// `PoolRename` done (`renamed`), or nothing to do because only the
    /// new name exists (a repeated rename, as Ceph accepts it).
    Renamed {
        /// Whether this command renamed it.
        renamed: bool,
        /// Epoch that records it (or the current one).
        epoch: Epoch,
    },
    /// A command done, with the status text Ceph prints for it.
    Applied {
        /// What was done (or why nothing needed doing).
        message: String,
        /// Epoch that records it (or the current one).
        epoch: Epoch,
    },
    /// A pool's application metadata, for `PoolApplicationGet`.
    PoolApplications(PoolApplications),
}

/// One value of the monitors' config database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    /// Section it is stored in (`global`, `osd`, `client.glance`).
    pub section: String,
    /// Option name (canonical).
    pub name: String,
    /// Value as stored.
    pub value: String,
}

/// One entity of the auth database as shown to administrators.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthEntry {
    /// Entity name.
    pub entity: String,
    /// Key, Ceph base64 form.
    pub key: String,
    /// Caps by service.
    pub caps: BTreeMap<String, String>,
}

impl std::fmt::Debug for AuthEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthEntry")
            .field("entity", &self.entity)
            .field("key", &"<redacted>")
            .field("caps", &self.caps)
            .finish()
    }
}

impl AuthEntry {
    /// The keyring section Ceph prints (`[client.x]\n\tkey = ...\n\tcaps mon = "..."`).
    pub fn keyring_section(&self) -> String {
        let mut s = format!("[{}]\n\tkey = {}\n", self.entity, self.key);
        for (svc, text) in &self.caps {
            s.push_str(&format!("\tcaps {svc} = \"{text}\"\n"));
        }
        s
    }
}

/// Overall health, as `ceph health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    /// HEALTH_OK.
    Ok,
    /// HEALTH_WARN.
    Warn,
    /// HEALTH_ERR.
    Err,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Ok => "HEALTH_OK",
            Health::Warn => "HEALTH_WARN",
            Health::Err => "HEALTH_ERR",
        })
    }
}

/// A PG whose last deep scrub (on its primary) left inconsistent objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgScrubErrors {
    /// The PG.
    pub pg: PgId,
    /// Bad copies found (Ceph's scrub errors).
    pub errors: u32,
    /// Objects with at least one bad copy.
    pub objects: u32,
}

/// One health check (`OSD_DOWN`, `PG_DAMAGED`, ...), as `ceph health
/// detail` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Ceph's check code.
    pub code: String,
    /// `Warn` or `Err`.
    pub severity: Health,
    /// The one-line summary.
    pub summary: String,
    /// How many things the summary counts.
    pub count: u32,
    /// One line per affected item.
    pub detail: Vec<String>,
}

/// What `ceph -s` summarises.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Cluster id.
    pub fsid: String,
    /// Map epoch.
    pub epoch: Epoch,
    /// Health.
    pub health: Health,
    /// Failed health checks, most severe first.
    pub checks: Vec<HealthCheck>,
    /// PGs whose primary reports scrub errors (state `inconsistent`).
    pub inconsistent: Vec<PgScrubErrors>,
    /// OSD flags set (`noout`, ...).
    pub osd_flags: Vec<String>,
    /// `nearfull_ratio` x 1000.
    pub nearfull_milli: u32,
    /// `full_ratio` x 1000.
    pub full_milli: u32,
    /// Monitors in the map.
    pub mons: Vec<MonInfo>,
    /// Name of the leader, if known.
    pub leader: Option<String>,
    /// Names of monitors in quorum (voters the leader hears from).
    pub quorum: Vec<String>,
    /// OSDs in the map.
    pub num_osds: u32,
    /// OSDs up.
    pub num_up_osds: u32,
    /// OSDs in.
    pub num_in_osds: u32,
    /// Pools.
    pub num_pools: u32,
    /// PGs over all pools.
    pub num_pgs: u32,
}
