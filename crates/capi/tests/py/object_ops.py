"""python3-rados's append, writesame, cmpext (also in read and write
ops) and asynchronous stat, append, setxattr, rmxattr, writesame and
cmpext against Quarry, plus the
bad-input paths through ctypes: concurrent appends never overwrite each
other, a cmpext mismatch names the first differing byte (-4095 - i), a
ragged writesame is EINVAL, a missing object is ENOENT.

Usage: object_ops.py POOL. Prints "object ops OK" when every check holds.
"""
import ctypes
import errno
import sys
import threading

import rados
from qtest import c_close, c_connect, expect

MAX_ERRNO = 4095


def run_clients(target, n, errors):
    """Run target(0..n) on n threads at once; none may have failed."""
    ts = [threading.Thread(target=target, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


def wait(comp):
    comp.wait_for_complete()
    return comp.get_return_value()


def sync_calls(io):
    # Fresh objects (the script may run twice on one pool).
    for o in ("ap-new", "ws"):
        try:
            io.remove_object(o)
        except rados.ObjectNotFound:
            pass
    io.write_full("ap", b"")
    io.append("ap", b"abc")
    io.append("ap", b"def")
    assert io.read("ap") == b"abcdef"
    # An append creates the object.
    io.append("ap-new", b"xyz")
    assert io.read("ap-new") == b"xyz"

    io.writesame("ws", b"ab", 8, 2)
    assert io.read("ws") == b"\0\0abababab", io.read("ws")

    io.write_full("cmp", b"hello world")
    assert io.cmpext("cmp", b"hello", 0) == 0
    assert io.cmpext("cmp", b"world", 6) == 0
    assert io.cmpext("cmp", b"help", 0) == -MAX_ERRNO - 3
    # Past the end the object's bytes read as zeros.
    assert io.cmpext("cmp", b"d\0\0", 10) == 0
    assert io.cmpext("cmp", b"d\0x", 10) == -MAX_ERRNO - 2
    # (python3-rados asserts on other errors; the C value is checked in
    # bad_input.)


def concurrent_appends(cluster, pool):
    """Four clients append 50 records each to one object at once: every
    record is there exactly once, none torn or overwritten."""
    with cluster.open_ioctx(pool) as io:
        io.write_full("log", b"")
    errors = []

    def appender(k):
        try:
            with rados.Rados(conffile="") as c, c.open_ioctx(pool) as io:
                for i in range(50):
                    io.append("log", b"<%d.%02d>" % (k, i))
        except Exception as e:  # reported below
            errors.append(e)

    run_clients(appender, 4, errors)
    with cluster.open_ioctx(pool) as io:
        data = io.read("log", 1 << 20)
    recs = data.replace(b">", b">\n").split()
    assert len(data) == 4 * 50 * 6, len(data)
    assert sorted(recs) == sorted(b"<%d.%02d>" % (k, i) for k in range(4) for i in range(50))


def async_calls(io):
    io.write_full("as", b"0123456789")
    st = {}

    def on_stat(comp, size, mtime):
        st["size"] = size
        st["mtime"] = mtime

    c = io.aio_stat("as", on_stat)
    assert wait(c) == 0
    assert st["size"] == 10, st
    c = io.aio_stat("as-missing", lambda *a: None)
    assert wait(c) == -errno.ENOENT

    assert wait(io.aio_append("as", b"ab")) == 0
    assert io.read("as") == b"0123456789ab"

    assert wait(io.aio_setxattr("as", "user.k", b"v1")) == 0
    assert io.get_xattr("as", "user.k") == b"v1"
    assert wait(io.aio_rmxattr("as", "user.k")) == 0
    expect(rados.NoData, io.get_xattr, "as", "user.k")
    assert wait(io.aio_rmxattr("as", "user.k")) == -errno.ENODATA

    assert wait(io.aio_writesame("as", b"xy", 4, 2)) == 0
    assert io.read("as") == b"01xyxy6789ab"

    assert wait(io.aio_cmpext("as", b"01xy", 0)) == 0
    assert wait(io.aio_cmpext("as", b"01xz", 0)) == -MAX_ERRNO - 3
    assert wait(io.aio_cmpext("as-missing", b"a", 0)) == -errno.ENOENT


def compound_ops(io):
    """cmpext in a read op, writesame in a write op."""
    io.write_full("cx", b"hello world")
    with rados.ReadOpCtx() as op:
        op.cmpext(b"hello", 0)
        io.operate_read_op(op, "cx")
    with rados.ReadOpCtx() as op:
        op.cmpext(b"help", 0)
        try:
            io.operate_read_op(op, "cx")
            raise AssertionError("a mismatching cmpext passed")
        except rados.ExtendMismatch as e:
            assert e.errno == MAX_ERRNO + 3, e.errno
    with rados.WriteOpCtx() as op:
        op.writesame(b"ab", 6, 1)
        io.operate_write_op(op, "cx")
    assert io.read("cx") == b"habababorld", io.read("cx")
    # A ragged writesame refuses its whole write op: nothing is written.
    with rados.WriteOpCtx() as op:
        op.write(b"Z", 0)
        op.writesame(b"ab", 5, 1)
        expect(rados.InvalidArgumentError, io.operate_write_op, op, "cx")
    assert io.read("cx") == b"habababorld"

    # append and cmpext in write ops, resolved against the object.
    for o in ("wa", "oplog"):
        try:
            io.remove_object(o)
        except rados.ObjectNotFound:
            pass
    with rados.WriteOpCtx() as op:
        op.append(b"AB")
        op.append(b"CD")
        io.operate_write_op(op, "wa")
    assert io.read("wa") == b"ABCD", io.read("wa")
    with rados.WriteOpCtx() as op:
        op.write_full(b"xy")
        op.append(b"z")
        op.truncate(5)
        op.append(b"!")
        io.operate_write_op(op, "wa")
    assert io.read("wa") == b"xyz\0\0!", io.read("wa")
    with rados.WriteOpCtx() as op:
        op.cmpext(b"xyz", 0)
        op.write(b"XY", 0)
        op.append(b"?")
        io.operate_write_op(op, "wa")
    assert io.read("wa") == b"XYz\0\0!?", io.read("wa")
    # A mismatch fails the whole write op, naming the byte; nothing written.
    with rados.WriteOpCtx() as op:
        op.cmpext(b"XYq", 0)
        op.append(b"never")
        try:
            io.operate_write_op(op, "wa")
            raise AssertionError("a mismatching cmpext let a write op through")
        except rados.ExtendMismatch as e:
            assert e.errno == MAX_ERRNO + 2, e.errno
    assert io.read("wa") == b"XYz\0\0!?"
    # A cmpext after a data change is refused, not compared wrongly.
    with rados.WriteOpCtx() as op:
        op.write(b"Q", 0)
        op.cmpext(b"Q", 0)
        try:
            io.operate_write_op(op, "wa")
            raise AssertionError("a cmpext after a write was applied")
        except rados.Error as e:
            assert e.errno == errno.EOPNOTSUPP, e
    assert io.read("wa") == b"XYz\0\0!?"
    # A cmpext on a missing object: ENOENT, as rados_cmpext.
    with rados.WriteOpCtx() as op:
        op.cmpext(b"a", 0)
        op.append(b"a")
        expect(rados.ObjectNotFound, io.operate_write_op, op, "wa-missing")
    # Asynchronously too.
    done = []
    with rados.WriteOpCtx() as op:
        op.append(b"+")
        comp = io.operate_aio_write_op(op, "wa", oncomplete=lambda c: done.append(c.get_return_value()))
        comp.wait_for_complete()
    assert io.read("wa") == b"XYz\0\0!?+", io.read("wa")


def concurrent_op_appends(cluster, pool):
    """Three clients append 30 records each through write ops at once:
    none is lost or overwritten."""
    errors = []

    def appender(k):
        try:
            with rados.Rados(conffile="") as c, c.open_ioctx(pool) as io:
                for i in range(30):
                    with rados.WriteOpCtx() as op:
                        op.append(b"<%d.%02d>" % (k, i))
                        io.operate_write_op(op, "oplog")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    run_clients(appender, 3, errors)
    with cluster.open_ioctx(pool) as io:
        data = io.read("oplog", 1 << 20)
        recs = sorted(data.decode().strip("<>").split("><"))
        assert recs == sorted("%d.%02d" % (k, i) for k in range(3) for i in range(30)), data


def bad_input(pool):
    lib, cl, io = c_connect(pool)
    try:
        f = lib.rados_writesame
        f.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                      ctypes.c_size_t, ctypes.c_size_t, ctypes.c_uint64]
        assert f(io, b"bad", b"abc", 3, 7, 0) == -errno.EINVAL
        assert f(io, b"bad", b"abc", 0, 0, 0) == -errno.EINVAL
        assert f(io, b"bad", b"abc", 3, 1 << 32, 0) == -errno.E2BIG
        assert f(io, None, b"abc", 3, 3, 0) == -errno.EINVAL
        ap = lib.rados_append
        ap.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
        assert ap(io, b"bad", None, 3) == -errno.EINVAL
        assert ap(io, b"bad", b"abc", 1 << 32) == -errno.E2BIG
        st = lib.rados_aio_stat
        st.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p,
                       ctypes.c_void_p, ctypes.c_void_p]
        # No completion: refused, nothing started.
        assert st(io, b"bad", None, None, None) == -errno.EINVAL
        ce = lib.rados_cmpext
        ce.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                       ctypes.c_size_t, ctypes.c_uint64]
        assert ce(io, b"cmp-missing", b"a", 1, 0) == -errno.ENOENT
        assert ce(io, b"cmp", None, 1, 0) == -errno.EINVAL
        # A bad append refuses its write op: nothing applied.
        lib.rados_create_write_op.restype = ctypes.c_void_p
        lib.rados_create_write_op.argtypes = []
        wop = ctypes.c_void_p(lib.rados_create_write_op())
        wa = lib.rados_write_op_append
        wa.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        wo = lib.rados_write_op_operate
        wo.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p,
                       ctypes.c_void_p, ctypes.c_int]
        wa(wop, b"abc", 3)
        wa(wop, None, 3)
        assert wo(wop, io, b"bad", None, 0) == -errno.EINVAL
        lib.rados_release_write_op.argtypes = [ctypes.c_void_p]
        lib.rados_release_write_op(wop)
        wop = ctypes.c_void_p(lib.rados_create_write_op())
        wa(wop, b"abc", 1 << 32)
        assert wo(wop, io, b"bad", None, 0) == -errno.E2BIG
        lib.rados_release_write_op(wop)
        # Nothing was written by the refused calls.
        r = lib.rados_stat
        r.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p]
        assert r(io, b"bad", None, None) == -errno.ENOENT
    finally:
        c_close(lib, cl, io)


def main():
    pool = sys.argv[1]
    with rados.Rados(conffile="") as cluster:
        with cluster.open_ioctx(pool) as io:
            sync_calls(io)
            async_calls(io)
            compound_ops(io)
        concurrent_appends(cluster, pool)
        concurrent_op_appends(cluster, pool)
    bad_input(pool)
    print("object ops OK")


if __name__ == "__main__":
    main()
