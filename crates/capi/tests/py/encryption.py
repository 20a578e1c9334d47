"""LUKS image encryption through python3-rbd against Quarry, the golden
image flow: format an image, write through the encryption, snapshot,
protect and clone it; the clone opens with the golden image's passphrase
and reads its data, its writes stay its own; the snapshot reads the old
data; wrong passphrases, wrong versions and loading twice are refused.
Then the same with the write-back cache on (the cache holds ciphertext
below the encryption).

Usage: encryption.py POOL. Prints "encryption OK" when every check holds.
"""
import sys

import rados
import rbd
from qtest import expect

MIB = 1 << 20
PASS = "golden passphrase"
LUKS2 = rbd.RBD_ENCRYPTION_FORMAT_LUKS2


def check(cluster, pool, tag):
    gold, vm = f"gold-{tag}", f"vm-{tag}"
    with cluster.open_ioctx(pool) as io:
        rbd.RBD().create(io, gold, 64 * MIB, old_format=False,
                         features=rbd.RBD_FEATURE_LAYERING)
        with rbd.Image(io, gold) as img:
            raw = img.size()
            img.encryption_format(LUKS2, PASS, rbd.RBD_ENCRYPTION_ALGORITHM_AES128)
            offset = raw - img.size()
            # LUKS2's header, aligned to the 4 MiB objects.
            assert offset > 0 and offset % (4 * MIB) == 0, offset
            expect(rbd.ImageExists, img.encryption_load, LUKS2, PASS)
            img.write(b"g" * (2 * MIB), 0)
            # Not sector-aligned: a read-modify-write of two 4 KiB sectors.
            img.write(b"h" * 1000, 4000)
            assert img.read(3990, 1020) == b"g" * 10 + b"h" * 1000 + b"g" * 10
            # Never written: zeros, not decrypted garbage.
            assert img.read(8 * MIB, 4096) == bytes(4096)
            # Eight 512-byte writes into one 4 KiB sector, all in flight at
            # once: each is a read-modify-write of that sector, and none
            # may write back another's old bytes.
            at = 16 * MIB
            parts = [bytes([0x30 + i]) * 512 for i in range(8)]
            comps = [img.aio_write(p, at + i * 512, lambda c: None)
                     for i, p in enumerate(parts)]
            for c in comps:
                c.wait_for_complete_and_cb()
                assert c.get_return_value() == 0, c.get_return_value()
            assert img.read(at, 4096) == b"".join(parts)
            img.flush()
            img.create_snap("base")
            img.protect_snap("base")
            img.write(b"n" * 4096, 0)
        rbd.RBD().clone(io, gold, "base", io, vm, features=rbd.RBD_FEATURE_LAYERING)
        with rbd.Image(io, vm) as img:
            # Without the key the clone is the raw image: header, ciphertext.
            assert img.size() == raw
            assert img.read(0, 4) == b"LUKS"
            assert b"g" * 64 not in img.read(offset, 64 * 1024)
        with rbd.Image(io, vm) as img:
            expect(rbd.PermissionError, img.encryption_load, LUKS2, "wrong")
            expect(rbd.InvalidArgument, img.encryption_load,
                   rbd.RBD_ENCRYPTION_FORMAT_LUKS1, PASS)
            img.encryption_load(LUKS2, PASS)
            assert img.size() == raw - offset
            assert img.read(0, 4000) == b"g" * 4000
            assert img.read(4000, 1000) == b"h" * 1000
            img.write(b"c" * 4096, 8192)
            assert img.read(8192, 4096) == b"c" * 4096
        with rbd.Image(io, gold, snapshot="base") as snap:
            snap.encryption_load(LUKS2, PASS)
            assert snap.read(0, 4000) == b"g" * 4000
            assert snap.read(8192, 4096) == b"g" * 4096
        with rbd.Image(io, gold) as img:
            img.encryption_load(LUKS2, PASS)
            assert img.read(0, 4096) == b"n" * 4096
            assert img.read(8192, 4096) == b"g" * 4096
        rbd.RBD().remove(io, vm)
        with rbd.Image(io, gold) as img:
            img.unprotect_snap("base")
            img.remove_snap("base")
        rbd.RBD().remove(io, gold)


def damaged_headers(cluster, pool):
    """A header without its magic is no LUKS header (EINVAL); damaged key
    material opens nothing (EPERM); neither hangs or crashes."""
    name = "damaged"
    with cluster.open_ioctx(pool) as io:
        rbd.RBD().create(io, name, 16 * MIB)
        with rbd.Image(io, name) as img:
            img.encryption_format(rbd.RBD_ENCRYPTION_FORMAT_LUKS1, PASS)
        with rbd.Image(io, name) as img:
            # LUKS1 key slot 0's material starts at sector 8.
            img.write(b"\xff" * 4096, 4096)
        with rbd.Image(io, name) as img:
            expect(rbd.PermissionError, img.encryption_load,
                   rbd.RBD_ENCRYPTION_FORMAT_LUKS1, PASS)
        with rbd.Image(io, name) as img:
            img.write(bytes(512), 0)
        with rbd.Image(io, name) as img:
            expect(rbd.InvalidArgument, img.encryption_load,
                   rbd.RBD_ENCRYPTION_FORMAT_LUKS1, PASS)
        # An image smaller than a header cannot be formatted.
        rbd.RBD().create(io, "tiny", 1 * MIB)
        with rbd.Image(io, "tiny") as img:
            expect(rbd.NoSpace, img.encryption_format,
                   rbd.RBD_ENCRYPTION_FORMAT_LUKS1, PASS)
        rbd.RBD().remove(io, "tiny")
        rbd.RBD().remove(io, name)


def main():
    pool = sys.argv[1]
    with rados.Rados(conffile="") as cluster:
        check(cluster, pool, "plain")
        damaged_headers(cluster, pool)
    conf = {
        "rbd_cache": "true",
        "rbd_cache_policy": "writeback",
        "rbd_cache_writethrough_until_flush": "false",
    }
    with rados.Rados(conffile="", conf=conf) as cluster:
        check(cluster, pool, "cached")
    print("encryption OK")


if __name__ == "__main__":
    main()
