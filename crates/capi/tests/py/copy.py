"""Image.copy (rbd_copy3) and Image.deep_copy (rbd_deep_copy) through
python3-rbd against Quarry: the copy reads what the source reads (head or
snapshot), takes the features and order asked for, keeps image-meta; a
deep copy has every snapshot (protection too) and a clone's deep copy is a
clone of the same parent; a taken name is refused and left alone; with the
write-back cache, writes not yet flushed are in the copy; bad options are
refused.

Usage: copy.py POOL. Prints "copy OK" when every check holds.
"""
import ctypes
import sys

import rados
import rbd
from qtest import c_close, c_connect, expect

MIB = 1 << 20
SIZE = 16 * MIB


def pattern(n, seed):
    block = bytes(((i * 31 + seed) & 0xFF) | 1 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


def whole(img):
    return img.read(0, img.size())


def snap_names(img):
    return [(s["name"], s["size"]) for s in img.list_snaps()]


def check(cluster, pool, tag):
    base, cp1, cp2, deep, child, child2 = (
        f"{tag}-{n}" for n in ("base", "cp1", "cp2", "deep", "child", "child2"))
    r = rbd.RBD()
    with cluster.open_ioctx(pool) as io:
        r.create(io, base, SIZE)
        with rbd.Image(io, base) as img:
            img.write(pattern(3 * MIB, 1), 0)
            img.metadata_set("owner", "team-a")
            img.create_snap("s1")
            img.protect_snap("s1")
            img.write(pattern(8192, 2), MIB + 4096)
            img.discard(2 * MIB, MIB)
            img.resize(12 * MIB)
            img.create_snap("s2")
            img.write(pattern(4096, 3), 11 * MIB)
            # Not flushed: with the write-back cache this is only cached.
            img.write(pattern(4096, 4), 5 * MIB)

            img.copy(io, cp1)
            head = whole(img)
            with rbd.Image(io, cp1, read_only=True) as c:
                assert whole(c) == head, "copy differs from the head"
                assert snap_names(c) == [], snap_names(c)
                assert c.metadata_get("owner") == "team-a"
                assert c.features() == img.features()
                assert c.stat()["order"] == img.stat()["order"]

            # Options: features and order of the new image.
            img.copy(io, cp2, features=rbd.RBD_FEATURE_LAYERING, order=20)
            with rbd.Image(io, cp2, read_only=True) as c:
                assert c.features() == rbd.RBD_FEATURE_LAYERING, c.features()
                assert c.stat()["order"] == 20
                assert whole(c) == head
            # A taken name: EEXIST, the image there untouched.
            expect(rbd.ImageExists, img.copy, io, cp2)
            with rbd.Image(io, cp2, read_only=True) as c:
                assert whole(c) == head
            # Unsupported choices are refused, not ignored.
            expect(rbd.InvalidArgument, img.copy, io, f"{tag}-x", stripe_unit=65536, stripe_count=4)
            expect(rbd.ArgumentOutOfRange, img.copy, io, f"{tag}-x", order=40)
            assert f"{tag}-x" not in r.list(io)

            img.deep_copy(io, deep)
            with rbd.Image(io, deep, read_only=True) as d:
                assert whole(d) == head, "deep copy differs from the head"
                assert snap_names(d) == snap_names(img), (snap_names(d), snap_names(img))
                assert d.is_protected_snap("s1") and not d.is_protected_snap("s2")
            for s in ("s1", "s2"):
                with rbd.Image(io, base, snapshot=s, read_only=True) as a, \
                        rbd.Image(io, deep, snapshot=s, read_only=True) as b:
                    assert whole(a) == whole(b), f"snapshot {s} differs"

        # A clone's deep copy is a clone of the same parent snapshot.
        r.clone(io, base, "s1", io, child)
        with rbd.Image(io, child) as c:
            c.write(pattern(4096, 5), 7 * MIB)
            c.discard(0, 4 * MIB)
            c.deep_copy(io, child2)
            want = whole(c)
        with rbd.Image(io, child2, read_only=True) as c2:
            p = c2.parent_info()
            assert p[1:] == (base, "s1"), p
            assert whole(c2) == want, "clone's deep copy differs"

        for n in (child2, child, deep, cp2, cp1, base):
            with rbd.Image(io, n) as img:
                for s in img.list_snaps():
                    if img.is_protected_snap(s["name"]):
                        img.unprotect_snap(s["name"])
                    img.remove_snap(s["name"])
            r.remove(io, n)


def c_errors(pool):
    """NULL handles and names: EINVAL from the C calls, no crash."""
    lib = ctypes.CDLL("librbd.so.1")
    rl, cl, io = c_connect(pool)
    EINVAL = -22
    assert lib.rbd_copy(None, io, b"x") == EINVAL
    assert lib.rbd_deep_copy(None, io, b"x", None) == EINVAL
    assert lib.rbd_create(io, b"c-null", ctypes.c_uint64(MIB), ctypes.byref(ctypes.c_int(22))) == 0
    img = ctypes.c_void_p()
    assert lib.rbd_open(io, b"c-null", ctypes.byref(img), None) == 0
    assert lib.rbd_copy(img, io, None) == EINVAL
    assert lib.rbd_copy(img, None, b"y") == EINVAL
    # The progress callback is called once the copy is done.
    calls = []
    CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_void_p)
    cb = CB(lambda done, total, _: calls.append((done, total)) or 0)
    assert lib.rbd_deep_copy_with_progress(img, io, b"c-null2", None, cb, None) == 0
    assert calls and calls[-1][0] == calls[-1][1] == MIB, calls
    assert lib.rbd_close(img) == 0
    for n in (b"c-null2", b"c-null"):
        assert lib.rbd_remove(io, n) == 0
    c_close(rl, cl, io)


def main():
    pool = sys.argv[1]
    with rados.Rados(conffile="") as cluster:
        check(cluster, pool, "copy-plain")
    # The write-back cache from the first write; dirty data stays cached
    # until something writes it back.
    conf = {
        "rbd_cache": "true",
        "rbd_cache_policy": "writeback",
        "rbd_cache_writethrough_until_flush": "false",
        "rbd_cache_max_dirty_age": "60",
    }
    with rados.Rados(conffile="", conf=conf) as cluster:
        check(cluster, pool, "copy-cached")
    c_errors(pool)
    print("copy OK")


if __name__ == "__main__":
    main()
