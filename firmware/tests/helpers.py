# Assertions for firmware tests; MicroPython has no unittest in the unix port's default set.


def assert_raises(exc_type, fn, *args):
    try:
        fn(*args)
    except exc_type:
        return
    raise AssertionError("%s not raised" % exc_type.__name__)


def assert_close(actual, expected, tolerance):
    if abs(actual - expected) > tolerance:
        raise AssertionError("%r is not within %r of %r" % (actual, tolerance, expected))
