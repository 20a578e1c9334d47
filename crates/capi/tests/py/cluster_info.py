"""python3-rados's cluster and pool facts against Quarry.

Usage: cluster_info.py POOL FSID (FSID as `ceph fsid` printed it). Prints
"cluster info OK" when every check holds.
"""
import ctypes
import errno
import json
import sys

import rados
from qtest import c_connect, c_close


def main():
    pool, fsid = sys.argv[1], sys.argv[2]
    with rados.Rados(conffile="") as cluster:
        # OpenStack compares this to the fsid in an image's location to
        # decide whether it can clone instead of copying.
        assert cluster.get_fsid() == fsid, (cluster.get_fsid(), fsid)
        pid = cluster.pool_lookup(pool)
        assert cluster.pool_reverse_lookup(pid) == pool
        assert cluster.get_pool_base_tier(pid) == pid
        # The binding turns the library's ENOENT into None.
        for bad in (pid + 1000, -7):
            assert cluster.pool_reverse_lookup(bad) is None, bad
        try:
            cluster.get_pool_base_tier(pid + 1000)
            raise AssertionError("base tier of a missing pool")
        except rados.ObjectNotFound:
            pass
        with cluster.open_ioctx(pool) as io:
            assert io.alignment() is None, io.alignment()
        # Status and health through the monitor-command interface, as
        # monitoring tools ask for them.
        ret, out, _ = cluster.mon_command(json.dumps({"prefix": "status", "format": "json"}), b"")
        assert ret == 0, ret
        st = json.loads(out)
        assert st["fsid"] == fsid, st
        assert (st["osdmap"]["num_osds"], st["osdmap"]["num_up_osds"]) == (3, 3), st["osdmap"]
        assert st["health"]["status"].startswith("HEALTH_"), st["health"]
        assert sum(s["count"] for s in st["pgmap"]["pgs_by_state"]) == st["pgmap"]["num_pgs"], st
        ret, out, _ = cluster.mon_command(json.dumps({"prefix": "health"}), b"")
        assert ret == 0 and out.decode().startswith(st["health"]["status"]), (ret, out)
        ret, out, _ = cluster.mon_command(
            json.dumps({"prefix": "health", "detail": "detail", "format": "json"}), b"")
        assert ret == 0 and json.loads(out)["status"] == st["health"]["status"], (ret, out)
        ret, _, status = cluster.mon_command(json.dumps({"prefix": "status"}), b"")
        assert ret == -errno.EINVAL and "JSON only" in status, (ret, status)
    c_calls(pool, fsid)
    print("cluster info OK")


def c_calls(pool, fsid):
    """What the binding hides: the C calls' return values."""
    lib, cl, io = c_connect(None)
    buf = ctypes.create_string_buffer(64)
    assert lib.rados_cluster_fsid(cl, buf, 64) == len(fsid)
    assert buf.value.decode() == fsid
    assert lib.rados_cluster_fsid(cl, buf, len(fsid)) == -errno.ERANGE
    lib.rados_pool_reverse_lookup.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_char_p, ctypes.c_size_t]
    assert lib.rados_pool_reverse_lookup(cl, 1 << 40, buf, 64) == -errno.ENOENT
    c_close(lib, cl, io)


if __name__ == "__main__":
    main()
