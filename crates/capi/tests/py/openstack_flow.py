"""What OpenStack's Glance and Cinder RBD drivers do through Debian's
python3-rbd/python3-rados, run against Quarry's librbd/librados (found
through LD_LIBRARY_PATH): a golden image, its protected snapshot, a clone
per volume, dependency checks with list_children, deferred deletion through
the trash, opening by id, and the errors the drivers catch.
Usage: openstack_flow.py POOL [QUOTA_MAX_BYTES]. Prints "python OK"."""
import sys

import rados
import rbd

pool = sys.argv[1]
# The pool's byte quota, which Cinder reports as the backend's capacity.
quota_max_bytes = int(sys.argv[2]) if len(sys.argv) > 2 else 0
cluster = rados.Rados(conffile="")
cluster.connect()
io = cluster.open_ioctx(pool)
r = rbd.RBD()
feat = rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK

# Glance: upload an image, snapshot and protect it.
data = bytes((i * 7) % 251 for i in range(1 << 20))
r.create(io, "glance-img", 8 << 20, old_format=False, features=feat)
with rbd.Image(io, "glance-img") as img:
    img.write(data, 0)
    img.create_snap("snap")
    img.protect_snap("snap")
    assert img.is_protected_snap("snap")

# Cinder: a volume per VM, cloned from the snapshot.
for v in ("vol-1", "vol-2"):
    r.clone(io, "glance-img", "snap", io, v, features=feat)
assert sorted(r.list(io)) == ["glance-img", "vol-1", "vol-2"], r.list(io)
with rbd.Image(io, "vol-1") as vol:
    assert vol.read(0, len(data)) == data, "clone reads the parent's data"
    assert vol.parent_info() == (pool, "glance-img", "snap"), vol.parent_info()

# Deleting the image is refused while clones depend on it: drivers check
# list_children first.
with rbd.Image(io, "glance-img", snapshot="snap") as snap:
    kids = sorted(snap.list_children())
    assert kids == [(pool, "vol-1"), (pool, "vol-2")], kids

# Deferred deletion: a volume goes to the trash, then out of the listing
# but still listed (trash=True) as a child.
r.trash_move(io, "vol-2", 0)
assert sorted(r.list(io)) == ["glance-img", "vol-1"], r.list(io)
entries = list(r.trash_list(io))
assert [e["name"] for e in entries] == ["vol-2"], entries
vid = entries[0]["id"]
assert r.trash_get(io, vid)["name"] == "vol-2"
with rbd.Image(io, "glance-img", snapshot="snap") as snap:
    kids = {(k["image"], k["trash"]) for k in snap.list_children2()}
    assert kids == {("vol-1", False), ("vol-2", True)}, kids
# A trashed image still opens by id.
with rbd.Image(io, image_id=vid, read_only=True) as v2:
    assert v2.read(0, 4096) == data[:4096]

# An open image cannot be trashed (the driver sees ImageBusy).
with rbd.Image(io, "vol-1"):
    try:
        r.trash_move(io, "vol-1", 0)
        raise AssertionError("trash_move of an open image succeeded")
    except rbd.ImageBusy:
        pass

# Restore under a new name, then delete for good.
r.trash_restore(io, vid, "vol-2b")
assert "vol-2b" in r.list(io)
r.trash_move(io, "vol-2b", 3600)
try:
    r.trash_remove(io, vid)
    raise AssertionError("trash_remove before the deferment ended succeeded")
except rbd.PermissionError:
    pass
r.trash_remove(io, vid, force=True)
try:
    r.trash_get(io, vid)
    raise AssertionError("removed image still in the trash")
except rbd.ImageNotFound:
    pass

# Errors the drivers catch by class.
try:
    rbd.Image(io, "nosuch")
    raise AssertionError("opened a missing image")
except rbd.ImageNotFound:
    pass
try:
    r.remove(io, "glance-img")
    raise AssertionError("removed an image with snapshots")
except rbd.ImageHasSnapshots:
    pass

# Capacity, as Nova (cluster stats) and Cinder (df, quotas) read it.
import errno
import json
import time
deadline = time.time() + 10
st = cluster.get_cluster_stats()
while st["kb"] == 0 and time.time() < deadline:
    # A new cluster's OSDs report their disks with their first beacons.
    time.sleep(0.2)
    st = cluster.get_cluster_stats()
assert st["kb"] > 0 and 0 < st["kb_avail"] <= st["kb"], st
assert st["num_objects"] > 0, st
ret, out, outs = cluster.mon_command(json.dumps({"prefix": "df", "format": "json"}), b"")
assert ret == 0, (ret, outs)
df = json.loads(out)
stats = [p for p in df["pools"] if p["name"] == pool][0]["stats"]
assert stats["stored"] >= len(data) and stats["objects"] > 0, stats
assert stats["max_avail"] > 0 and stats["bytes_used"] >= stats["stored"], stats
assert df["stats"]["total_bytes"] >= df["stats"]["total_avail_bytes"] > 0, df["stats"]
q = json.dumps({"prefix": "osd pool get-quota", "pool": pool, "format": "json"})
ret, out, outs = cluster.mon_command(q, b"")
assert ret == 0 and json.loads(out)["quota_max_bytes"] == quota_max_bytes, (ret, out, outs)
if quota_max_bytes:
    # A byte quota caps the pool's max_avail, as Ceph's df does.
    assert stats["max_avail"] <= quota_max_bytes - stats["stored"], stats
    # Setting a quota through librados, as an operator's script would.
    s = json.dumps({"prefix": "osd pool set-quota", "pool": pool, "field": "max_objects",
                    "val": "100000"})
    ret, out, outs = cluster.mon_command(s, b"")
    assert ret == 0 and outs == "set-quota max_objects = 100000 for pool " + pool, (ret, outs)
    ret, out, outs = cluster.mon_command(q, b"")
    assert ret == 0 and json.loads(out)["quota_max_objects"] == 100000, (ret, out, outs)
    s = json.dumps({"prefix": "osd pool set-quota", "pool": pool, "field": "max_files", "val": "1"})
    ret, out, outs = cluster.mon_command(s, b"")
    assert ret == -errno.EINVAL and "unrecognized field" in outs, (ret, outs)
else:
    # The embedded backend has no monitors to keep a quota.
    s = json.dumps({"prefix": "osd pool set-quota", "pool": pool, "field": "max_bytes", "val": "1G"})
    ret, out, outs = cluster.mon_command(s, b"")
    assert ret == -errno.EOPNOTSUPP and "needs a cluster" in outs, (ret, outs)
ret, out, outs = cluster.mon_command(json.dumps({"prefix": "osd pool ls"}), b"")
assert ret == 0 and pool in json.loads(out), (ret, out)
ret, out, outs = cluster.mon_command(json.dumps({"prefix": "no such command"}), b"")
assert ret == -errno.EINVAL and "command not known" in outs, (ret, outs)

# Tear down as the drivers do: volume, then unprotect and remove.
r.remove(io, "vol-1")
with rbd.Image(io, "glance-img") as img:
    with rbd.Image(io, "glance-img", snapshot="snap") as snap:
        assert list(snap.list_children()) == []
    img.unprotect_snap("snap")
    img.remove_snap("snap")
r.remove(io, "glance-img")
assert r.list(io) == []
io.close()
cluster.shutdown()
print("python OK")
