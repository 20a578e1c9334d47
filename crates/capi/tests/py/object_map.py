"""rbd_rebuild_object_map through python3-rbd against Quarry: an image's
object map is lost while a handle owns the exclusive lock and writes; a
second handle sees the map invalid and asks for a rebuild, which the
owner runs (proxied, as librbd); afterwards both handles trust a map
that matches the data, and reads return every byte written. An image
without the object-map feature is refused (EINVAL).

Usage: object_map.py POOL. Prints "object map OK".
"""
import sys

import rados
import rbd
from qtest import expect

MIB = 1 << 20


def main(pool):
    with rados.Rados(conffile="") as cluster:
        with cluster.open_ioctx(pool) as ioctx:
            run(ioctx)
    print("object map OK")


def run(ioctx):
    r = rbd.RBD()
    r.create(ioctx, "om", 16 * MIB)
    owner = rbd.Image(ioctx, "om")
    try:
        a, b = b"A" * 4096, b"B" * 8192
        owner.write(a, 0)
        owner.write(b, 8 * MIB + 512)
        assert owner.is_exclusive_lock_owner()
        ioctx.remove_object("rbd_object_map." + owner.id())

        other = rbd.Image(ioctx, "om")
        try:
            assert other.flags() & rbd.RBD_FLAG_OBJECT_MAP_INVALID, other.flags()
            other.rebuild_object_map()
            # The owner ran it; every open handle re-read the map.
            assert other.flags() & rbd.RBD_FLAG_OBJECT_MAP_INVALID == 0, other.flags()
            assert owner.flags() & rbd.RBD_FLAG_OBJECT_MAP_INVALID == 0, owner.flags()
            assert other.read(0, 4096) == a
            assert other.read(8 * MIB + 512, 8192) == b
            assert other.read(4 * MIB, 4096) == b"\0" * 4096
            assert owner.is_exclusive_lock_owner()
        finally:
            other.close()
        # A new write after the rebuild lands in the map too.
        owner.write(b"C" * 4096, 12 * MIB)
    finally:
        owner.close()
    with rbd.Image(ioctx, "om", read_only=True) as img:
        assert img.flags() & rbd.RBD_FLAG_OBJECT_MAP_INVALID == 0, img.flags()
        assert img.read(12 * MIB, 4096) == b"C" * 4096
        assert img.read(0, 4096) == a
    r.remove(ioctx, "om")

    r.create(ioctx, "om-plain", MIB, features=rbd.RBD_FEATURE_LAYERING)
    with rbd.Image(ioctx, "om-plain") as img:
        expect(rbd.InvalidArgument, img.rebuild_object_map)
    r.remove(ioctx, "om-plain")


if __name__ == "__main__":
    main(sys.argv[1])
