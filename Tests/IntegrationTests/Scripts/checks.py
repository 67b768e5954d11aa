"""What the psycopg2 client scripts of the integration tests share: the failure type, the
`expect`/`ok` reporting and the command-line runner (CONNECTION_STRING CHECK)."""

import sys

import psycopg2


class CheckFailed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def ok(what):
    print("ok " + what, flush=True)


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
