"""What the psycopg2 client scripts of the integration tests share: the failure type, the
`expect`/`ok` reporting and the command-line runner (CONNECTION_STRING CHECK)."""

import sys
import threading
import time

import psycopg2


class CheckFailed(Exception):
    pass


def cancel_while(conn, finished):
    """Cancels `conn` (psycopg2's or psycopg 3's) every 0.3 s (at most 20 times) until `finished` is
    set: a cancel that arrives before the statement reaches the server cancels nothing, as with
    PostgreSQL itself."""
    def run():
        for _ in range(20):
            if finished.wait(0.3):
                return
            conn.cancel()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def ok(what):
    print("ok " + what, flush=True)


def connect(dsn, autocommit=True):
    """A psycopg2 connection, in autocommit mode unless told otherwise."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = autocommit
    return conn


def in_threads(workers, seconds):
    """Runs each worker(stop) in a thread until all have returned or `seconds` have passed, then sets
    `stop` (the workers end at their next look at it); re-raises the first error."""
    stop = threading.Event()
    errors = []

    def wrap(w):
        def go():
            try:
                w(stop)
            except Exception as e:  # reported below
                errors.append(e)
                stop.set()
        return go

    threads = [threading.Thread(target=wrap(w), daemon=True) for w in workers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stop.set()
    for t in threads:
        t.join(60)
        expect(not t.is_alive(), "a worker did not stop within 60 s")
    if errors:
        raise CheckFailed("a worker failed: %r" % errors[0])


def run(checks):
    """Runs the check named by argv[2] against the connection string argv[1]; returns the exit code."""
    if len(sys.argv) != 3 or sys.argv[2] not in checks:
        print("usage: %s CONNECTION_STRING {%s}" % (sys.argv[0], "|".join(checks)), file=sys.stderr)
        return 2
    dsn, name = sys.argv[1], sys.argv[2]
    try:
        checks[name](dsn)
    except CheckFailed as e:
        print("FAILED %s: %s" % (name, e), file=sys.stderr)
        return 1
    except psycopg2.Error as e:
        print("FAILED %s: %s (pgcode %s): %s" % (name, type(e).__name__, e.pgcode, e), file=sys.stderr)
        return 1
    print("PASSED " + name, flush=True)
    return 0
