//! Durable raft storage on redb: the log, the vote, and the state machine
//! with its snapshot, all in one database file (`<data>/store.redb`).
//!
//! Every redb call runs in `spawn_blocking`: commits fsync, and async
//! tasks must never block. Each apply batch persists the whole state (it is
//! small: a map and an auth database) in the same transaction as the
//! applied log id, so a restart resumes where that record left off.
//!
//! Only the log, the vote, purges and snapshots are committed durably (one
//! fsync each). The applied state is committed without an fsync
//! ([`Durability::None`]): redb makes it durable with the next durable
//! commit (the next log append), and a crash can only lose a suffix of it,
//! leaving the state machine behind a durable log; the entries after its
//! `last_applied` are applied again once the leader commits (the committed
//! index is not stored at all, as openraft allows: storing it cost every
//! command one more redb commit before its apply). Every reply a monitor
//! gives (a snap id, a map epoch) comes from an entry applied after its log
//! append was durable, so nothing acknowledged is lost; logs are purged
//! only below a durable snapshot, whose commit also persists every earlier
//! state record. This saves two of the three fsyncs per command (session
//! 10: a snapshot create's snap id costs one).

use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, RwLock};

use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, LogState, RaftLogReader, RaftSnapshotBuilder,
    Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};

use quarry_map::ClusterMap;

use crate::state::{decode_compat, Applied, CmdResult, MonState, StateCmd, WithLegacyState};

openraft::declare_raft_types!(
    /// Raft types of the monitor group.
    pub TypeConfig:
        D = StateCmd,
        R = CmdResult,
);

/// Raft node id (the monitor's rank).
pub type NodeId = u64;
type SErr = StorageError<NodeId>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const K_VOTE: &str = "vote";
const K_PURGED: &str = "last_purged";
const K_SM: &str = "state_machine";
const K_SNAPSHOT: &str = "snapshot";

/// State shared between the state machine and the servers.
pub struct Shared {
    /// The applied state.
    pub state: RwLock<MonState>,
    /// The latest map, for subscribers.
    pub map_tx: watch::Sender<Arc<ClusterMap>>,
}

impl Shared {
    /// Read the state under the lock (never held across an await).
    pub fn read<T>(&self, f: impl FnOnce(&MonState) -> T) -> T {
        match self.state.read() {
            Ok(g) => f(&g),
            Err(p) => f(&p.into_inner()),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SmRecord {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    state: MonState,
}

/// [`SmRecord`] with the state in an older layout (see [`WithLegacyState`]).
#[derive(Deserialize)]
struct SmRecordOld<S> {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    state: S,
}

impl<S> SmRecordOld<S> {
    fn upgrade(self, f: impl FnOnce(S) -> MonState) -> SmRecord {
        SmRecord {
            last_applied: self.last_applied,
            membership: self.membership,
            state: f(self.state),
        }
    }
}

impl WithLegacyState for SmRecord {
    type V4 = SmRecordOld<<MonState as WithLegacyState>::V4>;
    type V3 = SmRecordOld<<MonState as WithLegacyState>::V3>;
    type V2 = SmRecordOld<<MonState as WithLegacyState>::V2>;
    type V1 = SmRecordOld<<MonState as WithLegacyState>::V1>;
    fn from_v4(old: Self::V4) -> SmRecord {
        old.upgrade(MonState::from_v4)
    }
    fn from_v3(old: Self::V3) -> SmRecord {
        old.upgrade(MonState::from_v3)
    }
    fn from_v2(old: Self::V2) -> SmRecord {
        old.upgrade(MonState::from_v2)
    }
    fn from_v1(old: Self::V1) -> SmRecord {
        old.upgrade(MonState::from_v1)
    }
}

fn dec_sm(b: &[u8]) -> Result<SmRecord, AnyError> {
    decode_compat(b).map_err(|e| io_err(format!("corrupt monitor state record: {e}")))
}

#[derive(Serialize, Deserialize)]
struct SnapRecord {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

fn io_err(e: impl ToString) -> AnyError {
    AnyError::error(e.to_string())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AnyError> + Send + 'static,
    wrap: fn(AnyError) -> StorageIOError<NodeId>,
) -> Result<T, SErr> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(wrap(e).into()),
        Err(e) => Err(wrap(io_err(format!("storage task failed: {e}"))).into()),
    }
}

fn read_meta(db: &Database, key: &str) -> Result<Option<Vec<u8>>, AnyError> {
    let tx = db.begin_read().map_err(io_err)?;
    let t = match tx.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    Ok(t.get(key).map_err(io_err)?.map(|v| v.value().to_vec()))
}

fn write_meta(db: &Database, pairs: &[(&str, Vec<u8>)]) -> Result<(), AnyError> {
    write_meta_with(db, pairs, Durability::Immediate)
}

/// [`write_meta`] at a chosen durability (`None`: no fsync; persisted by
/// the next durable commit, see the module doc).
fn write_meta_with(
    db: &Database,
    pairs: &[(&str, Vec<u8>)],
    durability: Durability,
) -> Result<(), AnyError> {
    let mut tx = db.begin_write().map_err(io_err)?;
    tx.set_durability(durability);
    {
        let mut t = tx.open_table(META).map_err(io_err)?;
        for (k, v) in pairs {
            t.insert(*k, v.as_slice()).map_err(io_err)?;
        }
    }
    tx.commit().map_err(io_err)
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, AnyError> {
    postcard::to_stdvec(v).map_err(io_err)
}

fn dec<T: for<'a> Deserialize<'a>>(b: &[u8]) -> Result<T, AnyError> {
    postcard::from_bytes(b).map_err(|e| io_err(format!("corrupt monitor store record: {e}")))
}

/// Open (or create) the store database.
pub fn open_db(path: &Path) -> Result<Arc<Database>, redb::DatabaseError> {
    Database::create(path).map(Arc::new)
}

/// Whether the store holds any raft state (i.e. the monitor has run).
pub fn load_state(db: &Database) -> Result<Option<MonState>, String> {
    match read_meta(db, K_SM).map_err(|e| e.to_string())? {
        None => Ok(None),
        Some(b) => dec_sm(&b).map(|r| Some(r.state)).map_err(|e| e.to_string()),
    }
}

/// The raft log and vote.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// Wrap an open database.
    pub fn new(db: Arc<Database>) -> LogStore {
        LogStore { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => Some(e.saturating_add(1)),
            Bound::Excluded(e) => Some(*e),
            Bound::Unbounded => None,
        };
        let db = self.db.clone();
        blocking(
            move || {
                let tx = db.begin_read().map_err(io_err)?;
                let t = match tx.open_table(LOG) {
                    Ok(t) => t,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(io_err(e)),
                };
                let iter = match end {
                    Some(e) if e <= start => return Ok(Vec::new()),
                    Some(e) => t.range(start..e),
                    None => t.range(start..),
                }
                .map_err(io_err)?;
                let mut out = Vec::new();
                for item in iter {
                    let (_, v) = item.map_err(io_err)?;
                    out.push(dec::<Entry<TypeConfig>>(v.value())?);
                }
                Ok(out)
            },
            StorageIOError::read_logs,
        )
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let db = self.db.clone();
        blocking(
            move || {
                let purged: Option<LogId<NodeId>> = match read_meta(&db, K_PURGED)? {
                    Some(b) => dec(&b)?,
                    None => None,
                };
                let tx = db.begin_read().map_err(io_err)?;
                let last = match tx.open_table(LOG) {
                    Ok(t) => match t.last().map_err(io_err)? {
                        Some((_, v)) => Some(dec::<Entry<TypeConfig>>(v.value())?.log_id),
                        None => None,
                    },
                    Err(redb::TableError::TableDoesNotExist(_)) => None,
                    Err(e) => return Err(io_err(e)),
                };
                Ok(LogState {
                    last_purged_log_id: purged,
                    last_log_id: last.or(purged),
                })
            },
            StorageIOError::read_logs,
        )
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        let db = self.db.clone();
        let v = *vote;
        blocking(
            move || write_meta(&db, &[(K_VOTE, enc(&v)?)]),
            StorageIOError::write_vote,
        )
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        let db = self.db.clone();
        blocking(
            move || match read_meta(&db, K_VOTE)? {
                Some(b) => Ok(Some(dec(&b)?)),
                None => Ok(None),
            },
            StorageIOError::read_vote,
        )
        .await
    }

    // The committed index is not stored (openraft's default; it made every
    // command wait for one more redb commit, a blocking-pool hop, between
    // its durable log append and its apply). On start the state machine
    // resumes at its own `last_applied`, and entries after it that were
    // committed before a restart are applied once the leader commits again
    // (raft applies in log order, so nothing newer is decided first: a snap
    // id or an epoch given out before the restart is never given again).
    async fn save_committed(&mut self, _committed: Option<LogId<NodeId>>) -> Result<(), SErr> {
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SErr> {
        Ok(None)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        for e in entries {
            encoded.push((e.log_id.index, enc(&e).map_err(StorageIOError::write_logs)?));
        }
        let db = self.db.clone();
        let res = blocking(
            move || {
                let tx = db.begin_write().map_err(io_err)?;
                {
                    let mut t = tx.open_table(LOG).map_err(io_err)?;
                    for (i, b) in &encoded {
                        t.insert(*i, b.as_slice()).map_err(io_err)?;
                    }
                }
                tx.commit().map_err(io_err)
            },
            StorageIOError::write_logs,
        )
        .await;
        // The commit above is durable (redb fsyncs), so the flush is done.
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        let db = self.db.clone();
        blocking(
            move || {
                let tx = db.begin_write().map_err(io_err)?;
                {
                    let mut t = tx.open_table(LOG).map_err(io_err)?;
                    t.retain(|k, _| k < log_id.index).map_err(io_err)?;
                }
                tx.commit().map_err(io_err)
            },
            StorageIOError::write_logs,
        )
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        let db = self.db.clone();
        blocking(
            move || {
                let tx = db.begin_write().map_err(io_err)?;
                {
                    let mut t = tx.open_table(LOG).map_err(io_err)?;
                    t.retain(|k, _| k > log_id.index).map_err(io_err)?;
                    let mut m = tx.open_table(META).map_err(io_err)?;
                    m.insert(K_PURGED, enc(&Some(log_id))?.as_slice())
                        .map_err(io_err)?;
                }
                tx.commit().map_err(io_err)
            },
            StorageIOError::write_logs,
        )
        .await
    }
}

/// The state machine: applies entries to [`MonState`] and persists it.
pub struct StateMachine {
    db: Arc<Database>,
    shared: Arc<Shared>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot_idx: u64,
}

impl StateMachine {
    /// Load the persisted state machine (or start empty).
    pub fn open(db: Arc<Database>) -> Result<(StateMachine, Arc<Shared>), String> {
        let rec = match read_meta(&db, K_SM).map_err(|e| e.to_string())? {
            Some(b) => Some(dec_sm(&b).map_err(|e| e.to_string())?),
            None => None,
        };
        let (last_applied, membership, state) = match rec {
            Some(r) => (r.last_applied, r.membership, r.state),
            None => (None, StoredMembership::default(), MonState::new()),
        };
        let (map_tx, _) = watch::channel(Arc::new(state.map.clone()));
        let shared = Arc::new(Shared {
            state: RwLock::new(state),
            map_tx,
        });
        Ok((
            StateMachine {
                db,
                shared: shared.clone(),
                last_applied,
                membership,
                snapshot_idx: 0,
            },
            shared,
        ))
    }

    fn snapshot_state(&self) -> MonState {
        self.shared.read(|s| s.clone())
    }

    async fn persist(&self, state: MonState, extra: Option<(String, Vec<u8>)>) -> Result<(), SErr> {
        let rec = SmRecord {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            state,
        };
        let b = enc(&rec).map_err(StorageIOError::write_state_machine)?;
        let db = self.db.clone();
        blocking(
            move || {
                let mut pairs = vec![(K_SM, b)];
                // Applied state alone: rebuilt from the durable log after a
                // crash, so no fsync. An installed snapshot replaces log
                // entries: durable.
                let mut durability = Durability::None;
                if let Some((k, v)) = &extra {
                    if k == K_SNAPSHOT {
                        pairs.push((K_SNAPSHOT, v.clone()));
                        durability = Durability::Immediate;
                    }
                }
                write_meta_with(&db, &pairs, durability)
            },
            StorageIOError::write_state_machine,
        )
        .await
    }

    fn publish(&self) {
        let map = self.shared.read(|s| s.map.clone());
        self.shared.map_tx.send_if_modified(|cur| {
            if cur.epoch != map.epoch || cur.fsid != map.fsid {
                *cur = Arc::new(map);
                true
            } else {
                false
            }
        });
    }
}

/// Builds snapshots from a copy of the state.
pub struct SnapBuilder {
    db: Arc<Database>,
    data: Vec<u8>,
    meta: SnapshotMeta<NodeId, BasicNode>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let rec = SnapRecord {
            meta: self.meta.clone(),
            data: self.data.clone(),
        };
        let b = enc(&rec).map_err(|e| StorageIOError::write_snapshot(None, e))?;
        let db = self.db.clone();
        blocking(
            move || write_meta(&db, &[(K_SNAPSHOT, b)]),
            |e| StorageIOError::write_snapshot(None, e),
        )
        .await?;
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(self.data.clone())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), SErr> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CmdResult>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        let state = {
            let mut st = match self.shared.state.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            for e in entries {
                self.last_applied = Some(e.log_id);
                match e.payload {
                    EntryPayload::Blank => out.push(Ok(Applied::None)),
                    EntryPayload::Normal(cmd) => out.push(st.apply(&cmd)),
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(e.log_id), m);
                        out.push(Ok(Applied::None));
                    }
                }
            }
            st.clone()
        };
        self.persist(state, None).await?;
        self.publish();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_idx += 1;
        let state = self.snapshot_state();
        // Encoding a plain struct into a Vec does not fail; if it ever did,
        // an empty snapshot would be refused on install rather than applied.
        let data = postcard::to_stdvec(&state).unwrap_or_default();
        let id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.snapshot_idx),
            None => format!("none-{}", self.snapshot_idx),
        };
        SnapBuilder {
            db: self.db.clone(),
            data,
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id: id,
            },
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let data = snapshot.into_inner();
        let new_state = MonState::decode(&data)
            .map_err(io_err)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), e))?;
        {
            let mut st = match self.shared.state.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            *st = new_state.clone();
        }
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        let rec = SnapRecord {
            meta: meta.clone(),
            data,
        };
        let b = enc(&rec).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        self.persist(new_state, Some((K_SNAPSHOT.to_string(), b)))
            .await?;
        self.publish();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let db = self.db.clone();
        let rec = blocking(
            move || match read_meta(&db, K_SNAPSHOT)? {
                Some(b) => Ok(Some(dec::<SnapRecord>(&b)?)),
                None => Ok(None),
            },
            |e| StorageIOError::read_snapshot(None, e),
        )
        .await?;
        Ok(rec.map(|r| Snapshot {
            meta: r.meta,
            snapshot: Box::new(Cursor::new(r.data)),
        }))
    }
}
