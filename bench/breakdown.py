#!/usr/bin/python3
"""Where the time of a transaction goes, from a packet capture of loopback traffic (tcpdump -w with
nanosecond time stamps) of one pgbench client running the simple query protocol, directly against a
server or through pgchorusd in front of one or more backends.

Usage: breakdown.py CAPTURE.pcap CLIENT_PORT BACKEND_PORT[,BACKEND_PORT…]

CLIENT_PORT is the port the client connected to (pgchorusd's, or the server's for a direct run).
Every message is timed when its TCP segment crossed the loopback: per statement, how long the lead
took (pgchorusd's send → the backend's ReadyForQuery), the hop in (client's message → sent to the
lead) and out (lead's ReadyForQuery → the reply to the client), how far the followers lag, and for a
voted commit its rounds (commit-log insert + PREPARE TRANSACTION, COMMIT PREPARED). Prints a
Markdown table of medians in microseconds."""
import struct, sys
from collections import defaultdict

def packets(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link = {1: 14, 113: 16, 276: 20}.get(linktype)
    if link is None:
        raise SystemExit("unsupported link type %d" % linktype)
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        frame = data[offset + 16:offset + 16 + caplen]
        offset += 16 + caplen
        ts = sec + frac / (1e9 if nano else 1e6)
        ip = frame[link:]
        if not ip or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        tcp = ip[ihl:total]
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        payload = tcp[(tcp[12] >> 4) * 4:]
        if payload:
            yield ts, sport, dport, seq, payload

class Stream:
    """One direction of one connection: typed messages with the time their last byte arrived."""
    def __init__(self, startup):
        self.buf, self.seen, self.startup, self.next = b"", set(), startup, None
    def feed(self, ts, seq, payload):
        if seq in self.seen:
            return []
        if self.next is not None and seq != self.next:
            self.buf = b""  # the capture lost a segment: start again at this one (a message boundary, usually)
        self.next = (seq + len(payload)) & 0xFFFFFFFF
        self.seen.add(seq)
        first = not self.buf and len(self.seen) == 1
        if first and not self.startup and payload in (b"N", b"S", b"G"):
            return []  # the server's one-byte answer to an SSLRequest or GSSENCRequest
        self.buf += payload
        out = []
        if self.startup and (len(self.buf) < 8 or struct.unpack(">I", self.buf[4:8])[0] not in (80877103, 80877104, 196608)):
            self.startup = False  # the capture began after the connection's start-up
        if self.startup:  # the client's first packets carry no type byte (SSLRequest, StartupMessage)
            while len(self.buf) >= 8:
                n = struct.unpack(">I", self.buf[:4])[0]
                code = struct.unpack(">I", self.buf[4:8])[0]
                if len(self.buf) < n:
                    return out
                self.buf = self.buf[n:]
                if code not in (80877103, 80877104):
                    self.startup = False
                    break
            else:
                return out
        while len(self.buf) >= 5:
            n = struct.unpack(">I", self.buf[1:5])[0]
            if n < 4 or not (65 <= self.buf[0] <= 122):
                self.buf = b""  # out of step after a lost segment
                break
            if len(self.buf) < 1 + n:
                break
            out.append((ts, self.buf[:1], self.buf[5:1 + n]))
            self.buf = self.buf[1 + n:]
        return out

def text(body):
    return body.split(b"\0", 1)[0].decode("utf-8", "replace")

def kind(sql):
    s = sql.lstrip().lower()
    if s.startswith("insert into pgchorus.commit_log"):
        return "prepare"
    if s.startswith("commit prepared") or s.startswith("rollback prepared"):
        return "finish"
    return None

def main():
    path, client_port = sys.argv[1], int(sys.argv[2])
    backend_ports = [int(p) for p in sys.argv[3].split(",")]
    direct = backend_ports == [client_port]
    streams = {}
    events = []  # (ts, conn, direction, type, body)
    for ts, sport, dport, seq, payload in packets(path):
        if dport == client_port:
            conn, d = ("client", sport), "in"
        elif sport == client_port:
            conn, d = ("client", dport), "out"
        elif dport in backend_ports:
            conn, d = (dport, sport), "to"
        elif sport in backend_ports:
            conn, d = (sport, dport), "from"
        else:
            continue
        key = (conn, d)
        if key not in streams:
            streams[key] = Stream(startup=d in ("in", "to"))
        for ts2, t, body in streams[key].feed(ts, seq, payload):
            events.append((ts2, conn, d, t, body))
    events.sort(key=lambda e: e[0])
    # Per backend connection: each Query sent and the ReadyForQuery that ends it (FIFO).
    sent = defaultdict(list)      # conn -> [[send ts, sql, done ts]]
    ready = defaultdict(list)     # conn -> ReadyForQuery times
    clients = []                  # [arrival ts, sql, reply ts]
    for ts, conn, d, t, body in events:
        if conn[0] == "client":
            if d == "in" and t == b"Q":
                clients.append([ts, text(body), None])
                sent[conn].append(clients[-1])
            elif d == "out" and t == b"Z":
                ready[conn].append(ts)
        elif d == "to" and t in (b"Q", b"S"):  # each Query and each Sync gets one ReadyForQuery
            sent[conn].append([ts, text(body) if t == b"Q" else "(extended protocol)", None])
        elif d == "from" and t == b"Z":
            ready[conn].append(ts)
    # Each query ends at its ReadyForQuery: the first one after it was sent and before the next query
    # was sent (pgchorusd sends one query at a time on a backend connection in these workloads); a
    # packet the capture lost leaves that one query without a figure, not every later one off by one.
    for conn, queries in sent.items():
        z = ready[conn]
        j = 0
        for n, q in enumerate(queries):
            following = queries[n + 1][0] if n + 1 < len(queries) else float("inf")
            while j < len(z) and z[j] <= q[0]:
                j += 1
            if j < len(z) and z[j] <= following:
                q[2] = z[j]
                j += 1
    # The session's backend connections are those that ran the client's statements.
    stmts = set(q[1] for q in clients)
    conns = [c for c in sent if c[0] != "client" and sum(1 for q in sent[c] if q[1] in stmts) >= max(1, len(clients) // 2)]
    clients = [q for q in clients if q[2] is not None]
    if direct:
        rows = defaultdict(list)
        for a, sql, r in clients:
            rows[label(sql)].append(r - a)
        print("| statement | n | server (µs) |")
        print("|---|---|---|")
        for k in sorted(rows):
            print("| %s | %d | %.0f |" % (k, len(rows[k]), 1e6 * mean(rows[k])))
        tx = transactions(clients)
        print("\nTransactions: %d, mean %.0f µs from BEGIN's arrival to END's reply." % (len(tx), 1e6 * mean(tx)))
        return
    # Match each client statement with its send on every backend connection: in order, by its label
    # (pgchorusd may rewrite the text: CURRENT_TIMESTAMP becomes the transaction's time), the lead's
    # between the statement's arrival and its reply, a follower's within 50 ms of its arrival.
    cursor = {c: 0 for c in conns}
    per = defaultdict(lambda: defaultdict(list))
    commit_rounds = defaultdict(list)
    for a, sql, r in clients:
        k = label(sql)
        if k == "END":
            # The vote: pgchorus' own queries on every connection between END's arrival and its reply.
            own = [q for c in conns for q in sent[c] if a <= q[0] <= r and kind(q[1]) and q[2]]
            prep = [q for q in own if kind(q[1]) == "prepare"]
            fin = [q for q in own if kind(q[1]) == "finish"]
            if prep and fin:
                commit_rounds["END arrives → first PREPARE sent"].append(min(q[0] for q in prep) - a)
                commit_rounds["commit-log insert + PREPARE (first sent → last done)"].append(max(q[2] for q in prep) - min(q[0] for q in prep))
                commit_rounds["last PREPARE done → first COMMIT PREPARED sent"].append(min(q[0] for q in fin) - max(q[2] for q in prep))
                commit_rounds["COMMIT PREPARED (first sent → last done)"].append(max(q[2] for q in fin) - min(q[0] for q in fin))
                commit_rounds["last COMMIT PREPARED done → reply to the client"].append(r - max(q[2] for q in fin))
                commit_rounds["END arrives → reply (the whole commit)"].append(r - a)
        def find(c, lo, hi):
            i = cursor[c]
            while i < len(sent[c]) and (label(sent[c][i][1]) != k or sent[c][i][0] < lo):
                i += 1
            if i >= len(sent[c]) or sent[c][i][2] is None or sent[c][i][0] > hi:
                return None
            cursor[c] = i + 1
            return sent[c][i]
        lead_conn = next((c for c in conns if c[0] == backend_ports[0]), None)
        lead = find(lead_conn, a, r) if lead_conn else None
        if lead is None:
            continue
        # A follower gets the statement once the lead has answered it (lead-first), within a few ms at 1 client.
        runs = [(lead_conn, lead)] + [(c, q) for c in conns if c != lead_conn for q in [find(c, lead[0], lead[2] + 0.003)] if q]
        others = [q for c, q in runs if c[0] != backend_ports[0]]
        per[k]["hop in"].append(lead[0] - a)
        per[k]["lead runs it"].append(lead[2] - lead[0])
        per[k]["hop out"].append(r - lead[2])
        if others:
            per[k]["follower sent after lead's reply"].append(max(q[0] for q in others) - lead[2])
            per[k]["slowest follower done after lead"].append(max(q[2] for q in others) - lead[2])
    print("| statement | n | hop in | lead runs it | hop out | follower sent after lead's reply | slowest follower done after lead |")
    print("|---|---|---|---|---|---|---|")
    cols = ["hop in", "lead runs it", "hop out", "follower sent after lead's reply", "slowest follower done after lead"]
    for k in sorted(per):
        n = len(per[k]["hop in"])
        print("| %s | %d | %s |" % (k, n, " | ".join("%.0f" % (1e6 * mean(per[k][c])) if per[k][c] else "—" for c in cols)))
    if commit_rounds:
        print("\n| the voted commit (END) | µs |")
        print("|---|---|")
        for k, v in commit_rounds.items():
            print("| %s | %.0f |" % (k, 1e6 * mean(v)))
    tx = transactions(clients)
    other = defaultdict(int)
    for c in conns:
        for q in sent[c]:
            if q[1] not in stmts and not kind(q[1]) and q[2] is not None:
                other[q[1][:60]] += 1
    print("\nTransactions: %d, mean %.0f µs from BEGIN's arrival to END's reply; backend connections of the session: %d." % (len(tx), 1e6 * mean(tx), len(conns)))
    if other:
        print("Other queries pgchorusd sent on them: " + "; ".join("%s ×%d" % (k, v) for k, v in sorted(other.items(), key=lambda x: -x[1])[:5]))

def label(sql):
    s = " ".join(sql.split())
    words = s.split(" ")
    if words[0].upper() in ("UPDATE", "INSERT", "DELETE"):
        return " ".join(words[:3]) if words[0].upper() != "UPDATE" else " ".join(words[:2])
    if words[0].upper() == "SELECT":
        return "SELECT " + (words[words.index("FROM") + 1] if "FROM" in words else words[1])
    return words[0].upper().rstrip(";")

def transactions(clients):
    out, start = [], None
    for a, sql, r in clients:
        l = label(sql)
        if l == "BEGIN":
            start = a
        elif l == "END" and start is not None:
            out.append(r - start); start = None
    return out

def mean(v):
    """The median (a stall of the machine now and then must not move a phase's figure)."""
    if not v:
        return 0.0
    v = sorted(v)
    return v[len(v) // 2]

if __name__ == "__main__":
    main()
