//! The OSD protocol: message kinds and bodies carried in `quarry-proto` frames.
//!
//! Every connection starts with a handshake (`HELLO` → `CHALLENGE` → `AUTH`
//! → `AUTH_RESULT`), then carries `REQUEST` frames answered by `RESPONSE`
//! frames with the same request id, many in flight. Object bytes (write
//! payloads, read results, recovery pushes) travel in the frame's raw data
//! part: bodies carry only their lengths, and receivers slice the frame's
//! data (`Bytes::slice`, no copy) to rebuild them.

use bytes::{Bytes, BytesMut};
use quarry_common::Errno;
use quarry_map::{Epoch, PgId};
use quarry_rados::{
    ListEntry, NotifyResult, ObjectId, Op, OpOutput, OpReply, OpRequest, PoolId, PoolStat,
    RadosError, Watcher,
};
use serde::{Deserialize, Serialize};

/// Client → OSD: ticket and client nonce.
pub const K_HELLO: u8 = 1;
/// OSD → client: server nonce and the server's proof of the session key.
pub const K_CHALLENGE: u8 = 2;
/// Client → OSD: the client's proof of the session key.
pub const K_AUTH: u8 = 3;
/// OSD → client: accepted, or refused with a reason.
pub const K_AUTH_RESULT: u8 = 4;
/// A request (body [`Request`]).
pub const K_REQUEST: u8 = 10;
/// A response (body [`Response`]).
pub const K_RESPONSE: u8 = 11;
/// OSD → client, unsolicited: an event for a watch (body [`Event`]).
pub const K_EVENT: u8 = 12;

/// An unsolicited message from an OSD to a client.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Event {
    /// A notification for watch `cookie` on `oid`; answer with
    /// [`Request::NotifyAck`] to the object's primary.
    Notify {
        /// The watched object.
        oid: ObjectId,
        /// Notification id (unique per primary OSD).
        notify_id: u64,
        /// The watch it is for.
        cookie: u64,
        /// Instance id of the notifier.
        notifier: u64,
        /// The notifier's payload.
        payload: Bytes,
    },
}

/// First handshake message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    /// The ticket the monitor issued (opaque, verified by the OSD).
    pub ticket: Vec<u8>,
    /// Fresh random nonce.
    pub client_nonce: [u8; 16],
    /// Whether the client signs its frames after the handshake
    /// (`cephx_sign_messages`); covered by both proofs.
    pub sign: bool,
}

/// Second handshake message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Challenge {
    /// Fresh random nonce.
    pub server_nonce: [u8; 16],
    /// `server_session_proof(session_key, client_nonce, server_nonce,
    /// mode)`: the server could open the ticket, so it holds the service
    /// key (mutual auth).
    pub server_proof: [u8; 32],
    /// Whether the OSD signs its frames after the handshake.
    pub sign: bool,
}

/// Third handshake message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthProof {
    /// `session_proof(session_key, client_nonce, server_nonce, mode)`.
    pub client_proof: [u8; 32],
}

/// Handshake outcome; `Err` carries the reason shown to the user.
pub type AuthResult = Result<(), WireError>;

/// A PG log version: (epoch of the interval that wrote it, sequence).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ver {
    /// Map epoch at which the writing primary went active.
    pub epoch: Epoch,
    /// Sequence within that interval, from 1.
    pub seq: u64,
}

impl std::fmt::Display for Ver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}'{}", self.epoch, self.seq)
    }
}

/// What a PG member reports when the primary peers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgInfo {
    /// Newest write this member's log records.
    pub last_update: Ver,
    /// Its log holds every entry after `log_tail` (entries `> log_tail`).
    pub log_tail: Ver,
}

/// A request on an OSD connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Client op on an object.
    Op {
        /// Sender's map epoch.
        epoch: Epoch,
        /// The client's id for this op, the same on every resend (0: none).
        /// With the client's global id it names the op in the PG log, so a
        /// resend of an op that was applied gets its original success
        /// instead of being applied again.
        tid: u64,
        /// The request with write payloads emptied.
        req: OpRequest,
        /// Payload lengths (see [`strip_request`]).
        lens: Vec<u64>,
    },
    /// Head objects of one PG (primary only).
    ListPg {
        /// Sender's map epoch.
        epoch: Epoch,
        /// The PG.
        pg: PgId,
        /// Namespace filter.
        namespace: Option<String>,
    },
    /// Space used by these PGs of a pool (primary only).
    PoolStat {
        /// Sender's map epoch.
        epoch: Epoch,
        /// The pool.
        pool: PoolId,
        /// PG seeds to count.
        seeds: Vec<u32>,
    },
    /// Register a watch (primary only; lives with this connection).
    Watch {
        /// Sender's map epoch.
        epoch: Epoch,
        /// Watched object.
        oid: ObjectId,
        /// The client's cookie.
        cookie: u64,
    },
    /// Remove a watch.
    Unwatch {
        /// Sender's map epoch.
        epoch: Epoch,
        /// Watched object.
        oid: ObjectId,
        /// The cookie.
        cookie: u64,
    },
    /// Watches on an object.
    ListWatchers {
        /// Sender's map epoch.
        epoch: Epoch,
        /// The object.
        oid: ObjectId,
    },
    /// Primary → replica: apply a write at PG version `ver`.
    RepOp {
        /// The PG.
        pg: PgId,
        /// Interval epoch of the sending primary.
        epoch: Epoch,
        /// Version assigned by the primary.
        ver: Ver,
        /// The primary's previous version in this PG: the replica applies
        /// this op only right after that one (log order), whatever order
        /// the pipelined RepOps arrive in.
        prev: Ver,
        /// (client global id, tid) of a client op, for the log entry.
        reqid: Option<(u64, u64)>,
        /// The request with write payloads emptied.
        req: OpRequest,
        /// Payload lengths.
        lens: Vec<u64>,
    },
    /// Primary → member: report your PG info (peering).
    PgQuery {
        /// The PG.
        pg: PgId,
        /// Epoch of the peering primary; older RepOps are refused after this.
        epoch: Epoch,
    },
    /// Log entries after `since` (`None` in the reply if not covered).
    PgLog {
        /// The PG.
        pg: PgId,
        /// Exclusive lower bound.
        since: Ver,
    },
    /// Every head object this member holds in the PG.
    PgObjects {
        /// The PG.
        pg: PgId,
    },
    /// An object's complete state (the store's export: head, clones,
    /// versions, omap, xattrs) in the frame data; [`Resp::Export`] says
    /// whether it exists.
    Pull {
        /// The object.
        oid: ObjectId,
    },
    /// Make an object exactly the exported state in the frame data
    /// (`exists == false`: remove every instance of it).
    Push {
        /// The PG.
        pg: PgId,
        /// Interval epoch of the sending primary.
        epoch: Epoch,
        /// The object.
        oid: ObjectId,
        /// Whether the object exists (the export is the frame data).
        exists: bool,
    },
    /// Peering done: the member now equals the authority at `last_update`.
    Activate {
        /// The PG.
        pg: PgId,
        /// Interval epoch.
        epoch: Epoch,
        /// The member's new info.
        info: PgInfo,
    },
    // New variants go last: postcard numbers variants by position.
    /// Notify every watch of `oid` and collect acks (primary only).
    Notify {
        /// Sender's map epoch.
        epoch: Epoch,
        /// The object.
        oid: ObjectId,
        /// Payload for the watchers.
        payload: Bytes,
        /// How long to wait for acks, in milliseconds.
        timeout_ms: u64,
    },
    /// A watcher's answer to [`Event::Notify`].
    NotifyAck {
        /// Sender's map epoch.
        epoch: Epoch,
        /// The object.
        oid: ObjectId,
        /// From the event.
        notify_id: u64,
        /// The acking watch.
        cookie: u64,
        /// Reply payload.
        payload: Bytes,
    },
    /// Primary → replica: [`Request::RepOp`] with the modification time
    /// the primary gave the write, so every copy carries the same mtime
    /// (Ceph carries the client's in the op). Primaries send this one; a
    /// replica still applies a plain `RepOp` (with its own clock).
    RepOpStamped {
        /// The fields of a `RepOp`.
        op: RepOpFields,
        /// Modification time, ns since the Unix epoch.
        mtime_ns: u64,
    },
    /// Client → primary: deep-scrub a PG (compare every object's copies,
    /// block checksums included); with `repair`, make the damaged or
    /// differing copies the authoritative one. Answered with [`Resp::Scrub`].
    Scrub {
        /// Sender's map epoch.
        epoch: Epoch,
        /// The PG.
        pg: PgId,
        /// Repair what the scrub finds.
        repair: bool,
    },
    /// Primary → member: the digest of your copy of `oid`, once every op of
    /// the PG up to `upto` is applied here. Answered with [`Resp::Digest`].
    ScrubObject {
        /// The PG.
        pg: PgId,
        /// Interval epoch of the scrubbing primary.
        epoch: Epoch,
        /// The object.
        oid: ObjectId,
        /// The primary's newest version when it took the PG's write lock.
        upto: Ver,
    },
    /// Client → primary: what the PG's last deep scrub there left
    /// inconsistent (`rados list-inconsistent-obj`). Answered with
    /// [`Resp::Scrub`]; `ENOENT` if it has not scrubbed the PG since it
    /// became its primary.
    ScrubResult {
        /// Sender's map epoch.
        epoch: Epoch,
        /// The PG.
        pg: PgId,
    },
}

impl Request {
    /// A `RepOp` or `RepOpStamped` as its fields and the mtime it carries
    /// (`None` for a plain `RepOp`); any other request is given back.
    pub fn into_rep_op(self) -> Result<(RepOpFields, Option<u64>), Box<Request>> {
        match self {
            Request::RepOp {
                pg,
                epoch,
                ver,
                prev,
                reqid,
                req,
                lens,
            } => Ok((
                RepOpFields {
                    pg,
                    epoch,
                    ver,
                    prev,
                    reqid,
                    req,
                    lens,
                },
                None,
            )),
            Request::RepOpStamped { op, mtime_ns } => Ok((op, Some(mtime_ns))),
            other => Err(Box::new(other)),
        }
    }
}

/// What a [`Request::RepOp`] carries (see there).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepOpFields {
    /// The PG.
    pub pg: PgId,
    /// Interval epoch of the sending primary.
    pub epoch: Epoch,
    /// Version assigned by the primary.
    pub ver: Ver,
    /// The primary's previous version in this PG.
    pub prev: Ver,
    /// (client global id, tid) of a client op, for the log entry.
    pub reqid: Option<(u64, u64)>,
    /// The request with write payloads emptied.
    pub req: OpRequest,
    /// Payload lengths.
    pub lens: Vec<u64>,
}

/// Successful responses.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Resp {
    /// Nothing to say.
    Unit,
    /// An op's reply with read payloads emptied, and their lengths.
    Op(OpReply, Vec<u64>),
    /// Objects.
    List(Vec<ListEntry>),
    /// Pool usage.
    Stat(PoolStat),
    /// A watch cookie.
    Cookie(u64),
    /// Watchers.
    Watchers(Vec<Watcher>),
    /// PG info.
    Info(PgInfo),
    /// Log entries, `None` when the log does not reach back far enough.
    Log(Option<Vec<(Ver, ObjectId)>>),
    /// Object ids.
    Objects(Vec<ObjectId>),
    /// Whether the pulled object exists; its export is the frame data.
    Export(bool),
    // New variants go last (see `Request`).
    /// What a notification collected.
    Notified(NotifyResult),
    /// A PG's deep scrub (and repair) result.
    Scrub(ScrubReport),
    /// One copy's digest (`None`: the object does not exist there).
    Digest(Option<ObjDigest>),
}

/// One copy of an object as a deep scrub compares it (see
/// `quarry_store::ExportDigest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjDigest {
    /// crc32c of the object's complete export.
    pub crc: u32,
    /// Export length in bytes.
    pub len: u64,
    /// Data blocks failing their stored checksum on this copy.
    pub bad_blocks: u32,
}

/// What a deep scrub of one PG found (and, with repair, fixed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubReport {
    /// The PG.
    pub pg: Option<PgId>,
    /// Epoch of the interval the scrub ran in.
    pub epoch: Epoch,
    /// OSDs whose copies were compared, primary first.
    pub acting: Vec<u32>,
    /// Objects compared.
    pub objects: u64,
    /// Objects whose copies disagree or are damaged.
    pub inconsistent: Vec<InconsistentObject>,
    /// Copies rewritten from the authoritative one (repair only).
    pub repaired: u64,
}

/// An object a deep scrub found damaged or differing between copies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InconsistentObject {
    /// Namespace.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// One line per bad copy: which OSD and what is wrong with it.
    pub errors: Vec<String>,
    /// The OSD whose copy was taken as authoritative (`None`: no good copy).
    pub auth: Option<u32>,
    /// The OSDs whose copies are bad (one scrub error each).
    pub bad_copies: Vec<u32>,
    /// Whether repair rewrote every bad copy.
    pub repaired: bool,
    /// Every acting member's copy, as the scrub saw it.
    pub copies: Vec<ScrubCopy>,
}

/// One OSD's copy of an object in a deep scrub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubCopy {
    /// The OSD.
    pub osd: u32,
    /// crc32c of the copy's export (`None`: absent or unreadable there).
    pub digest: Option<u32>,
    /// What is wrong with it: `read_error` (unreadable, or blocks failing
    /// their checksum), `missing`, `digest_mismatch` (differs from the
    /// authoritative copy), `unexpected_copy` (present where the
    /// authoritative copy says absent). Empty for a good copy.
    pub errors: Vec<String>,
}

/// A response body.
pub type Response = Result<Resp, WireError>;

/// An error carried on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg} (errno {errno})")]
pub struct WireError {
    /// Positive errno.
    pub errno: i32,
    /// Explanation.
    pub msg: String,
    /// Set when the receiver is not the right target at its map: resend
    /// after fetching at least this epoch (Ceph's "retry with newer map").
    pub retry_epoch: Option<Epoch>,
}

impl WireError {
    /// An errno error.
    pub fn new(errno: Errno, msg: impl Into<String>) -> Self {
        WireError {
            errno: errno.code(),
            msg: msg.into(),
            retry_epoch: None,
        }
    }

    /// "Not the primary / not active: retry with map epoch `e`".
    pub fn retry(epoch: Epoch, msg: impl Into<String>) -> Self {
        WireError {
            errno: Errno::EAGAIN.code(),
            msg: msg.into(),
            retry_epoch: Some(epoch),
        }
    }

    /// Convert to the object layer's error.
    pub fn to_rados(&self) -> RadosError {
        RadosError::new(Errno::from_code(self.errno), self.msg.clone())
    }
}

impl From<RadosError> for WireError {
    fn from(e: RadosError) -> Self {
        WireError::new(e.errno, e.context)
    }
}

/// The payload slots of a request, in a fixed order (both ends agree).
fn request_slots(req: &mut OpRequest) -> Vec<&mut Bytes> {
    let mut v = Vec::new();
    for op in &mut req.ops {
        match op {
            Op::Write { data, .. } | Op::WriteFull(data) => v.push(data),
            Op::SetXattr(_, x) => v.push(x),
            Op::OmapSetVals(m) => v.extend(m.values_mut()),
            _ => {}
        }
    }
    v
}

/// The payload slots of a reply, in a fixed order.
fn reply_slots(rep: &mut OpReply) -> Vec<&mut Bytes> {
    let mut v = Vec::new();
    for out in &mut rep.outputs {
        match out {
            OpOutput::Data(b) | OpOutput::Sparse(_, b) => v.push(b),
            OpOutput::Xattrs(m) | OpOutput::Omap(m, _) => v.extend(m.values_mut()),
            _ => {}
        }
    }
    v
}

fn strip(slots: Vec<&mut Bytes>) -> (Vec<u64>, Bytes) {
    let parts: Vec<Bytes> = slots.into_iter().map(std::mem::take).collect();
    let lens = parts.iter().map(|p| p.len() as u64).collect();
    (lens, concat(parts))
}

fn fill(slots: Vec<&mut Bytes>, lens: &[u64], data: &Bytes) -> Result<(), WireError> {
    if slots.len() != lens.len() {
        return Err(WireError::new(
            Errno::EINVAL,
            format!(
                "malformed message: {} payload slots but {} lengths",
                slots.len(),
                lens.len()
            ),
        ));
    }
    let mut off = 0usize;
    for (slot, &len) in slots.into_iter().zip(lens) {
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| off.checked_add(l))
            .filter(|&e| e <= data.len())
            .ok_or_else(|| {
                WireError::new(
                    Errno::EINVAL,
                    "malformed message: payload lengths exceed data",
                )
            })?;
        *slot = data.slice(off..end);
        off = end;
    }
    if off != data.len() {
        return Err(WireError::new(
            Errno::EINVAL,
            "malformed message: trailing payload bytes",
        ));
    }
    Ok(())
}

/// Move payloads out of a request: (emptied request, lengths, bytes).
/// No copy when the request carries a single payload (the usual write).
pub fn strip_request(mut req: OpRequest) -> (OpRequest, Vec<u64>, Bytes) {
    let (lens, data) = strip(request_slots(&mut req));
    (req, lens, data)
}

/// Put payloads back into a request received with `lens` and frame `data`.
pub fn fill_request(req: &mut OpRequest, lens: &[u64], data: &Bytes) -> Result<(), WireError> {
    fill(request_slots(req), lens, data)
}

/// Move payloads out of a reply.
pub fn strip_reply(mut rep: OpReply) -> (OpReply, Vec<u64>, Bytes) {
    let (lens, data) = strip(reply_slots(&mut rep));
    (rep, lens, data)
}

/// Put payloads back into a reply.
pub fn fill_reply(rep: &mut OpReply, lens: &[u64], data: &Bytes) -> Result<(), WireError> {
    fill(reply_slots(rep), lens, data)
}

fn concat(parts: Vec<Bytes>) -> Bytes {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_default();
    }
    let total = parts.iter().map(Bytes::len).sum();
    let mut b = BytesMut::with_capacity(total);
    for p in parts {
        b.extend_from_slice(&p);
    }
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn payloads_roundtrip() {
        let mut m = BTreeMap::new();
        m.insert("k".to_string(), Bytes::from_static(b"vv"));
        let req = OpRequest::new(ObjectId::new(1, "o"))
            .op(Op::Write {
                off: 3,
                data: Bytes::from_static(b"abc"),
            })
            .op(Op::SetXattr("x".into(), Bytes::from_static(b"1")))
            .op(Op::OmapSetVals(m));
        let (mut stripped, lens, data) = strip_request(req.clone());
        assert_eq!(lens, vec![3, 1, 2]);
        assert_ne!(stripped, req);
        fill_request(&mut stripped, &lens, &data).expect("fill");
        assert_eq!(stripped, req);
        assert!(fill_request(&mut stripped, &[1, 1], &data).is_err());
        assert!(fill_request(&mut stripped, &[3, 1, 9], &data).is_err());
    }
}
