# Assertions for firmware tests; MicroPython has no unittest in the unix port's default set.
import os


def scratch(name):
    """A path for files a test writes, inside the folder the runner made for this run."""
    return (os.getenv("FIRMWARE_TEST_DIR") or "/tmp") + "/" + name


def assert_raises(exc_type, fn, *args):
    try:
        fn(*args)
    except exc_type:
        return
    raise AssertionError("%s not raised" % exc_type.__name__)


def assert_close(actual, expected, tolerance):
    if abs(actual - expected) > tolerance:
        raise AssertionError("%r is not within %r of %r" % (actual, tolerance, expected))
