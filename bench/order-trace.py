#!/usr/bin/env python3
"""Reads the order trace nodes write with PGCHORUS_ORDER_TRACE=<file> (Sources/Proxy/Replication/
OrderTrace.swift) and reports every statement that did not see the same commits on every backend.

On a backend, a statement S takes its snapshot when it starts — once written there and once the
session's previous statement has finished there — and a commit C becomes visible inside [COMMIT
PREPARED written, done]. C is *before* S there if C was done before S started, *after* if S started
before C was written, and *overlapping* otherwise (C applied while S was starting). The cluster-wide order promises
the same relation on every backend; the report lists each S and C whose relations differ, with
the events around them.

Limit: "written to a backend" stands for "started there". A loaded backend may read a statement some
time after it was written, and a commit written meanwhile lands before it there: that is not reported.
Look instead for a statement parked (`PK`) right after the probe saw it waiting (`P`), then another
commit (`CP`) on a backend that had not finished it (how the ClientRead parks of 2026-12-06 showed).

usage: order-trace.py TRACE [--match REGEX] [--context N]
"""
import argparse
import bisect
import collections
import re
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--match", default=r"(?i)^\s*(insert|update|delete)", help="statements to check (their SQL)")
    ap.add_argument("--context", type=int, default=0, help="events to print around each finding")
    ap.add_argument("--limit", type=int, default=20)
    a = ap.parse_args()

    stmts = {}   # (node, sid, seq) -> {"text":..., "W": {b: t}, "D": {b: t}, "X": set()}
    commits = {}  # gid -> {"P": {b: t}, "D": {b: t}, "cmd":..., "node":...}
    events = []
    marks = []
    with open(a.trace) as f:
        for line in f:
            parts = line.rstrip("\n").split(" ", 5)
            if len(parts) < 3:
                continue
            t, node, what = int(parts[0]), parts[1], parts[2]
            events.append((t, line.rstrip("\n")))
            if what in ("W", "D", "X"):
                sid, seq, backend = parts[3], int(parts[4]), parts[5].split(" ", 1)[0].split("@")[0]
                s = stmts.setdefault((node, sid, seq), {"text": "", "W": {}, "D": {}, "X": set()})
                if what == "W":
                    s["W"][backend] = t
                    rest = parts[5].split(" ", 1)
                    if len(rest) > 1 and not s["text"]:
                        s["text"] = rest[1]
                elif what == "D":
                    s["D"][backend] = t
                else:
                    s["X"].add(backend)
            elif what in ("CP", "CD"):
                sid, gid, backend = parts[3], parts[4], parts[5].split(" ", 1)[0].split("@")[0]
                c = commits.setdefault(gid, {"P": {}, "D": {}, "cmd": "", "node": node})
                if what == "CP":
                    c["P"][backend] = t
                    c["cmd"] = parts[5].split(" ", 1)[1] if " " in parts[5] else ""
                else:
                    c["D"][backend] = t
            elif what in ("DOOM", "CANCEL"):
                marks.append((t, node, what, parts[3], int(parts[4])))
    events.sort()
    # A statement starts on a backend once written there and once the session's previous statement has
    # finished there (the connection runs them one after the other); its snapshot is taken then.
    start = {}
    by_session = collections.defaultdict(list)
    for key, st in stmts.items():
        by_session[(key[0], key[1])].append(key)
    for keys in by_session.values():
        keys.sort(key=lambda k: k[2])
        last_done = {}
        for k in keys:
            st = stmts[k]
            start[k] = {b: max(t, last_done.get(b, 0)) for b, t in st["W"].items()}
            for b, t in st["D"].items():
                last_done[b] = max(last_done.get(b, 0), t)
    doomed = {(n, sid, seq) for (_, n, w, sid, seq) in marks}
    backends = sorted({b for s in stmts.values() for b in s["W"]})
    commit_list = [(gid, c) for gid, c in commits.items() if c["cmd"].upper().startswith("COMMIT PREPARED")]
    by_start = {b: sorted((c["P"][b], gid) for gid, c in commit_list if b in c["P"] and b in c["D"]) for b in backends}
    starts = {b: [x[0] for x in by_start[b]] for b in backends}

    pattern = re.compile(a.match)
    checked = 0
    findings = []
    for key, s in stmts.items():
        if not pattern.search(s["text"]):
            continue
        on = [b for b in backends if b in s["W"] and b in s["D"] and b not in s["X"]]
        if len(on) < 2:
            continue
        checked += 1
        lo = min(s["W"][b] for b in on) - 2_000_000_000
        hi = max(s["D"][b] for b in on) + 2_000_000_000
        near = set()
        for b in on:
            i = bisect.bisect_left(starts[b], lo)
            j = bisect.bisect_right(starts[b], hi)
            near.update(gid for _, gid in by_start[b][i:j])
        for gid in near:
            c = commits[gid]
            rel = {}
            for b in on:
                if b not in c["P"] or b not in c["D"]:
                    continue
                if c["D"][b] < start[key][b]:
                    rel[b] = "before"
                elif start[key][b] < c["P"][b]:
                    rel[b] = "after"
                else:
                    rel[b] = "overlap"
            if len(set(rel.values())) > 1:
                findings.append((key, gid, rel))
    print(f"{len(stmts)} statements, {len(commit_list)} commits, {checked} statements checked on {len(backends)} backends ({', '.join(backends)})")
    print(f"{len(findings)} statement/commit pairs not in the same order everywhere; {len(marks)} dooms/cancels")
    kinds = collections.Counter()
    for key, gid, rel in findings:
        kinds[(key[0] == commits[gid]["node"], tuple(sorted(set(rel.values()))), key in doomed)] += 1
    for (same, rels, d), n in kinds.most_common():
        print(f"  {n:5d}  commit from {'the same node' if same else 'another node'}, relations {'/'.join(rels)}{', statement doomed/cancelled' if d else ''}")
    for key, gid, rel in findings[: a.limit]:
        s = stmts[key]
        c = commits[gid]
        print(f"\n{key[0]} {key[1]} seq {key[2]}{' (doomed/cancelled)' if key in doomed else ''}: {s['text']}")
        print(f"  commit {gid} (node {c['node']}): " + ", ".join(f"{b}={r}" for b, r in sorted(rel.items())))
        t0 = min(s["W"].values())
        for b in sorted(rel):
            print(f"  {b}: stmt W+{(s['W'][b]-t0)/1e6:.3f} D+{(s['D'][b]-t0)/1e6:.3f}  commit P+{(c['P'][b]-t0)/1e6:.3f} D+{(c['D'][b]-t0)/1e6:.3f} ms")
        if a.context:
            i = bisect.bisect_left(events, (t0 - 50_000_000, ""))
            j = bisect.bisect_right(events, (max(s["D"].values()) + 5_000_000, "\xff"))
            for t, l in events[i:j][: a.context]:
                print(f"    {(t - t0)/1e6:+9.3f} {l.split(' ', 1)[1]}")
    return 0 if not findings else 1


if __name__ == "__main__":
    sys.exit(main())
