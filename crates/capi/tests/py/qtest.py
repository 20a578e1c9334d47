"""Helpers shared by the python3-rados/-rbd test scripts."""


def expect(exc, fn, *args, **kwargs):
    """fn(*args, **kwargs) must raise exc."""
    try:
        fn(*args, **kwargs)
    except exc:
        return
    raise AssertionError(f"{fn.__name__}{args} did not raise {exc.__name__}")
