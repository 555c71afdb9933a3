#!/usr/bin/env python3
"""Runs the Python integration tests: every function test_* of every
tests/integration/test_*.py, in file order, each in its own process group
with a time limit, so that a hung test and everything it started are killed.

  runner.py [--counts FILE] BIN [PATTERN...]

prints one line per test, "PASS name (1.2 s)" or "FAIL name: reason (logs:
DIR)", and writes "PASSED FAILED" to FILE.  PATTERNs select tests whose name
contains one of them.  A passing test's directory is removed; a failing
one's is kept (POSTERN_IT_KEEP=1 keeps all).  POSTERN_IT_VERBOSE=1 prints a
failing test's full output."""

import faulthandler
import importlib
import inspect
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
# No __pycache__ in the source tree.
sys.dont_write_bytecode = True
DEFAULT_TIMEOUT = 120


def discover():
    tests = []
    sys.path.insert(0, HERE)
    for fn in sorted(os.listdir(HERE)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        mod = importlib.import_module(fn[:-3])
        funcs = [(inspect.getsourcelines(f)[1], n, f)
                 for n, f in vars(mod).items()
                 if n.startswith("test_") and inspect.isfunction(f)
                 and f.__module__ == mod.__name__]
        for _, n, f in sorted(funcs):
            tests.append((mod.__name__, n, getattr(f, "timeout",
                                                   DEFAULT_TIMEOUT)))
    return tests


def run_one(spec, result_path, bindir, limit):
    """Child side: runs one test function, writes PASS or FAIL reason.
    Shortly before the runner's time limit, every thread's stack goes to
    the test's log, to show where it hung."""
    faulthandler.dump_traceback_later(max(1.0, float(limit) - 2.0))
    sys.path.insert(0, HERE)
    modname, fname = spec.split(":")
    from harness import TestFailure
    try:
        mod = importlib.import_module(modname)
        getattr(mod, fname)(bindir)
        outcome = "PASS"
    except TestFailure as e:
        traceback.print_exc()
        outcome = "FAIL " + str(e)
    except Exception as e:
        traceback.print_exc()
        outcome = "FAIL %s: %s" % (type(e).__name__, e)
    sys.stdout.flush()
    with open(result_path, "w") as f:
        f.write(outcome)


def one_line(text, limit=400):
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def main(argv):
    if len(argv) >= 1 and argv[0] == "--one":
        run_one(argv[1], argv[2], argv[3], argv[4])
        return 0
    counts = None
    if len(argv) >= 2 and argv[0] == "--counts":
        counts = argv[1]
        argv = argv[2:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    bindir = os.path.abspath(argv[0])
    patterns = argv[1:]
    keep = os.environ.get("POSTERN_IT_KEEP") == "1"
    verbose = os.environ.get("POSTERN_IT_VERBOSE") == "1"
    passed = failed = 0
    for modname, fname, limit in discover():
        name = fname[len("test_"):]
        if patterns and not any(p in name for p in patterns):
            continue
        tmp = tempfile.mkdtemp(prefix="postern-it-%s-" % name)
        result = os.path.join(tmp, "result")
        log = os.path.join(tmp, "test.log")
        env = dict(os.environ, POSTERN_IT_TMP=tmp, PYTHONUNBUFFERED="1",
                   PYTHONDONTWRITEBYTECODE="1")
        t0 = time.monotonic()
        with open(log, "wb") as lf:
            p = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--one",
                 "%s:%s" % (modname, fname), result, bindir, str(limit)],
                stdout=lf, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, cwd=HERE)
            try:
                p.wait(timeout=limit)
                outcome = None
            except subprocess.TimeoutExpired:
                outcome = "FAIL timed out after %d s" % limit
            # Whatever the test left behind in its process group goes too.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        dt = time.monotonic() - t0
        if outcome is None:
            try:
                with open(result) as f:
                    outcome = f.read()
            except OSError:
                outcome = "FAIL test process died (exit %s)" % p.returncode
        if outcome == "PASS":
            passed += 1
            print("PASS %s (%.1f s)" % (name, dt), flush=True)
            if not keep:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            failed += 1
            print("FAIL %s: %s (%.1f s; logs: %s)"
                  % (name, one_line(outcome[5:]), dt, tmp), flush=True)
            if verbose:
                with open(log, errors="replace") as f:
                    sys.stdout.write(f.read())
                sys.stdout.flush()
    if counts:
        with open(counts, "w") as f:
            f.write("%d %d\n" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
