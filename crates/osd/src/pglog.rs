//! Per-PG metadata persisted in the store's `sys` table: the PG info
//! (last update, log tail) and a bounded ring of log entries naming the
//! objects each write touched.
//!
//! Keys: `pg/<pool>.<seed>/meta` and `pg/<pool>.<seed>/log/<slot>`, with
//! `slot = index % LOG_MAX`. Only object names are logged, not data:
//! recovery pushes the authority's *current* state of each named object.
//! An entry is committed in the same durable store commit as the write it
//! records ([`Store::apply_with_sys`]-style, via [`quarry_store::Logged`]),
//! so a member's log and its objects never disagree after a crash; ops
//! that fail on their own terms are logged too (every member orders the
//! same sequence and fails it the same way).
//!
//! A write stores its entry only: the `meta` record is a *base*, written
//! when the log is reset or replaced, and [`load`] derives the current
//! meta from it and the entries appended since (each stores its absolute
//! index and the log tail after it). Rewriting the meta on every write
//! cost a second `sys` insert per replicated write. Indices only grow
//! across resets and installs, so a ring slot left over from an older
//! log can never pass for a newer entry.

use std::collections::{BTreeSet, HashMap, HashSet};

use quarry_client::wire::{PgInfo, Ver};
use quarry_map::PgId;
use quarry_rados::{ObjectId, RadosError, Result};
use quarry_store::{Store, SysUpdates};
use serde::{Deserialize, Serialize};

/// Entries kept per PG; a member further behind is backfilled in full.
pub const LOG_MAX: u64 = 1000;

/// The per-PG record: persisted as the base of the log (see the module
/// docs), kept current in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgMeta {
    /// Info reported when peering.
    pub info: PgInfo,
    /// Absolute index of the next entry (indices only grow).
    pub head: u64,
    /// Valid entries: indices `head - count .. head`.
    pub count: u64,
}

fn meta_key(pg: PgId) -> String {
    format!("pg/{}.{}/meta", pg.pool, pg.seed)
}

fn log_prefix(pg: PgId) -> String {
    format!("pg/{}.{}/log/", pg.pool, pg.seed)
}

fn slot_key(pg: PgId, index: u64) -> String {
    format!("pg/{}.{}/log/{}", pg.pool, pg.seed, index % LOG_MAX)
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// PG version of the op.
    pub ver: Ver,
    /// Object it touched.
    pub oid: ObjectId,
    /// (client global id, tid) of the client op, if it had one.
    pub reqid: Option<(u64, u64)>,
    /// Whether the op succeeded (failed ops are logged too).
    pub ok: bool,
}

/// An entry as stored in its slot: the entry, its absolute index and the
/// log tail once it was appended (what [`load`] derives the meta from).
#[derive(Serialize, Deserialize)]
struct Stored {
    ver: Ver,
    oid: ObjectId,
    reqid: Option<(u64, u64)>,
    ok: bool,
    idx: u64,
    tail: Ver,
}

/// A decoded slot: the entry and, for entries written since the meta
/// stopped being rewritten per write, `(index, tail after it)`.
struct Slot {
    e: Entry,
    pos: Option<(u64, Ver)>,
}

/// Decode `b` as exactly one `T` (no trailing bytes: the stored formats
/// are prefixes of each other).
fn exact<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Option<T> {
    match postcard::take_from_bytes::<T>(b) {
        Ok((v, [])) => Some(v),
        _ => None,
    }
}

/// Decode a slot, newest format first; entries written before the index
/// was stored are `Entry`s, and before reqids were logged `(Ver, ObjectId)`
/// pairs (no reqid, result unknown: treated as failed, which only means a
/// resend is re-executed).
fn decode_slot(key: &str, b: &[u8]) -> Result<Slot> {
    if let Some(s) = exact::<Stored>(b) {
        return Ok(Slot {
            e: Entry {
                ver: s.ver,
                oid: s.oid,
                reqid: s.reqid,
                ok: s.ok,
            },
            pos: Some((s.idx, s.tail)),
        });
    }
    if let Some(e) = exact::<Entry>(b) {
        return Ok(Slot { e, pos: None });
    }
    let (ver, oid): (Ver, ObjectId) = exact(b).ok_or_else(|| corrupt(key, "undecodable entry"))?;
    Ok(Slot {
        e: Entry {
            ver,
            oid,
            reqid: None,
            ok: false,
        },
        pos: None,
    })
}

fn encode_stored(e: &Entry, idx: u64, tail: Ver) -> Result<Vec<u8>> {
    encode(&Stored {
        ver: e.ver,
        oid: e.oid.clone(),
        reqid: e.reqid,
        ok: e.ok,
        idx,
        tail,
    })
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> RadosError {
    RadosError::io(format!("corrupted pg metadata {what}: {e}"))
}

/// The base record (default when the PG was never seen here).
fn load_base(store: &Store, pg: PgId) -> Result<PgMeta> {
    match store.sys_get(&meta_key(pg))? {
        None => Ok(PgMeta::default()),
        Some(b) => exact(&b).ok_or_else(|| corrupt(&meta_key(pg), "undecodable record")),
    }
}

/// Every slot of a PG's ring, by slot number.
fn load_slots(store: &Store, pg: PgId) -> Result<HashMap<u64, Slot>> {
    let prefix = log_prefix(pg);
    let mut out = HashMap::new();
    for (key, b) in store.sys_scan(&prefix)? {
        let slot: u64 = key[prefix.len()..]
            .parse()
            .map_err(|_| corrupt(&key, "bad slot key"))?;
        out.insert(slot, decode_slot(&key, &b)?);
    }
    Ok(out)
}

/// Load a PG's meta: the base record, advanced over the entries appended
/// since it was written (exactly what the appends computed in memory).
pub fn load(store: &Store, pg: PgId) -> Result<PgMeta> {
    let base = load_base(store, pg)?;
    let slots = load_slots(store, pg)?;
    let mut newer: Vec<(u64, u64, Ver, Ver)> = slots
        .iter()
        .filter_map(|(slot, s)| match s.pos {
            Some((idx, tail)) if idx >= base.head => Some((idx, *slot, s.e.ver, tail)),
            _ => None,
        })
        .collect();
    let Some(&(last, _, last_ver, last_tail)) = newer.iter().max_by_key(|n| n.0) else {
        return Ok(base);
    };
    let head = last + 1;
    let appended = head - base.head;
    // The appends since the base are contiguous indices; the ring keeps the
    // newest LOG_MAX of them, each in its own slot.
    newer.sort_unstable_by_key(|n| n.0);
    let kept = appended.min(LOG_MAX);
    let contiguous = newer.len() as u64 == kept
        && newer
            .iter()
            .enumerate()
            .all(|(i, n)| n.0 == head - kept + i as u64 && n.1 == n.0 % LOG_MAX);
    if !contiguous {
        return Err(corrupt(
            &log_prefix(pg),
            format!(
                "{} entries after base index {} do not form the run ending at {last}",
                newer.len(),
                base.head
            ),
        ));
    }
    Ok(PgMeta {
        info: PgInfo {
            last_update: last_ver,
            log_tail: last_tail,
        },
        head,
        count: (base.count + appended).min(LOG_MAX),
    })
}

/// The first index a new log of `pg` may use: above every index stored in
/// its ring and `prev.head` (entries queued but maybe not committed yet).
fn next_base(store: &Store, pg: PgId, prev: &PgMeta) -> Result<u64> {
    let stored = load_slots(store, pg)?
        .values()
        .filter_map(|s| s.pos.map(|p| p.0 + 1))
        .max()
        .unwrap_or(0);
    Ok(stored.max(prev.head))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(|e| RadosError::io(format!("encode pg metadata: {e}")))
}

/// The meta after appending an entry for `ver` touching `oid`, and the
/// `sys` updates that record it (to commit with the write itself): the
/// first set if the op succeeds, the second if it fails.
/// `oldest`: the version of the entry the append overwrites when the log
/// is full, if the caller remembers it (else it is read from the store).
pub fn prepare(
    store: &Store,
    pg: PgId,
    meta: &PgMeta,
    ver: Ver,
    oid: &ObjectId,
    reqid: Option<(u64, u64)>,
    oldest: Option<Ver>,
) -> Result<(PgMeta, SysUpdates, SysUpdates)> {
    let mut m = meta.clone();
    let idx = m.head;
    let key = slot_key(pg, idx);
    if m.count >= LOG_MAX {
        // The slot we overwrite holds the oldest entry: it becomes the tail.
        match oldest {
            Some(v) => m.info.log_tail = v,
            None => {
                if let Some(b) = store.sys_get(&key)? {
                    m.info.log_tail = decode_slot(&key, &b)?.e.ver;
                }
            }
        }
    } else {
        m.count += 1;
    }
    m.head += 1;
    m.info.last_update = ver;
    let mut e = Entry {
        ver,
        oid: oid.clone(),
        reqid,
        ok: true,
    };
    let tail = m.info.log_tail;
    let ok = vec![(key.clone(), Some(encode_stored(&e, idx, tail)?))];
    e.ok = false;
    let failed = vec![(key, Some(encode_stored(&e, idx, tail)?))];
    Ok((m, ok, failed))
}

/// Append an entry on its own and make it durable; returns the new meta.
#[cfg(test)]
pub fn append(store: &Store, pg: PgId, meta: &PgMeta, ver: Ver, oid: &ObjectId) -> Result<PgMeta> {
    let (m, sys, _) = prepare(store, pg, meta, ver, oid, None, None)?;
    store.sys_put(sys)?;
    Ok(m)
}

/// The entries at indices `meta.head - meta.count .. meta.head`, oldest
/// first; `None` for a slot that holds nothing.
fn entries_of(store: &Store, pg: PgId, meta: &PgMeta) -> Result<Vec<Option<Entry>>> {
    let mut slots = load_slots(store, pg)?;
    let mut out = Vec::with_capacity(meta.count as usize);
    for idx in meta.head - meta.count..meta.head {
        let Some(s) = slots.remove(&(idx % LOG_MAX)) else {
            out.push(None);
            continue;
        };
        if let Some((stored, _)) = s.pos {
            if stored != idx {
                return Err(corrupt(
                    &slot_key(pg, idx),
                    format!("holds entry {stored}, expected {idx}"),
                ));
            }
        }
        out.push(Some(s.e));
    }
    Ok(out)
}

/// Every entry of the log, oldest first (for the duplicate-op index a
/// new primary rebuilds; missing slots are skipped).
pub fn all_entries(store: &Store, pg: PgId, meta: &PgMeta) -> Result<Vec<Entry>> {
    Ok(entries_of(store, pg, meta)?.into_iter().flatten().collect())
}

/// The store version of a write at PG version `ver`: every member derives
/// the same one, ordered like PG versions (epochs below 2^24, sequence
/// numbers within an interval below 2^40).
pub fn object_version(ver: Ver) -> u64 {
    (ver.epoch << 40) | (ver.seq & ((1 << 40) - 1))
}

/// Replace the meta (after recovery: the log restarts at `info.last_update`).
/// `prev`: the PG's current meta (its head may count entries not yet
/// committed).
pub fn reset(store: &Store, pg: PgId, prev: &PgMeta, info: PgInfo) -> Result<PgMeta> {
    let m = PgMeta {
        info,
        head: next_base(store, pg, prev)?,
        count: 0,
    };
    store.sys_put(vec![(meta_key(pg), Some(encode(&m)?))])?;
    Ok(m)
}

/// Replace the log by a copy of the authority's (`tail` and its entries
/// after it, oldest first, with their op ids), once recovery made this
/// member's objects the authority's: the member then recognises resends
/// of the ops those entries record (were its log only reset, a resend of
/// an op applied while it was away would run twice: a compare-and-swap
/// would fail its guard) and can serve as authority for the same span.
/// Only the newest [`LOG_MAX`] entries are kept. `prev` as for [`reset`].
pub fn install(
    store: &Store,
    pg: PgId,
    prev: &PgMeta,
    tail: Ver,
    entries: &[Entry],
) -> Result<PgMeta> {
    let skip = entries.len().saturating_sub(LOG_MAX as usize);
    let tail = if skip > 0 {
        entries[skip - 1].ver
    } else {
        tail
    };
    let entries = &entries[skip..];
    let n = entries.len() as u64;
    let first = next_base(store, pg, prev)?;
    let m = PgMeta {
        info: PgInfo {
            last_update: entries.last().map_or(tail, |e| e.ver),
            log_tail: tail,
        },
        head: first + n,
        count: n,
    };
    let mut sys: SysUpdates = Vec::with_capacity(entries.len() + 1);
    for (i, e) in entries.iter().enumerate() {
        let idx = first + i as u64;
        sys.push((slot_key(pg, idx), Some(encode_stored(e, idx, tail)?)));
    }
    // The base covers the entries just written (their indices are below
    // its head), so `load` derives nothing from them.
    sys.push((meta_key(pg), Some(encode(&m)?)));
    store.sys_put(sys)?;
    Ok(m)
}

/// Entries after `since`, oldest first, with their op ids; `None` if the
/// log cannot prove it holds all of them (`since` is neither the tail nor
/// one of its entries, e.g. the asking member diverged or fell too far
/// behind).
pub fn full_entries_since(
    store: &Store,
    pg: PgId,
    meta: &PgMeta,
    since: Ver,
) -> Result<Option<Vec<Entry>>> {
    let mut out = Vec::new();
    let mut found = since == meta.info.log_tail;
    for e in entries_of(store, pg, meta)? {
        let Some(e) = e else {
            return Ok(None);
        };
        if e.ver == since {
            found = true;
        } else if e.ver > since {
            out.push(e);
        }
    }
    Ok(found.then_some(out))
}

/// [`full_entries_since`] without the op ids (what peering compares).
pub fn entries_since(
    store: &Store,
    pg: PgId,
    meta: &PgMeta,
    since: Ver,
) -> Result<Option<Vec<(Ver, ObjectId)>>> {
    Ok(full_entries_since(store, pg, meta, since)?
        .map(|v| v.into_iter().map(|e| (e.ver, e.oid)).collect()))
}

/// Encode entries for the frame data of a `PgLog` reply or an `Activate`.
pub fn encode_entries(entries: &[Entry]) -> Result<Vec<u8>> {
    encode(&entries)
}

/// Decode what [`encode_entries`] produced.
pub fn decode_entries(b: &[u8]) -> Result<Vec<Entry>> {
    postcard::from_bytes(b).map_err(|e| corrupt("log entries from a peer", e))
}

/// A PG log as peering sees it: the tail and every entry after it
/// (oldest first), as [`entries_since`] returns them from the tail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogView {
    /// The log holds every entry after this version.
    pub tail: Ver,
    /// Entries after `tail`, oldest first.
    pub entries: Vec<(Ver, ObjectId)>,
}

impl LogView {
    /// The newest version the log records (its last update).
    pub fn head(&self) -> Ver {
        self.entries.last().map(|e| e.0).unwrap_or(self.tail)
    }
}

/// What a member must do to hold the authority's state (peering).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Catchup {
    /// The member's last update is the authority's tail or one of its
    /// entries: it only lacks the objects the authority wrote since.
    Behind(BTreeSet<ObjectId>),
    /// The member's log forked from the authority's after `common`, the
    /// newest version both histories pass through: its entries after it
    /// (`divergent`) were never in the authority's history, so were never
    /// acknowledged. `objects`: those divergent entries touched plus those
    /// the authority wrote after `common`; each must end as the
    /// authority's copy (removed where the authority has none).
    Diverged {
        /// Newest version both logs record.
        common: Ver,
        /// The member's entries after `common`, oldest first.
        divergent: Vec<(Ver, ObjectId)>,
        /// Objects to recover from the authority (or remove).
        objects: BTreeSet<ObjectId>,
    },
    /// The logs prove no common point (the member's entries reach back
    /// only to versions older than the authority's tail): backfill.
    Backfill,
}

/// Compare a member's log with the authority's.
///
/// A PG version `(interval epoch, seq)` is assigned once, by the one
/// primary of that interval, and every log is a chain of such versions
/// (a member accepts a version only after its predecessor, and peering
/// replaces a member's history only by the authority's), so two logs that
/// record the same version agree on everything up to it. The newest
/// member version the authority also records (an entry, or its tail: the
/// state it was recovered to) is therefore where the two histories fork.
pub fn compare(member: &LogView, auth: &LogView) -> Catchup {
    let known: HashSet<Ver> = std::iter::once(auth.tail)
        .chain(auth.entries.iter().map(|e| e.0))
        .collect();
    let auth_after = |c: Ver| {
        auth.entries
            .iter()
            .filter(move |e| e.0 > c)
            .map(|e| e.1.clone())
    };
    let head = member.head();
    if known.contains(&head) {
        return Catchup::Behind(auth_after(head).collect());
    }
    let fork = member
        .entries
        .iter()
        .rposition(|e| known.contains(&e.0))
        .map(|i| (member.entries[i].0, i + 1))
        .or_else(|| known.contains(&member.tail).then_some((member.tail, 0)));
    match fork {
        Some((common, first)) => {
            let divergent = member.entries[first..].to_vec();
            let mut objects: BTreeSet<ObjectId> = auth_after(common).collect();
            objects.extend(divergent.iter().map(|e| e.1.clone()));
            Catchup::Diverged {
                common,
                divergent,
                objects,
            }
        }
        None => Catchup::Backfill,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(epoch: u64, seq: u64) -> Ver {
        Ver { epoch, seq }
    }

    #[test]
    fn log_answers_only_what_it_can_prove() {
        let store = Store::open_memory().expect("store");
        let pg = PgId { pool: 1, seed: 3 };
        let mut m = load(&store, pg).expect("load");
        assert_eq!(m, PgMeta::default());
        for s in 1..=5 {
            m = append(&store, pg, &m, v(7, s), &ObjectId::new(1, format!("o{s}")))
                .expect("append");
        }
        assert_eq!(load(&store, pg).expect("reload"), m);
        assert_eq!(m.info.last_update, v(7, 5));
        // From the tail: everything.
        let all = entries_since(&store, pg, &m, Ver::default()).expect("read");
        assert_eq!(all.map(|e| e.len()), Some(5));
        // From an entry: only the newer ones.
        let some = entries_since(&store, pg, &m, v(7, 3))
            .expect("read")
            .expect("covered");
        assert_eq!(
            some.iter().map(|(ver, _)| ver.seq).collect::<Vec<_>>(),
            vec![4, 5]
        );
        // Up to date: nothing.
        assert_eq!(
            entries_since(&store, pg, &m, v(7, 5)).expect("read"),
            Some(vec![])
        );
        // A version that never was here (a diverged member): not provable.
        assert_eq!(entries_since(&store, pg, &m, v(6, 9)).expect("read"), None);
        // After a reset the log restarts at the authority's version.
        let m = reset(
            &store,
            pg,
            &m,
            PgInfo {
                last_update: v(9, 1),
                log_tail: v(9, 1),
            },
        )
        .expect("reset");
        assert_eq!(
            entries_since(&store, pg, &m, v(9, 1)).expect("read"),
            Some(vec![])
        );
        assert_eq!(entries_since(&store, pg, &m, v(7, 3)).expect("read"), None);
    }

    #[test]
    fn installed_copy_of_the_authoritys_log() {
        let store = Store::open_memory().expect("store");
        let (pa, pm) = (PgId { pool: 1, seed: 0 }, PgId { pool: 1, seed: 1 });
        let mut a = reset(
            &store,
            pa,
            &PgMeta::default(),
            PgInfo {
                last_update: v(2, 9),
                log_tail: v(2, 9),
            },
        )
        .expect("reset");
        for s in 1..=4 {
            let (m, sys, _) = prepare(
                &store,
                pa,
                &a,
                v(3, s),
                &ObjectId::new(1, format!("o{s}")),
                Some((7, s)),
                None,
            )
            .expect("prepare");
            store.sys_put(sys).expect("put");
            a = m;
        }
        let full = full_entries_since(&store, pa, &a, a.info.log_tail)
            .expect("read")
            .expect("whole log");
        assert_eq!(full.len(), 4);
        // What a PgLog reply carries survives the trip.
        let wire = decode_entries(&encode_entries(&full).expect("encode")).expect("decode");
        assert_eq!(wire, full);
        // The member's stale log (a divergent entry) is replaced.
        let mut m = PgMeta::default();
        m = append(&store, pm, &m, v(2, 10), &ObjectId::new(1, "lost")).expect("append");
        assert_eq!(m.info.last_update, v(2, 10));
        let m = install(&store, pm, &m, a.info.log_tail, &wire).expect("install");
        assert_eq!(m.info, a.info);
        assert_eq!(load(&store, pm).expect("reload"), m);
        let copy = all_entries(&store, pm, &m).expect("entries");
        assert_eq!(copy, full);
        assert_eq!(copy[2].reqid, Some((7, 3)));
        // The copy answers peering exactly as the authority's log does.
        assert_eq!(
            entries_since(&store, pm, &m, v(3, 2)).expect("read"),
            entries_since(&store, pa, &a, v(3, 2)).expect("read")
        );
        // More entries than a log holds: the newest LOG_MAX are kept and
        // the tail moves to the last one dropped.
        let many: Vec<Entry> = (1..=LOG_MAX + 5)
            .map(|s| Entry {
                ver: v(4, s),
                oid: ObjectId::new(1, "x"),
                reqid: Some((9, s)),
                ok: true,
            })
            .collect();
        let m = install(&store, pm, &m, v(3, 4), &many).expect("install");
        assert_eq!(m.count, LOG_MAX);
        assert_eq!(m.info.log_tail, v(4, 5));
        assert_eq!(m.info.last_update, v(4, LOG_MAX + 5));
        // Appending to an installed log goes on from its head.
        let m2 = append(&store, pm, &m, v(5, 1), &ObjectId::new(1, "y")).expect("append");
        assert_eq!(m2.info.log_tail, v(4, 6));
        assert_eq!(load(&store, pm).expect("reload"), m2);
        let e = entries_since(&store, pm, &m2, v(4, LOG_MAX + 5))
            .expect("read")
            .expect("covered");
        assert_eq!(e, vec![(v(5, 1), ObjectId::new(1, "y"))]);
    }

    #[test]
    fn log_is_bounded_and_moves_its_tail() {
        let store = Store::open_memory().expect("store");
        let pg = PgId { pool: 2, seed: 0 };
        let mut m = PgMeta::default();
        for s in 1..=LOG_MAX + 10 {
            m = append(&store, pg, &m, v(1, s), &ObjectId::new(2, "x")).expect("append");
        }
        assert_eq!(m.count, LOG_MAX);
        assert_eq!(m.info.log_tail, v(1, 10));
        assert_eq!(load(&store, pg).expect("reload"), m);
        assert_eq!(entries_since(&store, pg, &m, v(1, 5)).expect("read"), None);
        let e = entries_since(&store, pg, &m, v(1, 10))
            .expect("read")
            .expect("covered");
        assert_eq!(e.len() as u64, LOG_MAX);
    }

    /// Append `n` entries at versions `(epoch, first..)` in commits of 100
    /// (what a busy PG's writes amount to), remembering each version.
    fn append_many(
        store: &Store,
        pg: PgId,
        m: &mut PgMeta,
        vers: &mut Vec<Ver>,
        epoch: u64,
        first: u64,
        n: u64,
    ) {
        let mut sys = Vec::new();
        for s in first..first + n {
            let oldest = (m.count >= LOG_MAX).then(|| vers[vers.len() - LOG_MAX as usize]);
            let oid = ObjectId::new(1, format!("o{}", s % 7));
            let (next, kv, _) =
                prepare(store, pg, m, v(epoch, s), &oid, Some((3, s)), oldest).expect("prepare");
            *m = next;
            vers.push(v(epoch, s));
            sys.extend(kv);
            if sys.len() == 100 {
                store.sys_put(std::mem::take(&mut sys)).expect("put");
            }
        }
        store.sys_put(sys).expect("put");
    }

    /// What a restarted OSD loads: the same meta and entries it had.
    fn assert_reloads(dir: &std::path::Path, pg: PgId, m: &PgMeta) -> Store {
        let store = Store::open(dir).expect("reopen");
        let loaded = load(&store, pg).expect("load");
        assert_eq!(&loaded, m);
        let entries = all_entries(&store, pg, &loaded).expect("entries");
        assert_eq!(entries.len() as u64, m.count);
        assert_eq!(
            entries.last().map_or(m.info.log_tail, |e| e.ver),
            m.info.last_update
        );
        store
    }

    #[test]
    fn restart_loads_the_same_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pg = PgId { pool: 1, seed: 5 };
        let mut vers = Vec::new();
        let mut m = PgMeta::default();
        let store = Store::open(dir.path()).expect("open");
        // A log written before entries stored their index: a meta record
        // per write and plain entries.
        for s in 1..=3u64 {
            let e = Entry {
                ver: v(1, s),
                oid: ObjectId::new(1, "old"),
                reqid: Some((2, s)),
                ok: true,
            };
            m.head += 1;
            m.count += 1;
            m.info.last_update = e.ver;
            vers.push(e.ver);
            store
                .sys_put(vec![
                    (slot_key(pg, s - 1), Some(encode(&e).expect("encode"))),
                    (meta_key(pg), Some(encode(&m).expect("encode"))),
                ])
                .expect("put");
        }
        drop(store);
        let store = assert_reloads(dir.path(), pg, &m);
        // New appends on top of it, wrapping the ring twice over.
        append_many(&store, pg, &mut m, &mut vers, 2, 1, 2 * LOG_MAX + 37);
        assert_eq!(m.count, LOG_MAX);
        assert_eq!(m.info.log_tail, vers[vers.len() - LOG_MAX as usize - 1]);
        drop(store);
        let store = assert_reloads(dir.path(), pg, &m);
        let dups = all_entries(&store, pg, &m).expect("entries");
        assert_eq!(dups[0].reqid, Some((3, LOG_MAX + 38)));
        // Reset by recovery, then a few writes: the older incarnation's
        // slots (higher slot numbers) must not count.
        let mut m = reset(
            &store,
            pg,
            &m,
            PgInfo {
                last_update: v(3, 0),
                log_tail: v(3, 0),
            },
        )
        .expect("reset");
        drop(store);
        let store = assert_reloads(dir.path(), pg, &m);
        let mut vers = Vec::new();
        append_many(&store, pg, &mut m, &mut vers, 4, 1, 5);
        drop(store);
        let store = assert_reloads(dir.path(), pg, &m);
        // An installed copy of an authority's log, then more writes.
        let copied: Vec<Entry> = (1..=20)
            .map(|s| Entry {
                ver: v(5, s),
                oid: ObjectId::new(1, "c"),
                reqid: None,
                ok: s % 2 == 0,
            })
            .collect();
        let mut m = install(&store, pg, &m, v(4, 5), &copied).expect("install");
        drop(store);
        let store = assert_reloads(dir.path(), pg, &m);
        assert_eq!(all_entries(&store, pg, &m).expect("entries"), copied);
        let mut vers = copied.iter().map(|e| e.ver).collect();
        append_many(&store, pg, &mut m, &mut vers, 6, 1, LOG_MAX);
        assert_eq!(m.info.log_tail, v(5, 20));
        drop(store);
        let store = assert_reloads(dir.path(), pg, &m);
        // A ring with a hole where an entry should be is refused, not
        // loaded as a shorter log.
        store
            .sys_put(vec![(slot_key(pg, m.head - 3), None)])
            .expect("put");
        let err = load(&store, pg).expect_err("a gap is corruption");
        assert!(err.to_string().contains("corrupted pg metadata"), "{err}");
    }

    fn view(tail: Ver, entries: &[(Ver, &str)]) -> LogView {
        LogView {
            tail,
            entries: entries
                .iter()
                .map(|(ver, n)| (*ver, ObjectId::new(1, *n)))
                .collect(),
        }
    }

    fn objs(names: &[&str]) -> BTreeSet<ObjectId> {
        names.iter().map(|n| ObjectId::new(1, *n)).collect()
    }

    #[test]
    fn compare_member_behind_or_up_to_date() {
        let auth = view(v(3, 2), &[(v(3, 3), "a"), (v(5, 1), "b"), (v(5, 2), "c")]);
        // A prefix of the authority's history: only what came later.
        let m = view(v(1, 0), &[(v(3, 2), "z"), (v(3, 3), "a")]);
        assert_eq!(compare(&m, &auth), Catchup::Behind(objs(&["b", "c"])));
        // At the authority's tail (e.g. its log was reset there).
        let m = view(v(3, 2), &[]);
        assert_eq!(compare(&m, &auth), Catchup::Behind(objs(&["a", "b", "c"])));
        // Same head: nothing to do.
        let m = view(v(3, 2), &[(v(3, 3), "a"), (v(5, 1), "b"), (v(5, 2), "c")]);
        assert_eq!(compare(&m, &auth), Catchup::Behind(objs(&[])));
    }

    #[test]
    fn compare_finds_divergent_entries_after_the_fork() {
        // The authority went on in interval 5 after (3, 4); the member (the
        // old primary of interval 3) applied (3, 5) and (3, 6) alone.
        let auth = view(
            v(0, 0),
            &[
                (v(3, 3), "a"),
                (v(3, 4), "b"),
                (v(5, 1), "c"),
                (v(5, 2), "a"),
            ],
        );
        let m = view(
            v(0, 0),
            &[
                (v(3, 3), "a"),
                (v(3, 4), "b"),
                (v(3, 5), "d"),
                (v(3, 6), "e"),
            ],
        );
        assert_eq!(
            compare(&m, &auth),
            Catchup::Diverged {
                common: v(3, 4),
                divergent: vec![
                    (v(3, 5), ObjectId::new(1, "d")),
                    (v(3, 6), ObjectId::new(1, "e"))
                ],
                objects: objs(&["a", "c", "d", "e"]),
            }
        );
        // A divergent head newer than everything the authority has (no
        // write in the new interval yet): still divergent, not "ahead".
        let auth = view(v(0, 0), &[(v(3, 3), "a"), (v(3, 4), "b")]);
        assert_eq!(
            compare(&m, &auth),
            Catchup::Diverged {
                common: v(3, 4),
                divergent: vec![
                    (v(3, 5), ObjectId::new(1, "d")),
                    (v(3, 6), ObjectId::new(1, "e"))
                ],
                objects: objs(&["d", "e"]),
            }
        );
        // Every entry of the member diverged; the fork is its tail, which
        // the authority's history passes through.
        let auth = view(v(2, 7), &[(v(4, 1), "x")]);
        let m = view(v(2, 7), &[(v(3, 1), "y"), (v(3, 2), "y")]);
        assert_eq!(
            compare(&m, &auth),
            Catchup::Diverged {
                common: v(2, 7),
                divergent: vec![
                    (v(3, 1), ObjectId::new(1, "y")),
                    (v(3, 2), ObjectId::new(1, "y"))
                ],
                objects: objs(&["x", "y"]),
            }
        );
    }

    #[test]
    fn compare_without_a_provable_fork_backfills() {
        // The authority's log no longer reaches back to the fork.
        let auth = view(v(5, 900), &[(v(5, 901), "a"), (v(5, 902), "b")]);
        let m = view(v(0, 0), &[(v(3, 4), "b"), (v(3, 5), "d")]);
        assert_eq!(compare(&m, &auth), Catchup::Backfill);
        // A member behind the authority's tail.
        let m = view(v(0, 0), &[(v(5, 2), "b")]);
        assert_eq!(compare(&m, &auth), Catchup::Backfill);
    }

    #[test]
    fn compare_on_logs_from_the_store() {
        // The views peering builds: `entries_since` from each log's tail.
        let store = Store::open_memory().expect("store");
        let (pa, pm) = (PgId { pool: 1, seed: 0 }, PgId { pool: 1, seed: 1 });
        let (mut a, mut m) = (PgMeta::default(), PgMeta::default());
        for s in 1..=3 {
            let o = ObjectId::new(1, format!("o{s}"));
            a = append(&store, pa, &a, v(2, s), &o).expect("append");
            m = append(&store, pm, &m, v(2, s), &o).expect("append");
        }
        m = append(&store, pm, &m, v(2, 4), &ObjectId::new(1, "lost")).expect("append");
        a = append(&store, pa, &a, v(6, 1), &ObjectId::new(1, "o1")).expect("append");
        let load_view = |pg, meta: &PgMeta| LogView {
            tail: meta.info.log_tail,
            entries: entries_since(&store, pg, meta, meta.info.log_tail)
                .expect("read")
                .expect("whole log"),
        };
        let (av, mv) = (load_view(pa, &a), load_view(pm, &m));
        assert_eq!(mv.head(), m.info.last_update);
        assert_eq!(
            compare(&mv, &av),
            Catchup::Diverged {
                common: v(2, 3),
                divergent: vec![(v(2, 4), ObjectId::new(1, "lost"))],
                objects: objs(&["lost", "o1"]),
            }
        );
    }
}
