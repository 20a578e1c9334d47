"""python3-rbd's image administration calls against Quarry.

Usage: image_admin.py POOL. Prints "image admin OK" when every check holds.
"""
import datetime
import sys

import rados
import rbd
from qtest import expect


def main():
    pool = sys.argv[1]
    with rados.Rados(conffile="") as cluster:
        with cluster.open_ioctx(pool) as io:
            rbd.RBD().pool_init(io, False)
            # Pool metadata: set, read, list (past the binding's first
            # buffer), remove; a per-pool config override is one of them.
            r = rbd.RBD()
            r.pool_metadata_set(io, "owner", "ops")
            r.pool_metadata_set(io, "note", "n" * 300)
            r.pool_metadata_set(io, "conf_rbd_cache", "false")
            assert r.pool_metadata_get(io, "owner") == "ops"
            assert r.pool_metadata_get(io, "note") == "n" * 300
            listed = dict(r.pool_metadata_list(io))
            assert {k: listed[k] for k in ("owner", "note", "conf_rbd_cache")} == {
                "owner": "ops", "note": "n" * 300, "conf_rbd_cache": "false"}, listed
            # The effective rbd_* options with their sources (0 config,
            # 1 pool, 2 image), as an image of the pool would get them.
            opts = {o["name"]: o for o in r.config_list(io)}
            assert len(opts) > 20 and "rbd_cache" in opts, sorted(opts)
            assert (opts["rbd_cache"]["value"], opts["rbd_cache"]["source"]) == ("false", 1), opts["rbd_cache"]
            assert opts["rbd_cache_size"]["source"] == 0, opts["rbd_cache_size"]
            r.pool_metadata_remove(io, "owner")
            expect(KeyError, r.pool_metadata_get, io, "owner")
            expect(KeyError, r.pool_metadata_remove, io, "owner")
            for k in ("note", "conf_rbd_cache"):
                r.pool_metadata_remove(io, k)
            name = "admin-img"
            rbd.RBD().create(io, name, 8 << 20, old_format=False,
                             features=rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK)
            try:
                with rbd.Image(io, name) as img:
                    # Creation time: the header's, a moment ago.
                    age = datetime.datetime.utcnow() - img.create_timestamp()
                    assert datetime.timedelta(0) <= age < datetime.timedelta(minutes=2), age
                    # Features: object-map (it needs exclusive-lock) and
                    # fast-diff on and off; a fixed feature is refused.
                    img.update_features(rbd.RBD_FEATURE_OBJECT_MAP, True)
                    img.update_features(rbd.RBD_FEATURE_FAST_DIFF, True)
                    want = (rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF)
                    assert img.features() & want == want, hex(img.features())
                    expect(rbd.InvalidArgument, img.update_features,
                           rbd.RBD_FEATURE_EXCLUSIVE_LOCK, False)
                    img.update_features(rbd.RBD_FEATURE_FAST_DIFF, False)
                    img.update_features(rbd.RBD_FEATURE_OBJECT_MAP, False)
                    assert img.features() & want == 0, hex(img.features())
                    expect(rbd.InvalidArgument, img.update_features,
                           rbd.RBD_FEATURE_LAYERING, False)
                    # The handle's options: the pool's override (set above,
                    # removed since) was applied at open; an image override
                    # shows in handles opened after it.
                    img.metadata_set("conf_rbd_cache_size", "1048576")
                    with rbd.Image(io, name) as fresh:
                        o = {x["name"]: x for x in fresh.config_list()}
                        assert (o["rbd_cache_size"]["value"], o["rbd_cache_size"]["source"]) == ("1048576", 2), o["rbd_cache_size"]
                    img.metadata_remove("conf_rbd_cache_size")
                    # Snapshots removed by id.
                    img.write(b"a" * 4096, 0)
                    img.create_snap("s1")
                    img.create_snap("s2")
                    ids = {s["name"]: s["id"] for s in img.list_snaps()}
                    img.remove_snap_by_id(ids["s1"])
                    assert [s["name"] for s in img.list_snaps()] == ["s2"]
                    expect(rbd.ImageNotFound, img.remove_snap_by_id, ids["s1"])
                    img.remove_snap("s2")
                    # Watchers: this handle, then a second one as well.
                    w = list(img.watchers_list())
                    assert len(w) == 1 and w[0]["addr"], w
                    with rbd.Image(io, name) as other:
                        w2 = list(other.watchers_list())
                        assert len(w2) == 2, w2
                        assert len({x["cookie"] for x in w2}) == 2, w2
                    assert len(list(img.watchers_list())) == 1
                with rbd.Image(io, name, read_only=True) as ro:
                    expect(rbd.ReadOnlyImage, ro.update_features,
                           rbd.RBD_FEATURE_OBJECT_MAP, True)
            finally:
                rbd.RBD().remove(io, name)
    timestamps(pool)
    snap_limit(pool)
    feature_strings()
    sparsify(pool)
    print("image admin OK")


def sparsify(pool):
    """Image.sparsify: zeroed data gives its space back, reads unchanged;
    a sparse size that is not a power of two >= 4096 is EINVAL."""
    with rados.Rados(conffile="") as cluster, cluster.open_ioctx(pool) as io:
        rbd.RBD().create(io, "sparse-img", 8 << 20)
        try:
            with rbd.Image(io, "sparse-img") as img:
                data = b"d" * 4096 + b"\0" * (1 << 20) + b"e" * 4096
                img.write(data, 0)
                img.write(b"\0" * (4 << 20), 4 << 20)
                img.sparsify(4096)
                assert img.read(0, len(data)) == data
                assert img.read(4 << 20, 4 << 20) == b"\0" * (4 << 20)
                expect(rbd.InvalidArgument, img.sparsify, 1000)
        finally:
            rbd.RBD().remove(io, "sparse-img")


def feature_strings():
    """RBD.features_to_string / features_from_string (names in bit
    order, comma-separated; unknown names or bits are EINVAL)."""
    r = rbd.RBD()
    both = rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
    assert r.features_to_string(both) == "layering,exclusive-lock", r.features_to_string(both)
    assert r.features_to_string(0) == ""
    assert r.features_from_string("exclusive-lock,layering") == both
    assert r.features_from_string("5") == both
    expect(rbd.InvalidArgument, r.features_from_string, "layering,bogus")
    expect(rbd.InvalidArgument, r.features_to_string, 1 << 40)


def snap_limit(pool):
    """Image.set_snap_limit / get_snap_limit: a snapshot past the limit
    is EDQUOT, a limit below the count ERANGE, UINT64_MAX removes it."""
    import errno
    with rados.Rados(conffile="") as cluster, cluster.open_ioctx(pool) as io:
        rbd.RBD().create(io, "limit-img", 1 << 20)
        try:
            with rbd.Image(io, "limit-img") as img:
                assert img.get_snap_limit() == (1 << 64) - 1
                img.create_snap("a")
                img.set_snap_limit(1)
                assert img.get_snap_limit() == 1
                try:
                    img.create_snap("b")
                    raise AssertionError("a snapshot past the limit was taken")
                except rbd.Error as e:
                    assert e.errno == errno.EDQUOT, e
                try:
                    img.set_snap_limit(0)
                    raise AssertionError("a limit below the count was taken")
                except rbd.Error as e:
                    assert e.errno == errno.ERANGE, e
                img.set_snap_limit((1 << 64) - 1)
                img.create_snap("b")
                for s in ("a", "b"):
                    img.remove_snap(s)
        finally:
            rbd.RBD().remove(io, "limit-img")


def timestamps(pool):
    """Access and modify timestamps move with reads and writes (recorded
    at most once per rbd_atime/mtime_update_interval, here 1 s)."""
    import time
    with rados.Rados(conffile="") as cluster:
        cluster.conf_set("rbd_atime_update_interval", "1")
        cluster.conf_set("rbd_mtime_update_interval", "1")
        with cluster.open_ioctx(pool) as io:
            rbd.RBD().create(io, "ts-img", 1 << 20)
            try:
                with rbd.Image(io, "ts-img") as img:
                    c = img.create_timestamp()
                    assert img.access_timestamp() == c and img.modify_timestamp() == c
                    time.sleep(1.2)
                    img.write(b"x" * 512, 0)
                    assert img.modify_timestamp() > c, (img.modify_timestamp(), c)
                    img.read(0, 512)
                    assert img.access_timestamp() >= img.modify_timestamp()
                    m, a = img.modify_timestamp(), img.access_timestamp()
                # Another handle reads them from the header (written
                # without waiting: give it a moment).
                for _ in range(50):
                    with rbd.Image(io, "ts-img", read_only=True) as ro:
                        if (ro.modify_timestamp(), ro.access_timestamp()) == (m, a):
                            break
                    time.sleep(0.1)
                else:
                    raise AssertionError("the header never got the timestamps")
            finally:
                rbd.RBD().remove(io, "ts-img")


if __name__ == "__main__":
    main()
