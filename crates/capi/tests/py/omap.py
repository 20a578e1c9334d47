"""python3-rados's omap calls (compound write and read ops) against Quarry.

Usage: omap.py POOL. Prints "omap OK" when every check holds.
"""
import ctypes
import errno
import sys

import rados
from qtest import c_connect, c_close


def vals(io, oid, start="", prefix="", limit=100):
    """(dict of the omap entries, more) through a read op."""
    with rados.ReadOpCtx() as op:
        it, ret = io.get_omap_vals(op, start, prefix, limit)
        io.operate_read_op(op, oid)
        assert ret == 0, ret
        return dict(it)


def main():
    pool = sys.argv[1]
    with rados.Rados(conffile="") as cluster:
        with cluster.open_ioctx(pool) as io:
            io.write_full("om", b"data")
            with rados.WriteOpCtx() as op:
                io.set_omap(op, ("a1", "a2", "b1"), (b"x", b"\x00y", b""))
                io.operate_write_op(op, "om")
            assert vals(io, "om") == {"a1": b"x", "a2": b"\x00y", "b1": b""}, vals(io, "om")
            # Filters: after a key, a prefix, a count.
            assert list(vals(io, "om", start="a1")) == ["a2", "b1"]
            assert list(vals(io, "om", prefix="a")) == ["a1", "a2"]
            assert list(vals(io, "om", limit=1)) == ["a1"]
            with rados.ReadOpCtx() as op:
                it, ret = io.get_omap_keys(op, "", 10)
                io.operate_read_op(op, "om")
                assert [k for k, _ in it] == ["a1", "a2", "b1"]
            with rados.ReadOpCtx() as op:
                it, ret = io.get_omap_vals_by_keys(op, ("a2", "zz"))
                io.operate_read_op(op, "om")
                assert dict(it) == {"a2": b"\x00y"}
            # Asynchronously (rados_aio_read_op_operate): the iterator is
            # filled before the completion fires.
            with rados.ReadOpCtx() as op:
                it, ret = io.get_omap_vals(op, "", "a", 10)
                got = []
                comp = io.operate_aio_read_op(
                    op, "om", oncomplete=lambda c: got.append(c.get_return_value()))
                comp.wait_for_complete_and_cb()
                assert got == [0], got
                assert dict(it) == {"a1": b"x", "a2": b"\x00y"}
            with rados.ReadOpCtx() as op:
                op.cmpext(b"dat!", 0)
                comp = io.operate_aio_read_op(op, "om")
                comp.wait_for_complete()
                assert comp.get_return_value() == -4095 - 3, comp.get_return_value()
            with rados.ReadOpCtx() as op:
                it, ret = io.get_omap_vals(op, "", "", 10)
                comp = io.operate_aio_read_op(op, "om-missing")
                comp.wait_for_complete()
                assert comp.get_return_value() == -2, comp.get_return_value()
            with rados.WriteOpCtx() as op:
                io.remove_omap_keys(op, ("a1", "missing"))
                io.operate_write_op(op, "om")
            assert vals(io, "om") == {"a2": b"\x00y", "b1": b""}
            with rados.WriteOpCtx() as op:
                io.clear_omap(op)
                io.operate_write_op(op, "om")
            assert vals(io, "om") == {}
            assert io.read("om") == b"data"
            # A missing object: the read op fails, naming it.
            try:
                vals(io, "om-missing")
                raise AssertionError("omap of a missing object")
            except rados.ObjectNotFound:
                pass
            # An op Quarry does not support refuses the whole write op:
            # the omap keys set beside it are not applied.
            with rados.WriteOpCtx() as op:
                io.set_omap(op, ("c1",), (b"1",))
                io.remove_omap_range2(op, "a", "b")
                try:
                    io.operate_write_op(op, "om")
                    raise AssertionError("unsupported op applied")
                except rados.Error as e:
                    assert e.errno == errno.EOPNOTSUPP, e
            assert vals(io, "om") == {}
            io.remove_object("om")
    bad_write_op_arguments(pool)
    print("omap OK")


def bad_write_op_arguments(pool):
    """An adder given a NULL buffer with a length refuses its write op
    (EINVAL at operate) and nothing of the op is applied."""
    lib, cl, io = c_connect(pool)
    lib.rados_create_write_op.restype = ctypes.c_void_p
    lib.rados_write_op_write_full.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rados_write_op_write.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
    lib.rados_write_op_operate.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    lib.rados_release_write_op.argtypes = [ctypes.c_void_p]
    op = lib.rados_create_write_op()
    lib.rados_write_op_write_full(op, b"fresh", 5)
    lib.rados_write_op_write(op, None, 10, 0)
    assert lib.rados_write_op_operate(op, io, b"om-bad", None, 0) == -errno.EINVAL
    lib.rados_release_write_op(op)
    buf = ctypes.create_string_buffer(8)
    assert lib.rados_read(io, b"om-bad", buf, 8, ctypes.c_uint64(0)) == -errno.ENOENT
    c_close(lib, cl, io)


if __name__ == "__main__":
    main()
