"""Advisory locks through python3-rados (object locks) and python3-rbd
(image locks) against Quarry, with ctypes checks of the C calls the
bindings do not reach (rados_list_lockers, rados_break_lock) and of bad
input.

Usage: advisory_locks.py POOL. Prints "locks OK" when every check holds.
"""
import ctypes
import sys

import rados
import rbd
from qtest import c_close, c_connect, expect


def c_list_lockers(lib, io, obj, name):
    """rados_list_lockers with buffers too small first (the ERANGE path)."""
    excl = ctypes.c_int(-1)
    lens = [ctypes.c_size_t(1) for _ in range(4)]
    bufs = [ctypes.create_string_buffer(1) for _ in range(4)]
    args = [io, obj, name, ctypes.byref(excl)]
    for b, n in zip(bufs, lens):
        args += [b, ctypes.byref(n)]
    r = lib.rados_list_lockers(*args)
    if r == 0:
        return []
    assert r == -34, r  # ERANGE, lengths set
    bufs = [ctypes.create_string_buffer(n.value) for n in lens]
    args = [io, obj, name, ctypes.byref(excl)]
    for b, n in zip(bufs, lens):
        args += [b, ctypes.byref(n)]
    r = lib.rados_list_lockers(*args)
    assert r >= 0, r
    split = [b.raw[:n.value].split(b"\0")[:-1] for b, n in zip(bufs[1:], lens[1:])]
    return excl.value, bufs[0].value.decode(), list(zip(*split)), r


def object_locks(pool):
    with rados.Rados(conffile="") as a, rados.Rados(conffile="") as b:
        with a.open_ioctx(pool) as ia, b.open_ioctx(pool) as ib:
            try:
                ia.remove_object("lk-obj")
            except rados.ObjectNotFound:
                pass
            ia.lock_exclusive("lk-obj", "n", "ca", desc="mine")
            expect(rados.ObjectExists, ia.lock_exclusive, "lk-obj", "n", "ca")
            expect(rados.ObjectBusy, ib.lock_exclusive, "lk-obj", "n", "cb")
            expect(rados.ObjectBusy, ib.lock_shared, "lk-obj", "n", "cb", "t")
            expect(rados.ObjectNotFound, ib.unlock, "lk-obj", "n", "ca")
            # Renewal (LIBRADOS_LOCK_FLAG_MAY_RENEW) keeps it.
            ia.lock_exclusive("lk-obj", "n", "ca", flags=1)
            ia.unlock("lk-obj", "n", "ca")
            ib.lock_shared("lk-obj", "n", "s1", "t")
            ia.lock_shared("lk-obj", "n", "s2", "t")
            expect(rados.ObjectBusy, ia.lock_shared, "lk-obj", "n", "s3", "u")

    lib, cl, io = c_connect(pool)
    try:
        excl, tag, holders, n = c_list_lockers(lib, io, b"lk-obj", b"n")
        assert (excl, tag, n) == (0, "t", 2), (excl, tag, n)
        cookies = sorted(h[1] for h in holders)
        assert cookies == [b"s1", b"s2"], holders
        assert all(h[0].startswith(b"client.") and h[2].startswith(b"127.0.0.1:0/") for h in holders), holders
        # Anyone may break a holder; a missing one is ENOENT.
        for client, cookie, _ in holders:
            assert lib.rados_break_lock(io, b"lk-obj", b"n", client, cookie) == 0
        assert lib.rados_break_lock(io, b"lk-obj", b"n", holders[0][0], holders[0][1]) == -2
        assert c_list_lockers(lib, io, b"lk-obj", b"n") == []
        # Bad input: unknown flags, a negative duration, NULL names.
        assert lib.rados_lock_exclusive(io, b"lk-obj", b"n", b"c", b"", None, 0x80) == -22

        class Timeval(ctypes.Structure):
            _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]
        bad = Timeval(-1, 0)
        assert lib.rados_lock_exclusive(io, b"lk-obj", b"n", b"c", b"", ctypes.byref(bad), 0) == -22
        assert lib.rados_lock_exclusive(io, b"lk-obj", None, b"c", b"", None, 0) == -22
        assert lib.rados_lock_exclusive(io, b"lk-obj", b"", b"c", b"", None, 0) == -22
        assert lib.rados_unlock(io, b"lk-obj", b"n", None) == -22
        # A one-second lock lapses.
        one = Timeval(1, 0)
        assert lib.rados_lock_exclusive(io, b"lk-obj", b"n", b"c", b"", ctypes.byref(one), 0) == 0
    finally:
        c_close(lib, cl, io)
    import time
    time.sleep(1.2)
    with rados.Rados(conffile="") as b, b.open_ioctx(pool) as ib:
        ib.lock_exclusive("lk-obj", "n", "later")
        ib.remove_object("lk-obj")


def image_locks(pool):
    with rados.Rados(conffile="") as a, rados.Rados(conffile="") as b:
        with a.open_ioctx(pool) as ia, b.open_ioctx(pool) as ib:
            rbd.RBD().create(ia, "lk-img", 8 << 20)
            with rbd.Image(ia, "lk-img") as x, rbd.Image(ib, "lk-img") as y:
                assert x.list_lockers() == []
                x.lock_exclusive("mine")
                got = y.list_lockers()
                assert got["exclusive"] is True and got["tag"] == "", got
                assert len(got["lockers"]) == 1 and got["lockers"][0][1] == "mine", got
                expect(rbd.ImageExists, x.lock_exclusive, "mine")
                expect(rbd.ImageBusy, y.lock_exclusive, "yours")
                expect(rbd.ImageNotFound, y.unlock, "mine")
                # The image's exclusive lock cannot be taken meanwhile.
                expect(rbd.ImageBusy, y.write, b"x" * 512, 0)
                x.unlock("mine")
                y.write(b"y" * 512, 0)
                # Now y owns the exclusive lock: listed as librbd does.
                got = x.list_lockers()
                assert got["exclusive"] is True and got["tag"] == "internal", got
                assert got["lockers"][0][1].startswith("auto "), got
                expect(rbd.ImageBusy, x.lock_shared, "s", "t")
            with rbd.Image(ia, "lk-img") as x, rbd.Image(ib, "lk-img") as y:
                x.lock_shared("s1", "t")
                y.lock_shared("s2", "t")
                got = y.list_lockers()
                assert got["exclusive"] is False and got["tag"] == "t", got
                assert sorted(l[1] for l in got["lockers"]) == ["s1", "s2"], got
                x.unlock("s1")
                y.unlock("s2")
                assert x.list_lockers() == []
    # Breaking another client's lock fences that client first
    # (rbd_blocklist_on_break_lock, on by default as in Ceph).
    with rados.Rados(conffile="") as c, rados.Rados(conffile="") as d:
        with c.open_ioctx(pool) as ic, d.open_ioctx(pool) as id_:
            x = rbd.Image(ic, "lk-img")
            x.lock_exclusive("victim")
            with rbd.Image(id_, "lk-img") as y:
                holder = y.list_lockers()["lockers"][0][0]
                expect(rbd.ImageNotFound, y.break_lock, holder, "other")
                y.break_lock(holder, "victim")
                assert y.list_lockers() == []
            expect(rbd.ConnectionShutdown, x.read, 0, 512)
            try:
                x.close()
            except rbd.ConnectionShutdown:
                pass
            rbd.RBD().remove(id_, "lk-img")


def main():
    pool = sys.argv[1]
    object_locks(pool)
    image_locks(pool)
    print("locks OK")


if __name__ == "__main__":
    main()
