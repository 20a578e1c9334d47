"""python3-rados's Ioctx.application_* against a Quarry cluster.

Usage: pool_applications.py POOL (a pool with only 'rbd' enabled, e.g.
after `rbd pool init`). Prints "applications OK" when every check holds.
"""
import errno
import json
import sys

import rados
from qtest import expect


def main():
    pool = sys.argv[1]
    with rados.Rados(conffile="") as cluster:
        with cluster.open_ioctx(pool) as io:
            assert io.application_list() == ["rbd"], io.application_list()
            # A second application needs force (EPERM), then both are listed.
            expect(rados.PermissionError, io.application_enable, "cephfs")
            io.application_enable("cephfs", True)
            io.application_enable("cephfs")  # already enabled: no error
            assert sorted(io.application_list()) == ["cephfs", "rbd"]
            # Keys: a value longer than the binding's first 128-byte buffer
            # takes its ERANGE-and-retry path.
            io.application_metadata_set("cephfs", "data", "fs1")
            long = "v" * 128
            io.application_metadata_set("cephfs", "long", long)
            assert io.application_metadata_get("cephfs", "data") == "fs1"
            assert io.application_metadata_get("cephfs", "long") == long
            meta = dict(io.application_metadata_list("cephfs"))
            assert meta == {"data": "fs1", "long": long}, meta
            # Bad input: a key of an application not enabled, a missing
            # key, a value over Ceph's 128-byte limit.
            expect(rados.ObjectNotFound, io.application_metadata_set, "rgw", "k", "v")
            expect(KeyError, io.application_metadata_get, "cephfs", "nope")
            expect(rados.ObjectNotFound, io.application_metadata_list, "rgw")
            expect(rados.InvalidArgumentError, io.application_metadata_set,
                   "cephfs", "k", "v" * 129)
            io.application_metadata_remove("cephfs", "data")
            meta = dict(io.application_metadata_list("cephfs"))
            assert meta == {"long": long}, meta
        # The monitor-command forms tools send (Proxmox, Terraform, scripts):
        # disable needs the flag; get answers JSON, or one key's value.
        def mon(**cmd):
            ret, out, status = cluster.mon_command(json.dumps(cmd), b"")
            return ret, out, status
        ret, _, status = mon(prefix="osd pool application disable", pool=pool, app="cephfs")
        assert ret == -errno.EPERM and "Are you SURE?" in status, (ret, status)
        ret, _, status = mon(prefix="osd pool application disable", pool=pool, app="cephfs",
                             yes_i_really_mean_it=True)
        assert (ret, status) == (0, f"disable application 'cephfs' on pool '{pool}'"), status
        ret, _, _ = mon(prefix="osd pool application enable", pool=pool, app="rgw")
        assert ret == -errno.EPERM, ret
        ret, _, status = mon(prefix="osd pool application set", pool=pool, app="rbd",
                             key="owner", value="ops")
        assert ret == 0, (ret, status)
        ret, out, _ = mon(prefix="osd pool application get", pool=pool, format="json")
        assert ret == 0 and json.loads(out) == {"rbd": {"owner": "ops"}}, (ret, out)
        ret, out, _ = mon(prefix="osd pool application get", pool=pool, app="rbd", key="owner")
        assert (ret, out) == (0, b"ops"), (ret, out)
        ret, _, _ = mon(prefix="osd pool application get", pool="nope")
        assert ret == -errno.ENOENT, ret
        ret, _, status = mon(prefix="osd pool application rm", pool=pool, app="rbd", key="owner")
        assert ret == 0, (ret, status)
        with cluster.open_ioctx(pool) as io:
            assert io.application_list() == ["rbd"], io.application_list()
            assert io.application_metadata_list("rbd") == [], io.application_metadata_list("rbd")
    print("applications OK")


if __name__ == "__main__":
    main()
