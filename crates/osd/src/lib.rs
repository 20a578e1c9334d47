//! `quarry-osd`: the object daemon.
//!
//! Each OSD stores objects in one local [`quarry_store::Store`] and serves
//! the placement groups the cluster map gives it. Store "pools" are per PG
//! (`pool << 32 | seed`), so a PG's objects list cheaply for recovery and
//! the store's version counters advance per PG.
//!
//! # Replication: Ceph-style primary-copy with map epochs and PG logs
//!
//! Chosen over Raft-per-PG (the design brief's recommendation) because it
//! reuses the monitor's map as the only source of membership truth (no
//! second consensus layer, no per-PG election timers or log engine), keeps
//! reads on one OSD without a read-index round trip, and matches the
//! failure semantics operators expect from Ceph (min_size, blocking I/O,
//! `pg_history`). The cost is that its safety argument rests on the
//! monitor's Raft-replicated map and the peering rules below, which is
//! what Ceph has relied on for a decade.
//!
//! * The first OSD of a PG's up set is its primary; the up set is the
//!   acting set. Clients send ops to the primary with their map epoch; an
//!   OSD with an older map waits for the newer one; one that is not the
//!   primary answers "retry with map epoch E".
//! * Writes (pipelined): under the PG's write lock the primary only
//!   assigns the next PG version `(interval epoch, seq)`, queues the op to
//!   its local store and queues a RepOp (carrying `ver` and the previous
//!   version `prev`) on each peer connection; then it releases the lock, so
//!   many writes of a PG are in flight and share the store's group commits.
//!   The store queue and the peer sockets are FIFO, so every member sees a
//!   PG's ops in version order; a replica additionally queues a RepOp only
//!   when its last queued version is exactly `prev` (waiting, bounded, for
//!   a late predecessor; refusing on a gap, which makes the primary
//!   re-peer). Each member commits the op and its log entry (object name +
//!   version) in one atomic durable store commit (`quarry_store::Logged`);
//!   ops failing on their own terms (ENOENT...) are logged too, so every
//!   member's log is the same sequence. The object takes a version derived
//!   from the PG version, identical on every member. The client is answered
//!   only when every acting member made it durable; a PG with fewer than
//!   `min_size` members up does not go active, so its I/O waits (never
//!   errors).
//! * Peering (new primary or changed acting set): the primary asks every
//!   member for its info (last update, log tail); a member answering a
//!   query from epoch E refuses replicated writes from older intervals from
//!   then on. The authority is the member with the newest last update among
//!   those that belong to the PG's last acting set recorded by the monitor
//!   (`pg_history`); without any such member the PG stays inactive. The
//!   primary pulls what it lacks from the authority, pushes to every
//!   lagging member the current state of each object named in the
//!   authority's log after the member's last update as a store export
//!   (head, clones, snap set, versions, omap, xattrs: the member's copy
//!   becomes byte-for-byte the authority's; an object the authority does
//!   not have is removed), replaces the member's log by a copy of the
//!   authority's (its tail and entries with their op ids, sent with the
//!   activation, as Ceph sends the authoritative log), then records the
//!   new acting set with the monitor (`pg_activated`) and only then serves
//!   I/O.
//! * Divergent entries (Ceph's rewind): a member whose last update is not
//!   in the authority's log (e.g. a primary that applied writes its
//!   replicas never got, then was killed or cut off while the others went
//!   on in a new interval) has its whole log compared with the
//!   authority's (`pglog::compare`): the newest version both record is
//!   where the histories fork; the member's entries after it are
//!   divergent. The objects those entries touched and those the authority
//!   wrote after the fork are recovered from the authority (or removed),
//!   the member's log becomes a copy of the authority's, and its
//!   duplicate index is rebuilt from that copy (the ops of the rewound
//!   entries leave it: a resend of one runs again). Only when the logs prove no fork (the
//!   authority's log no longer reaches back to it) is the member
//!   backfilled: every object either side holds.
//!
//! Why no acknowledged write is lost: a write is acknowledged only after
//! every member of the acting set of its interval applied it durably; that
//! set was recorded in the map before the interval served I/O. Any later
//! interval must include a member of the last recorded acting set, and
//! takes as authority the newest such member, which holds every write
//! acknowledged in that interval (members apply an interval's writes in
//! the primary's order, each member's log is a prefix-closed sequence
//! because of the `prev` link) and, by induction, in earlier ones. Writes
//! of a deposed primary cannot be acknowledged: a member answering the new
//! primary's query first raises its interval under the PG lock (every
//! later old-interval RepOp is refused, it checks under the same lock),
//! then waits for its store queue to drain (a barrier), so the info it
//! reports covers every old-interval write it accepted. With pipelining an
//! ack still needs every member's durable commit of that op, and since
//! members commit in version order, a member holding version v holds all
//! versions before it in the interval.
//!
//! Why the authority is never a divergent history: let L be the last
//! interval recorded in `pg_history`. Its peering reset every member to
//! the history of L's authority (divergent entries rewound), and from
//! then on members only append L's versions in L's primary's order, so
//! every log of an L member is that common history plus a prefix of L's
//! sequence. The newest L member up therefore holds the longest such
//! prefix, which includes every write acknowledged in L (on every L
//! member) and, through L's peering, every one acknowledged earlier.
//! Entries it lacks exist only on members outside L or on L's primary's
//! unacknowledged tail: the divergent ones, never acknowledged. The
//! unacknowledged tail it may hold itself is adopted (as in Ceph: a write
//! never acknowledged may or may not survive, the client resends it).
//!
//! Crash windows: none between log and data: the entry and the op are one
//! store commit (one fdatasync for both, shared with the batch), so after a
//! crash a member's log and objects agree.
//!
//! Known limits (recorded, not hidden):
//! * Object versions are `epoch << 40 | seq` of the PG version: correct
//!   while map epochs stay below 2^24 and an interval below 2^40 writes.
//! * Writes to one object from one client with several in flight are
//!   ordered by arrival at the PG lock (tasks race for it after the map
//!   checks), not strictly by send order as in Ceph.
//! * Duplicate ops: a client op carries a tid (the same on every resend);
//!   with the client's global id it is logged in the PG log entry (with
//!   whether the op succeeded) on every member, and the primary answers a
//!   resend of a logged successful write (pure or guarded by
//!   `AssertExists`/`AssertVersion`) with its original success
//!   (a new primary rebuilds the index from its log when it activates; a
//!   recovered member's log is a copy of the authority's, op ids included,
//!   so it knows the ops applied while it was away or cut off).
//!   A resend racing its original still in flight on the same primary
//!   (not yet in the index) waits for the original's outcome
//!   (`inflight.rs`): its success and version, or a run of its own if the
//!   original failed or its interval ended. Not covered: ops older than
//!   the log's span, and compound ops with reads (re-executed). The index holds only ops acknowledged to the client
//!   (all acting members applied them) or recorded as applied by the log
//!   it activated with; it is rebuilt from the log whenever the log is
//!   replaced, so a rewound op never stays in it.
//! * Watches live on the primary only (per connection); the client
//!   re-registers each watch it holds when that connection dies or the
//!   object's primary changes (checked on every map and every second), so
//!   a watch survives failover. A notify goes to the object's primary,
//!   which sends an event to each watch's connection and collects the
//!   acks until all came or the notifier's timeout passed (`notify`).
//!
//! Architecture invariant: store calls that can wait (writes, barriers,
//! reads of objects with writes queued on this OSD, large or unbounded
//! reads) never run on async worker threads (they go through
//! `spawn_blocking`); small reads (≤ 64 KiB, metadata) of objects not
//! written on this OSD in the last 250 ms (longer than the store's commit
//! interval, after which the store serves them from its committed view)
//! run inline, since the two thread hand-offs cost more than the read;
//! every queue is bounded (per
//! connection in-flight limit, bounded send queues, the store's queue).

mod inflight;
mod notify;
mod osd;
mod pglog;

use std::path::PathBuf;
use std::time::Duration;

use quarry_common::Errno;

pub use osd::run;

/// How to run one OSD.
#[derive(Clone, Debug)]
pub struct OsdConfig {
    /// This OSD's id.
    pub id: quarry_map::OsdId,
    /// Data directory (the store: `data_dir/meta.redb` and `data_dir/log/`).
    pub data_dir: PathBuf,
    /// Monitor addresses.
    pub mon_addrs: Vec<String>,
    /// The `osd.N` secret.
    pub secret: quarry_auth::Secret,
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub bind_addr: String,
    /// `public_addr`: the address clients and peers are told to use when
    /// it is not the one listened on (NAT, a proxy): its IP, and its port
    /// (`None`: the listening port).
    pub public_addr: Option<(std::net::IpAddr, Option<u16>)>,
    /// Host name reported to the monitor (failure domain).
    pub host: String,
    /// Interval between beacons to the monitor.
    pub beacon_interval: Duration,
    /// Keepalive of the monitor session (`mon_client_ping_*`).
    pub mon_ping: quarry_monc::MonPing,
    /// Bound on monitor requests.
    pub mon_timeout: Duration,
    /// `ms_connection_ready_timeout`: bound on a connection's handshake
    /// (accepted, or to a peer OSD).
    pub handshake_timeout: Duration,
    /// `osd_deep_scrub_interval`: how often each PG this OSD is primary for
    /// is deep-scrubbed (counted from the OSD's start).
    pub deep_scrub_interval: Duration,
    /// `osd_scrub_auto_repair`: periodic scrubs also repair what they find.
    pub scrub_auto_repair: bool,
    /// `osd_crush_initial_weight` when set (not negative): the placement
    /// weight the monitors give this OSD at its first boot (else 1.0).
    pub initial_weight: Option<u32>,
}

/// Why the OSD stopped.
#[derive(Debug, thiserror::Error)]
pub enum OsdError {
    /// The local store could not be opened.
    #[error("osd.{id}: opening store in {dir}: {source}")]
    Store {
        /// OSD id.
        id: u32,
        /// Directory.
        dir: String,
        /// Cause.
        source: quarry_rados::RadosError,
    },
    /// The monitor refused or could not be reached.
    #[error("osd.{id}: monitor: {source}")]
    Mon {
        /// OSD id.
        id: u32,
        /// Cause.
        source: quarry_monc::MonClientError,
    },
    /// The local store stopped after a storage failure (a full or failing
    /// disk): the OSD stops so that the monitors mark it down and its PGs
    /// go on without it.
    #[error("osd.{id}: local store failed, stopping: {reason}")]
    StoreFailed {
        /// OSD id.
        id: u32,
        /// The store's failure.
        reason: String,
    },
    /// The listening socket could not be opened.
    #[error("osd.{id}: listen on {addr}: {source}")]
    Listen {
        /// OSD id.
        id: u32,
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

impl OsdError {
    /// errno for the CLI's exit message.
    pub fn errno(&self) -> Errno {
        match self {
            OsdError::Store { source, .. } => source.errno,
            OsdError::Mon { source, .. } => source.errno(),
            OsdError::Listen { .. } | OsdError::StoreFailed { .. } => Errno::EIO,
        }
    }
}
