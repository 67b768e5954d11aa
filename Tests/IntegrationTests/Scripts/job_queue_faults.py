"""A job queue and leader election through pgchorusd while the test stops the lead backend.

Workers take their next job with SELECT … FOR UPDATE SKIP LOCKED, work on it, and mark it by key
in the same transaction; electors take a session-level advisory lock with pg_try_advisory_lock(),
count a round while they lead, and let go. Both kinds hold locks that live on the lead alone: when
it fails, a session that held them must not go on as if it still did (another one takes the same
job or the same lock on the next lead). A session that loses its connection reconnects and goes on,
as job-queue libraries and schedulers do.

Arguments: dsn, workers, jobs, electors, and "follower" when the backend hit is not the lead: then
no session may lose its connection either (a minority failure is invisible). Prints PASSED and exits 0 when every job was taken exactly
once, no worker found its job taken by another while it held it, no elector found the lock it held
gone, and the rounds counted are those the electors saw committed (plus at most one per lost
session, whose answer the failure took)."""
import sys
import threading
import time

import psycopg2

dsn, workers, jobs, electors = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
follower = len(sys.argv) > 5 and sys.argv[5] == "follower"
deadline = time.monotonic() + 150  # a debug build beside the whole suite takes ~10 jobs a second
errors, lost, taken, led = [], [], [], []


def connect():
    """A new session (bounded: 100 tries, 0.1 s apart, while the node fails the lead)."""
    last = None
    for _ in range(100):
        try:
            return psycopg2.connect(dsn)
        except psycopg2.OperationalError as e:
            last = e
            time.sleep(0.1)
    raise last


setup = connect()
setup.autocommit = True
cur = setup.cursor()
cur.execute("create table jobs (id int primary key, taken bool not null default false, worker int)")
cur.execute("insert into jobs (id) select g from generate_series(1, %s) g", (jobs,))
cur.execute("create table rounds (id int primary key, n int not null)")
cur.execute("insert into rounds values (1, 0)")
setup.close()
done = threading.Event()


def work(w):
    try:
        conn = connect()
        while time.monotonic() < deadline:
            try:
                with conn:
                    with conn.cursor() as k:
                        k.execute("select id from jobs where not taken order by id limit 1 for update skip locked")
                        row = k.fetchone()
                        if row is None:
                            k.execute("select count(*) from jobs where not taken")
                            if k.fetchone()[0] == 0:
                                return
                            continue
                        time.sleep(0.003)  # the work
                        k.execute("update jobs set taken = true, worker = %s where id = %s and not taken", (w, row[0]))
                        if k.rowcount != 1:
                            errors.append(f"worker {w}: job {row[0]} was taken by another worker while this one held it")
                taken.append(row[0])
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
                lost.append(f"worker {w}: {str(e).strip()}")
                conn = connect()
        errors.append(f"worker {w}: out of time")
    except Exception as e:  # noqa: BLE001 - reported, the test fails on it
        errors.append(f"worker {w}: {e}")


def elect(w):
    try:
        conn = connect()
        conn.autocommit = True
        while not done.is_set() and time.monotonic() < deadline:
            try:
                k = conn.cursor()
                k.execute("select pg_try_advisory_lock(7451)")
                if k.fetchone()[0]:
                    k.execute("update rounds set n = n + 1 where id = 1")
                    led.append(w)
                    time.sleep(0.01)  # leading
                    k.execute("select pg_advisory_unlock(7451)")
                    if not k.fetchone()[0]:
                        errors.append(f"elector {w}: the lock it held was gone while it led")
                else:
                    time.sleep(0.002)
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
                lost.append(f"elector {w}: {str(e).strip()}")
                conn = connect()
                conn.autocommit = True
    except Exception as e:  # noqa: BLE001 - reported, the test fails on it
        errors.append(f"elector {w}: {e}")


threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
electing = [threading.Thread(target=elect, args=(w,)) for w in range(electors)]
for t in threads + electing:
    t.start()
for t in threads:
    t.join(max(1, deadline + 10 - time.monotonic()))
done.set()
for t in electing:
    t.join(max(1, deadline + 10 - time.monotonic()))

check = connect()
cur = check.cursor()
cur.execute("select count(*) filter (where taken), count(*) from jobs")
marked, total = cur.fetchone()
cur.execute("select n from rounds where id = 1")
rounds = cur.fetchone()[0]
print("errors", errors[:5])
print("lost", len(lost), lost[:3])
print("taken", marked, "of", total, "seen", len(taken), "distinct", len(set(taken)))
print("rounds", rounds, "led", len(led))
ok = (not errors and marked == jobs and len(set(taken)) == len(taken) and len(led) > 0
      and len(led) <= rounds <= len(led) + len(lost) and not (follower and lost))
print("PASSED" if ok else "FAILED")
sys.exit(0 if ok else 1)
