"""RBD.pool_stats_get (rbd_pool_stats_*) through python3-rbd against
Quarry, in a namespace of its own: image and snapshot counts, provisioned
bytes (current sizes, and the most each image may hold with its
snapshots), the same for trashed images; unknown options and NULLs are
refused from C.

Usage: pool_stats.py POOL. Prints "pool stats OK" when every check holds.
"""
import ctypes
import sys

import rados
import rbd
from qtest import c_close, c_connect

MIB = 1 << 20
NS = "stats"


def main():
    pool = sys.argv[1]
    r = rbd.RBD()
    with rados.Rados(conffile="") as cluster, cluster.open_ioctx(pool) as io:
        r.namespace_create(io, NS)
        io.set_namespace(NS)
        zero = {k: 0 for k in (
            "image_count", "image_provisioned_bytes", "image_max_provisioned_bytes",
            "image_snap_count", "trash_count", "trash_provisioned_bytes",
            "trash_max_provisioned_bytes", "trash_snap_count")}
        assert r.pool_stats_get(io) == zero, r.pool_stats_get(io)

        r.create(io, "a", 8 * MIB)
        r.create(io, "b", 16 * MIB)
        with rbd.Image(io, "b") as b:
            b.create_snap("s1")
            b.create_snap("s2")
            b.resize(4 * MIB)
        st = r.pool_stats_get(io)
        want = dict(zero, image_count=2, image_provisioned_bytes=12 * MIB,
                    image_max_provisioned_bytes=24 * MIB, image_snap_count=2)
        assert st == want, st

        r.trash_move(io, "b", 0)
        st = r.pool_stats_get(io)
        want = dict(zero, image_count=1, image_provisioned_bytes=8 * MIB,
                    image_max_provisioned_bytes=8 * MIB, trash_count=1,
                    trash_provisioned_bytes=4 * MIB,
                    trash_max_provisioned_bytes=16 * MIB, trash_snap_count=2)
        assert st == want, st

        c_errors(pool)

        bid = [e["id"] for e in r.trash_list(io)][0]
        r.trash_restore(io, bid, "b")
        with rbd.Image(io, "b") as b:
            for s in ("s1", "s2"):
                b.remove_snap(s)
        r.remove(io, "b")
        r.remove(io, "a")
        io.set_namespace("")
        r.namespace_remove(io, NS)
    print("pool stats OK")


def c_errors(pool):
    lib = ctypes.CDLL("librbd.so.1")
    rl, cl, io = c_connect(pool)
    rl.rados_ioctx_set_namespace(io, NS.encode())
    st = ctypes.c_void_p()
    lib.rbd_pool_stats_create(ctypes.byref(st))
    v = ctypes.c_uint64(99)
    snaps = ctypes.c_uint64(99)
    assert lib.rbd_pool_stats_option_add_uint64(st, 8, ctypes.byref(v)) == -2
    assert lib.rbd_pool_stats_option_add_uint64(st, -1, ctypes.byref(v)) == -2
    assert lib.rbd_pool_stats_option_add_uint64(st, 0, None) == -22
    assert lib.rbd_pool_stats_option_add_uint64(None, 0, ctypes.byref(v)) == -22
    assert lib.rbd_pool_stats_option_add_uint64(st, 0, ctypes.byref(v)) == 0
    assert lib.rbd_pool_stats_option_add_uint64(st, 7, ctypes.byref(snaps)) == 0
    assert lib.rbd_pool_stats_get(io, st) == 0
    assert (v.value, snaps.value) == (1, 2), (v.value, snaps.value)
    assert lib.rbd_pool_stats_get(None, st) == -22
    assert lib.rbd_pool_stats_get(io, None) == -22
    lib.rbd_pool_stats_destroy(st)
    lib.rbd_pool_stats_destroy(None)
    c_close(rl, cl, io)


if __name__ == "__main__":
    main()
