"""python3-rados's self-managed snapshots against Quarry.

Usage: self_managed_snaps.py POOL. Prints "snapshots OK" when every check
holds.
"""
import ctypes
import errno
import sys

import rados
from qtest import c_connect, c_close


def main():
    pool = sys.argv[1]
    with rados.Rados(conffile="") as cluster:
        with cluster.open_ioctx(pool) as io:
            io.write_full("sm-obj", b"v1")
            s1 = io.create_self_managed_snap()
            io.set_self_managed_snap_write([s1])
            io.write_full("sm-obj", b"v2-longer")
            io.write_full("sm-late", b"born after s1")
            # Reads at the snapshot see the object as it was; writes are
            # refused while reads go to a snapshot.
            io.set_read(s1)
            assert io.read("sm-obj") == b"v1", io.read("sm-obj")
            try:
                io.read("sm-late")
                raise AssertionError("sm-late did not exist at s1")
            except rados.ObjectNotFound:
                pass
            try:
                io.write_full("sm-obj", b"x")
                raise AssertionError("write while reading a snapshot")
            except rados.Error as e:
                assert e.errno == errno.EROFS, e
            io.set_read(rados.LIBRADOS_SNAP_HEAD)
            assert io.read("sm-obj") == b"v2-longer"
            # A second snapshot, then rollbacks to the first.
            s2 = io.create_self_managed_snap()
            assert s2 > s1, (s1, s2)
            io.set_self_managed_snap_write([s1, s2])
            io.rollback_self_managed_snap("sm-obj", s1)
            assert io.read("sm-obj") == b"v1"
            io.rollback_self_managed_snap("sm-late", s1)
            try:
                io.read("sm-late")
                raise AssertionError("rolled back to before it existed")
            except rados.ObjectNotFound:
                pass
            # s2 kept the state before the rollback.
            io.set_read(s2)
            assert io.read("sm-obj") == b"v2-longer"
            io.set_read(rados.LIBRADOS_SNAP_HEAD)
            for s in (s1, s2):
                io.remove_self_managed_snap(s)
            io.set_self_managed_snap_write([])
            io.remove_object("sm-obj")
    bad_snap_contexts(pool)
    print("snapshots OK")


def bad_snap_contexts(pool):
    """Snap contexts the binding never builds, through the C call itself:
    ids not descending, an id above seq, a negative count."""
    lib, cl, io = c_connect(pool)
    lib.rados_ioctx_selfmanaged_snap_set_write_ctx.argtypes = [
        ctypes.c_void_p, ctypes.c_uint64, ctypes.POINTER(ctypes.c_uint64), ctypes.c_int]
    set_ctx = lib.rados_ioctx_selfmanaged_snap_set_write_ctx
    assert set_ctx(io, 5, (ctypes.c_uint64 * 2)(1, 5), 2) == -errno.EINVAL
    assert set_ctx(io, 5, (ctypes.c_uint64 * 1)(9), 1) == -errno.EINVAL
    assert set_ctx(io, 5, None, -1) == -errno.EINVAL
    assert set_ctx(io, 5, (ctypes.c_uint64 * 2)(5, 1), 2) == 0
    c_close(lib, cl, io)


if __name__ == "__main__":
    main()
