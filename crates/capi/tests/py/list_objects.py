"""python3-rados's Ioctx.list_objects() and get_xattrs() against Quarry.

Usage: list_objects.py POOL (a pool without other objects named lo-*).
Prints "listing OK" when every check holds.
"""
import sys

import rados


def names(io, prefix="lo-"):
    """(namespace, name) of the listed objects whose name has the prefix."""
    return sorted((o.nspace, o.key) for o in io.list_objects() if o.key.startswith(prefix))


def main():
    pool = sys.argv[1]
    with rados.Rados(conffile="") as cluster:
        with cluster.open_ioctx(pool) as io:
            for i in range(5):
                io.write_full(f"lo-{i}", b"x" * i)
            io.set_namespace("tenant")
            io.write_full("lo-t", b"t")
            # The ioctx's namespace only.
            assert names(io) == [("tenant", "lo-t")], names(io)
            io.set_namespace("")
            want = [("", f"lo-{i}") for i in range(5)]
            assert names(io) == want, names(io)
            # Every namespace.
            io.set_namespace(rados.LIBRADOS_ALL_NSPACES)
            assert names(io) == want + [("tenant", "lo-t")], names(io)
            # Objects read through what the listing returns.
            io.set_namespace("")
            for o in io.list_objects():
                if o.key == "lo-3":
                    assert o.read() == b"xxx"
            io.remove_object("lo-0")
            assert names(io) == want[1:], names(io)
            # Every xattr of an object at once (binary values kept).
            io.set_xattr("lo-1", "user.a", b"1")
            io.set_xattr("lo-1", "user.b", b"\x00\xffbin")
            assert dict(io.get_xattrs("lo-1")) == {"user.a": b"1", "user.b": b"\x00\xffbin"}
            assert dict(io.get_xattrs("lo-2")) == {}
            try:
                dict(io.get_xattrs("lo-missing"))
                raise AssertionError("xattrs of a missing object")
            except rados.ObjectNotFound:
                pass
            # A listing abandoned part way is closed without error.
            it = io.list_objects()
            next(it)
            del it
    print("listing OK")


if __name__ == "__main__":
    main()
