"""Consistency groups through python3-rbd against Quarry: a VM with two
disks (vm-os, vm-data) in one group. While "the VM" (two handles of this
process that own the exclusive locks) writes a counter to vm-os and then
to vm-data, group snapshots are taken: at every group snapshot the
counters agree (vm-os may be one ahead, never vm-data), and writes go on
afterwards. Also: create/list/rename/remove of groups and their
snapshots, membership refusals (EEXIST, EMLINK on removing a member),
the image snapshots' group namespace, rollback of both disks together,
and that removing the group detaches its images. The C structs' size
checks through ctypes.

Usage: group.py POOL. Prints "group OK".
"""
import ctypes
import errno
import struct
import sys
import threading
import time

import rados
import rbd
from qtest import c_close, c_connect, expect

MIB = 1 << 20
SIZE = 8 * MIB


def counter(img):
    return struct.unpack("<Q", img.read(0, 8))[0]


def group_snaps_of(ioctx, name):
    """{group snap name: image snap id} of image `name`'s group snapshots."""
    with rbd.Image(ioctx, name, read_only=True) as img:
        out = {}
        for s in img.list_snaps():
            if s["namespace"] == rbd.RBD_SNAP_NAMESPACE_TYPE_GROUP:
                g = s["group"]
                assert g is not None, s
                out[g["snap_name"]] = (s["id"], s["name"], g)
        return out


def read_at_snap(ioctx, name, snap_id):
    img = rbd.Image(ioctx, name, snapshot=None, read_only=True)
    try:
        img.set_snap_by_id(snap_id)
        return counter(img)
    finally:
        img.close()


def expect_errno(eno, fn, *args):
    try:
        fn(*args)
    except rbd.Error as e:
        assert e.errno == eno, (fn.__name__, e.errno, e)
        return e
    raise AssertionError(f"{fn.__name__}{args} did not fail")


def c_checks(pool, image, user_snap_id):
    """Struct-size and wrong-namespace paths python3-rbd never takes."""
    lib, cl, io = c_connect(pool)
    rbdl = ctypes.CDLL("librbd.so.1")
    img = ctypes.c_void_p()
    try:
        assert rbdl.rbd_open(io, image.encode(), ctypes.byref(img), None) == 0

        class GroupInfo(ctypes.Structure):
            _fields_ = [("name", ctypes.c_void_p), ("pool", ctypes.c_int64)]

        class GroupImageInfo(ctypes.Structure):
            _fields_ = [("name", ctypes.c_void_p), ("pool", ctypes.c_int64),
                        ("state", ctypes.c_int)]

        class SnapGroupNs(ctypes.Structure):
            _fields_ = [("group_pool", ctypes.c_int64),
                        ("group_name", ctypes.c_void_p),
                        ("group_snap_name", ctypes.c_void_p)]

        gi = GroupInfo()
        assert rbdl.rbd_get_group(img, ctypes.byref(gi), 8) == -errno.ERANGE
        assert rbdl.rbd_get_group(img, None, ctypes.sizeof(gi)) == -errno.EINVAL
        assert rbdl.rbd_get_group(img, ctypes.byref(gi), ctypes.sizeof(gi)) == 0
        assert ctypes.string_at(gi.name) == b"vmg" and gi.pool >= 0
        rbdl.rbd_group_info_cleanup(ctypes.byref(gi), ctypes.sizeof(gi))

        entries = (GroupImageInfo * 4)()
        n = ctypes.c_size_t(4)
        r = rbdl.rbd_group_image_list(io, b"vmg", entries, 8, ctypes.byref(n))
        assert r == -errno.ERANGE, r
        n = ctypes.c_size_t(1)
        r = rbdl.rbd_group_image_list(io, b"vmg", entries,
                                      ctypes.sizeof(GroupImageInfo), ctypes.byref(n))
        assert (r, n.value) == (-errno.ERANGE, 2), (r, n.value)
        n = ctypes.c_size_t(4)
        r = rbdl.rbd_group_image_list(io, b"vmg", entries,
                                      ctypes.sizeof(GroupImageInfo), ctypes.byref(n))
        assert (r, n.value) == (0, 2), (r, n.value)
        rbdl.rbd_group_image_list_cleanup(entries, ctypes.sizeof(GroupImageInfo), n)
        assert rbdl.rbd_group_create(io, None) == -errno.EINVAL
        assert rbdl.rbd_group_snap_create2(io, b"vmg", b"badflags", 3) == -errno.EINVAL

        ns = SnapGroupNs()
        r = rbdl.rbd_snap_get_group_namespace(img, ctypes.c_uint64(user_snap_id),
                                              ctypes.byref(ns), ctypes.sizeof(ns))
        assert r == -errno.EINVAL, r
        r = rbdl.rbd_snap_get_group_namespace(img, ctypes.c_uint64(1 << 60),
                                              ctypes.byref(ns), ctypes.sizeof(ns))
        assert r == -errno.ENOENT, r
        r = rbdl.rbd_snap_get_group_namespace(img, ctypes.c_uint64(user_snap_id),
                                              ctypes.byref(ns), 8)
        assert r == -errno.ERANGE, r
    finally:
        if img.value:
            rbdl.rbd_close(img)
        c_close(lib, cl, io)


def main():
    pool = sys.argv[1]
    cluster = rados.Rados(conffile="")
    cluster.connect()
    ioctx = cluster.open_ioctx(pool)
    pool_id = ioctx.get_pool_id()
    r = rbd.RBD()

    # ---- groups: create, list, rename, remove ----
    r.group_create(ioctx, "g-tmp")
    e = expect_errno(errno.EEXIST, r.group_create, ioctx, "g-tmp")
    assert isinstance(e, rbd.ObjectExists), type(e)
    r.group_rename(ioctx, "g-tmp", "vmg")
    assert "vmg" in r.group_list(ioctx) and "g-tmp" not in r.group_list(ioctx)
    r.group_create(ioctx, "other")
    assert sorted(n for n in r.group_list(ioctx) if n in ("vmg", "other")) == ["other", "vmg"]
    expect(rbd.ObjectNotFound, r.group_remove, ioctx, "no-such-group")

    # ---- members ----
    for n in ("vm-os", "vm-data"):
        r.create(ioctx, n, SIZE, old_format=False,
                 features=rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
                 | rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
                 | rbd.RBD_FEATURE_DEEP_FLATTEN)
    g = rbd.Group(ioctx, "vmg")
    g.add_image(ioctx, "vm-os")
    g.add_image(ioctx, "vm-data")
    imgs = sorted(g.list_images(), key=lambda i: i["name"])
    assert [(i["name"], i["pool"], i["state"]) for i in imgs] == [
        ("vm-data", pool_id, rbd.RBD_GROUP_IMAGE_STATE_ATTACHED),
        ("vm-os", pool_id, rbd.RBD_GROUP_IMAGE_STATE_ATTACHED),
    ], imgs
    e = expect_errno(errno.EEXIST, g.add_image, ioctx, "vm-os")
    assert isinstance(e, rbd.ObjectExists), type(e)
    expect_errno(errno.EEXIST, rbd.Group(ioctx, "other").add_image, ioctx, "vm-data")
    r.group_remove(ioctx, "other")
    assert "other" not in r.group_list(ioctx)
    with rbd.Image(ioctx, "vm-os", read_only=True) as img:
        assert img.group() == {"pool": pool_id, "name": "vmg"}, img.group()
    # A member cannot be removed: EMLINK (no python class of its own).
    expect_errno(errno.EMLINK, r.remove, ioctx, "vm-os")
    assert "vm-os" in r.list(ioctx)

    # A user snapshot, for the namespace checks.
    with rbd.Image(ioctx, "vm-os") as img:
        img.create_snap("user1")
        user_snap_id = img.snap_get_id("user1")
        assert img.snap_get_namespace_type(user_snap_id) == rbd.RBD_SNAP_NAMESPACE_TYPE_USER

    # ---- crash consistency under a running writer ----
    os_img = rbd.Image(ioctx, "vm-os")
    data_img = rbd.Image(ioctx, "vm-data")
    stop = threading.Event()
    state = {"i": 1, "err": None}

    def writer():
        try:
            i = 1
            while not stop.is_set():
                b = struct.pack("<Q", i)
                os_img.write(b, 0)
                data_img.write(b, 0)
                state["i"] = i
                # No pause: a VM writing flat out must not starve the
                # group snapshot's lock requests.
                i += 1
        except Exception as ex:  # reported by the main thread
            state["err"] = ex

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.5)
        g.create_snap("s1")
        at_s1 = state["i"]
        time.sleep(0.5)
        g.create_snap("s2", rbd.RBD_SNAP_CREATE_SKIP_QUIESCE)
        time.sleep(0.7)
    finally:
        stop.set()
        t.join()
    assert state["err"] is None, state["err"]
    final = state["i"]
    assert final > at_s1 + 1, (final, at_s1)
    assert counter(os_img) == final and counter(data_img) == final

    snaps = sorted(g.list_snaps(), key=lambda s: s["name"])
    assert [(s["name"], s["state"]) for s in snaps] == [
        ("s1", rbd.RBD_GROUP_SNAP_STATE_COMPLETE),
        ("s2", rbd.RBD_GROUP_SNAP_STATE_COMPLETE),
    ], snaps
    expect(rbd.ObjectExists, g.create_snap, "s1")
    expect(rbd.InvalidArgument, g.create_snap, "s3", 1 << 5)

    os_snaps = group_snaps_of(ioctx, "vm-os")
    data_snaps = group_snaps_of(ioctx, "vm-data")
    assert sorted(os_snaps) == ["s1", "s2"] == sorted(data_snaps), (os_snaps, data_snaps)
    seen = []
    for name in ("s1", "s2"):
        os_c = read_at_snap(ioctx, "vm-os", os_snaps[name][0])
        data_c = read_at_snap(ioctx, "vm-data", data_snaps[name][0])
        assert data_c > 0, (name, os_c, data_c)
        assert os_c in (data_c, data_c + 1), (name, os_c, data_c)
        assert os_c < final, (name, os_c, final)
        g_ns = os_snaps[name][2]
        assert g_ns == {"pool": pool_id, "name": "vmg", "snap_name": name}, g_ns
        seen.append(data_c)
    assert seen[0] <= seen[1], seen
    s1_counter = seen[0]

    # Group snapshots are not user snapshots: not removable by name.
    s1_image_snap = os_snaps["s1"][1]
    expect(rbd.Error, os_img.remove_snap, s1_image_snap)
    assert "s1" in group_snaps_of(ioctx, "vm-os")

    # ---- rename, rollback ----
    g.rename_snap("s1", "before")
    expect(rbd.ObjectExists, g.rename_snap, "s2", "before")
    assert sorted(s["name"] for s in g.list_snaps()) == ["before", "s2"]
    assert group_snaps_of(ioctx, "vm-os")["before"][0] == os_snaps["s1"][0]
    big = struct.pack("<Q", 1 << 40)
    os_img.write(big, 0)
    data_img.write(big, 0)
    os_img.close()
    data_img.close()
    g.rollback_to_snap("before")
    with rbd.Image(ioctx, "vm-os", read_only=True) as img:
        os_c = counter(img)
    with rbd.Image(ioctx, "vm-data", read_only=True) as img:
        data_c = counter(img)
    assert data_c == s1_counter and os_c in (data_c, data_c + 1), (os_c, data_c, s1_counter)

    c_checks(pool, "vm-os", user_snap_id)

    # ---- snapshot removal, member removal, group removal ----
    g.remove_snap("s2")
    assert [s["name"] for s in g.list_snaps()] == ["before"]
    assert sorted(group_snaps_of(ioctx, "vm-data")) == ["before"]
    expect(rbd.ObjectNotFound, g.remove_snap, "s2")
    g.remove_image(ioctx, "vm-data")
    assert [i["name"] for i in g.list_images()] == ["vm-os"]
    # Its image snapshot of the remaining group snapshot went with it.
    assert group_snaps_of(ioctx, "vm-data") == {}
    with rbd.Image(ioctx, "vm-data", read_only=True) as img:
        assert img.group() == {"pool": -1, "name": ""}, img.group()
    expect(rbd.ObjectNotFound, g.remove_image, ioctx, "vm-data")
    r.group_remove(ioctx, "vmg")
    assert "vmg" not in r.group_list(ioctx)
    with rbd.Image(ioctx, "vm-os") as img:
        assert img.group() == {"pool": -1, "name": ""}, img.group()
        assert group_snaps_of(ioctx, "vm-os") == {}
        img.remove_snap("user1")
    r.remove(ioctx, "vm-os")
    r.remove(ioctx, "vm-data")

    ioctx.close()
    cluster.shutdown()
    print("group OK")


main()
