# Minimal test runner for the MicroPython unix port (and a board, through mpremote):
# runs every test_* function of the named modules and prints one result line each.
#   MICROPYPATH=.frozen:firmware:firmware/tests micropython firmware/tests/mprun.py test_node
import gc
import sys


def run_module(name):
    failures = 0
    loaded = set(sys.modules)
    module = __import__(name)
    for attr in sorted(dir(module)):
        if not attr.startswith("test_"):
            continue
        fn = getattr(module, attr)
        try:
            fn()
        except Exception as exc:  # report and go on with the next test
            failures += 1
            print("FAIL", name, attr)
            sys.print_exception(exc)
        else:
            print("PASS", name, attr)
    # Unloaded, with the modules it brought in, before the next one: one process runs them
    # all within a board-sized heap.
    del module
    for other in [m for m in sys.modules if m not in loaded]:
        del sys.modules[other]
    gc.collect()
    return failures


def main(names):
    failures = 0
    for name in names:
        failures += run_module(name)
    print("DONE", failures)
    return 1 if failures else 0


sys.exit(main(sys.argv[1:]))
