"""Live migration through python3-rbd against Quarry: a VM's disk (a clone
of a golden image) moves to another pool while a handle keeps using the
destination: reads fall through to the source until `execute` copies
everything (proxied to the handle that owns the exclusive lock, with
writes in flight), `commit` removes the source and its link to the golden
snapshot; `abort` brings the source back untouched. An image with
snapshots moves with its history: each snapshot reads the same before,
during (also after writes to the destination) and after the move, with
`execute` running through a handle that keeps writing. Refusals: an open
source, a snapshot with clones, a taken name, commit before execute,
removing the hidden source from the trash.

Usage: migration.py SRC_POOL DST_POOL. Prints "migration OK".
"""
import sys
import threading

import rados
import rbd
from qtest import expect

MIB = 1 << 20
SIZE = 24 * MIB


def fill(n, byte):
    return bytes([byte]) * n


def c_status(pool, src_id, dst_id):
    """rbd_migration_status through ctypes: the struct as C sees it, and
    -ERANGE for a wrong struct size."""
    import ctypes
    from qtest import c_connect, c_close

    class Status(ctypes.Structure):
        _fields_ = [("source_pool_id", ctypes.c_int64),
                    ("source_pool_namespace", ctypes.c_char_p),
                    ("source_image_name", ctypes.c_char_p),
                    ("source_image_id", ctypes.c_char_p),
                    ("dest_pool_id", ctypes.c_int64),
                    ("dest_pool_namespace", ctypes.c_char_p),
                    ("dest_image_name", ctypes.c_char_p),
                    ("dest_image_id", ctypes.c_char_p),
                    ("state", ctypes.c_int),
                    ("state_description", ctypes.c_char_p)]

    lib, cl, io = c_connect(pool)
    try:
        rbdl = ctypes.CDLL("librbd.so.1")
        st = Status()
        r = rbdl.rbd_migration_status(io, b"mg-vm2", ctypes.byref(st), ctypes.sizeof(st))
        assert r == 0, r
        assert (st.source_pool_id, st.dest_pool_id) == (src_id, dst_id), \
            (st.source_pool_id, st.dest_pool_id)
        assert (st.source_image_name, st.dest_image_name) == (b"mg-vm", b"mg-vm2")
        assert st.state_description == b"prepared", st.state_description
        # Not cleaned up by ctypes' c_char_p: freed by the library's call.
        rbdl.rbd_migration_status_cleanup(ctypes.byref(st))
        r = rbdl.rbd_migration_status(io, b"mg-vm2", ctypes.byref(st), 8)
        assert r == -34, r
    finally:
        c_close(lib, cl, io)


def golden_clone(io):
    """A golden image with a protected snapshot, and a VM disk cloned from
    it with a write of its own. Returns what the VM disk reads."""
    r = rbd.RBD()
    r.create(io, "mg-gold", SIZE, old_format=False,
             features=rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
             | rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
             | rbd.RBD_FEATURE_DEEP_FLATTEN)
    want = bytearray(SIZE)
    with rbd.Image(io, "mg-gold") as g:
        g.write(fill(4 * MIB, 0x61), 0)
        g.write(fill(MIB, 0x62), 10 * MIB)
        g.create_snap("base")
        g.protect_snap("base")
    want[0:4 * MIB] = fill(4 * MIB, 0x61)
    want[10 * MIB:11 * MIB] = fill(MIB, 0x62)
    r.clone(io, "mg-gold", "base", io, "mg-vm")
    with rbd.Image(io, "mg-vm") as vm:
        vm.write(fill(4096, 0x76), MIB)
    want[MIB:MIB + 4096] = fill(4096, 0x76)
    return want


def move_a_running_disk(cluster, src_pool, dst_pool):
    # (dst_pool is also opened through ctypes, as librbd's C callers do.)
    r = rbd.RBD()
    with cluster.open_ioctx(src_pool) as sio, cluster.open_ioctx(dst_pool) as dio:
        want = golden_clone(sio)
        # The source must not be in use when the migration is prepared.
        with rbd.Image(sio, "mg-vm") as busy:
            busy.read(0, 1)
            expect(rbd.ImageBusy, r.migration_prepare, sio, "mg-vm", dio, "mg-vm2")
        r.create(dio, "taken", MIB)
        expect(rbd.ImageExists, r.migration_prepare, sio, "mg-vm", dio, "taken")
        r.remove(dio, "taken")
        r.migration_prepare(sio, "mg-vm", dio, "mg-vm2")
        assert "mg-vm" not in r.list(sio), r.list(sio)
        assert "mg-vm2" in r.list(dio), r.list(dio)
        for io, name in ((dio, "mg-vm2"), (sio, "mg-vm")):
            st = r.migration_status(io, name)
            assert st["source_pool_id"] == sio.get_pool_id(), st
            assert st["source_image_name"] == "mg-vm", st
            # (python3-rbd 16 fills dest_pool_id from the C struct's
            # source_pool_id: checked through ctypes below instead.)
            assert st["dest_image_name"] == "mg-vm2", st
            assert st["dest_pool_namespace"] == "", st
            assert st["state"] == rbd.RBD_IMAGE_MIGRATION_STATE_PREPARED, st
        c_status(dst_pool, sio.get_pool_id(), dio.get_pool_id())
        # The hidden source leaves the trash only by commit or abort.
        # (Looked up by id: python3-rbd 16's trash_list iterator raises
        # IndexError on a MIGRATION entry, which librbd lists; its
        # trash_get names it.)
        src_id = r.migration_status(dio, "mg-vm2")["source_image_id"]
        hidden = r.trash_get(sio, src_id)
        assert (hidden["name"], hidden["source"]) == ("mg-vm", "MIGRATION"), hidden
        expect(rbd.ImageBusy, r.trash_remove, sio, src_id, True)
        expect(rbd.ImageBusy, r.trash_restore, sio, src_id, "mg-vm")
        expect(rbd.InvalidArgument, r.migration_commit, dio, "mg-vm2")
        # Removing the destination would strand the hidden source.
        expect(rbd.ImageBusy, r.remove, dio, "mg-vm2")

        with rbd.Image(dio, "mg-vm2") as img:
            assert img.size() == SIZE
            # Reads fall through destination -> source -> golden snapshot.
            assert img.read(0, SIZE) == bytes(want)
            # A write across an object boundary copies up both objects.
            img.write(fill(5000, 0x77), 4 * MIB - 1000)
            want[4 * MIB - 1000:4 * MIB + 4000] = fill(5000, 0x77)
            # Execute from another call while this handle owns the lock and
            # a thread keeps writing: the copy runs through the owner.
            stop = threading.Event()
            written = []

            def writer():
                i = 0
                while not stop.is_set() and i < 512:
                    off = 16 * MIB + (i % 256) * 4096
                    img.write(fill(4096, i % 251 + 1), off)
                    written.append((off, i % 251 + 1))
                    i += 1

            t = threading.Thread(target=writer)
            t.start()
            r.migration_execute(dio, "mg-vm2")
            stop.set()
            t.join()
            for off, b in written:
                want[off:off + 4096] = fill(4096, b)
            st = r.migration_status(dio, "mg-vm2")
            assert st["state"] == rbd.RBD_IMAGE_MIGRATION_STATE_EXECUTED, st
            assert img.read(0, SIZE) == bytes(want)
        r.migration_commit(dio, "mg-vm2")
        expect(rbd.InvalidArgument, r.migration_status, dio, "mg-vm2")
        expect(rbd.ImageNotFound, r.trash_get, sio, src_id)
        # Still a thin clone of the golden image: only the objects the VM
        # wrote (0: before and during, 1: the write across the boundary,
        # 4: the thread's) were copied.
        with rbd.Image(dio, "mg-vm2") as img:
            assert img.read(0, SIZE) == bytes(want)
            assert img.parent_info()[:3] == (src_pool, "mg-gold", "base"), img.parent_info()
            prefix = img.block_name_prefix() + "."
        objs = sorted(o.key for o in dio.list_objects() if o.key.startswith(prefix))
        assert [o[len(prefix):] for o in objs] == [
            "%016x" % n for n in (0, 1, 4)], objs
        with rbd.Image(sio, "mg-gold") as g:
            kids = [(c["pool"], c["image"]) for c in g.list_children2()]
            assert kids == [(dst_pool, "mg-vm2")], kids
            expect(rbd.ImageBusy, g.unprotect_snap, "base")
        # Flattened, it lets the golden snapshot go.
        with rbd.Image(dio, "mg-vm2") as img:
            img.flatten()
            assert img.read(0, SIZE) == bytes(want)
        with rbd.Image(sio, "mg-gold") as g:
            assert list(g.list_children2()) == [], list(g.list_children2())
            g.unprotect_snap("base")
            g.remove_snap("base")
        r.remove(sio, "mg-gold")
        r.remove(dio, "mg-vm2")


def abort_restores_the_source(cluster, src_pool, dst_pool):
    r = rbd.RBD()
    with cluster.open_ioctx(src_pool) as sio, cluster.open_ioctx(dst_pool) as dio:
        r.create(sio, "mg-b", 8 * MIB, old_format=False)
        with rbd.Image(sio, "mg-b") as b:
            b.write(fill(MIB, 0x58), 0)
            b.create_snap("s")
        expect(rbd.ImageNotFound, r.migration_prepare, sio, "nothing", dio, "x")
        # Same name in another pool, smaller objects, with its snapshot.
        r.migration_prepare(sio, "mg-b", dio, "mg-b", order=20)
        with rbd.Image(dio, "mg-b") as d:
            assert d.stat()["order"] == 20
            assert [x["name"] for x in d.list_snaps()] == ["s"]
            d.write(fill(MIB, 0x59), 0)
        with rbd.Image(dio, "mg-b", snapshot="s") as d:
            assert d.read(0, MIB) == fill(MIB, 0x58)
        r.migration_abort(dio, "mg-b")
        assert "mg-b" not in r.list(dio)
        expect(rbd.InvalidArgument, r.migration_status, sio, "mg-b")
        with rbd.Image(sio, "mg-b") as b:
            assert b.read(0, MIB) == fill(MIB, 0x58)
            assert b.stat()["order"] == 22
            assert [x["name"] for x in b.list_snaps()] == ["s"]
            b.remove_snap("s")
        r.remove(sio, "mg-b")


def history_moves_with_the_image(cluster, src_pool, dst_pool):
    """Three snapshots (one protected, one after a shrink and a grow)
    move with the image; the destination is written and snapshotted
    during the move and `execute` runs while its handle keeps writing."""
    r = rbd.RBD()
    size = 12 * MIB
    with cluster.open_ioctx(src_pool) as sio, cluster.open_ioctx(dst_pool) as dio:
        r.create(sio, "mg-h", size, old_format=False)
        views = {}
        with rbd.Image(sio, "mg-h") as h:
            want = bytearray(size)

            def put(off, data):
                h.write(data, off)
                want[off:off + len(data)] = data

            put(0, fill(6 * MIB, 0x31))
            h.create_snap("h1")
            views["h1"] = bytes(want)
            put(3 * MIB, fill(6 * MIB, 0x32))
            h.discard(0, MIB)
            want[0:MIB] = bytes(MIB)
            h.create_snap("h2")
            h.protect_snap("h2")
            views["h2"] = bytes(want)
            h.resize(6 * MIB)
            h.resize(size)
            want[6 * MIB:] = bytes(size - 6 * MIB)
            put(10 * MIB, fill(MIB, 0x33))
            h.create_snap("h3")
            views["h3"] = bytes(want)
            put(MIB, fill(MIB, 0x34))
            head = bytearray(want)
            # A snapshot with a clone cannot move (its clone would have to).
            r.clone(sio, "mg-h", "h2", sio, "mg-h-kid")
        expect(rbd.ImageBusy, r.migration_prepare, sio, "mg-h", dio, "mg-h2")
        r.remove(sio, "mg-h-kid")
        r.migration_prepare(sio, "mg-h", dio, "mg-h2")

        def check(img_name, names):
            for n in names:
                with rbd.Image(dio, img_name, snapshot=n) as s:
                    assert s.read(0, s.size()) == views[n][:s.size()], n

        with rbd.Image(dio, "mg-h2") as img:
            snaps = [(x["name"], x["size"]) for x in img.list_snaps()]
            assert snaps == [("h1", size), ("h2", size), ("h3", size)], snaps
            assert img.is_protected_snap("h2")
            check("mg-h2", ["h1", "h2", "h3"])
            assert img.read(0, size) == bytes(head)
            # A write copies its object up above its history.
            img.write(fill(4096, 0x41), 4 * MIB)
            head[4 * MIB:4 * MIB + 4096] = fill(4096, 0x41)
            img.create_snap("d1")
            views["d1"] = bytes(head)
            check("mg-h2", ["h1", "h2", "h3", "d1"])
            stop = threading.Event()
            written = []

            def writer():
                i = 0
                while not stop.is_set() and i < 400:
                    off = (i * 7 % 12) * MIB + (i % 64) * 4096
                    img.write(fill(4096, i % 200 + 1), off)
                    written.append((off, i % 200 + 1))
                    i += 1

            t = threading.Thread(target=writer)
            t.start()
            r.migration_execute(dio, "mg-h2")
            stop.set()
            t.join()
            for off, b in written:
                head[off:off + 4096] = fill(4096, b)
            assert img.read(0, size) == bytes(head)
            check("mg-h2", ["h1", "h2", "h3", "d1"])
        r.migration_commit(dio, "mg-h2")
        expect(rbd.ImageNotFound, rbd.Image, sio, "mg-h")
        with rbd.Image(dio, "mg-h2") as img:
            expect(rbd.ImageNotFound, img.parent_info)
            assert img.read(0, size) == bytes(head)
            check("mg-h2", ["h1", "h2", "h3", "d1"])
            img.unprotect_snap("h2")
            for n in ["h1", "h2", "h3", "d1"]:
                img.remove_snap(n)
        r.remove(dio, "mg-h2")


def main():
    src_pool, dst_pool = sys.argv[1], sys.argv[2]
    with rados.Rados(conffile="") as cluster:
        move_a_running_disk(cluster, src_pool, dst_pool)
        abort_restores_the_source(cluster, src_pool, dst_pool)
        history_moves_with_the_image(cluster, src_pool, dst_pool)
    print("migration OK")


if __name__ == "__main__":
    main()
