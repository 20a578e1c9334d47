"""Helpers shared by the python3-rados/-rbd test scripts."""


def expect(exc, fn, *args, **kwargs):
    """fn(*args, **kwargs) must raise exc."""
    try:
        fn(*args, **kwargs)
    except exc:
        return
    raise AssertionError(f"{fn.__name__}{args} did not raise {exc.__name__}")


def c_connect(pool):
    """librados.so.2 through ctypes, connected as client.admin with the
    default config search ($CEPH_CONF), and an ioctx on `pool`: for the
    bad-input paths the python binding never takes. Returns
    (lib, cluster, ioctx); end with c_close."""
    import ctypes
    lib = ctypes.CDLL("librados.so.2")
    cl = ctypes.c_void_p()
    assert lib.rados_create2(ctypes.byref(cl), b"ceph", b"client.admin", 0) == 0
    assert lib.rados_conf_read_file(cl, None) == 0
    assert lib.rados_connect(cl) == 0
    io = ctypes.c_void_p()
    if pool is not None:
        assert lib.rados_ioctx_create(cl, pool.encode(), ctypes.byref(io)) == 0
    return lib, cl, io


def c_close(lib, cl, io):
    """End what c_connect made."""
    if io.value:
        lib.rados_ioctx_destroy(io)
    lib.rados_shutdown(cl)
