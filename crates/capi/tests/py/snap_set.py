"""rbd_snap_set / rbd_snap_set_by_id through python3-rbd against Quarry:
an open handle switched to a snapshot reads it (data and size), refuses
writes, and comes back to the head; with the write-back cache on, dirty
data reaches the head first and nothing cached from one view is read in
the other.

Usage: snap_set.py POOL. Prints "snap set OK" when every check holds.
"""
import sys

import rados
import rbd
from qtest import expect

MIB = 1 << 20


def check(cluster, pool, name):
    with cluster.open_ioctx(pool) as io:
        rbd.RBD().create(io, name, 8 * MIB)
        with rbd.Image(io, name) as img:
            img.write(b"a" * 4096, 0)
            img.create_snap("s1")
            img.write(b"b" * 4096, 0)
            img.resize(16 * MIB)
            img.flush()
            sid = [s["id"] for s in img.list_snaps() if s["name"] == "s1"][0]

            img.set_snap("s1")
            assert img.read(0, 4096) == b"a" * 4096
            assert img.size() == 8 * MIB, img.size()
            expect(rbd.ReadOnlyImage, img.write, b"x" * 512, 0)
            img.set_snap(None)
            assert img.read(0, 4096) == b"b" * 4096
            assert img.size() == 16 * MIB, img.size()

            img.set_snap_by_id(sid)
            assert img.read(0, 4096) == b"a" * 4096
            img.set_snap(None)

            # An unknown snapshot: ENOENT, and the handle stays on the head.
            expect(rbd.ImageNotFound, img.set_snap, "nope")
            expect(rbd.ImageNotFound, img.set_snap_by_id, sid + 1000)
            img.write(b"c" * 4096, 0)
            # The cached (dirty or clean) head is not what the snapshot reads.
            img.set_snap("s1")
            assert img.read(0, 4096) == b"a" * 4096
            img.set_snap(None)
            assert img.read(0, 4096) == b"c" * 4096
        with rbd.Image(io, name, read_only=True) as ro:
            assert ro.read(0, 4096) == b"c" * 4096
        with rbd.Image(io, name) as img:
            img.remove_snap("s1")
        rbd.RBD().remove(io, name)


def main():
    pool = sys.argv[1]
    with rados.Rados(conffile="") as cluster:
        check(cluster, pool, "snapset-plain")
    # The write-back cache from the first write (no flush needed first).
    # (rbd_cache_policy is a start-up option: given before connecting; the
    # default, writearound, would send writes straight to the cluster.)
    conf = {
        "rbd_cache": "true",
        "rbd_cache_policy": "writeback",
        "rbd_cache_writethrough_until_flush": "false",
        "rbd_cache_max_dirty_age": "60",
    }
    with rados.Rados(conffile="", conf=conf) as cluster:
        check(cluster, pool, "snapset-cached")
    print("snap set OK")


if __name__ == "__main__":
    main()
