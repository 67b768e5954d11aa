#!/usr/bin/python3
"""Turns a capture of real PostgreSQL traffic (tcpdump -w, loopback, one server port) into the
fuzz targets' seed corpus: per TCP connection, what the client sent (its start-up packets, then its
typed messages) and what the server sent, cut into chunks of whole messages; the SCRAM messages of
the SASL exchanges. Usage: make-corpus.py CAPTURE.pcap SERVER_PORT OUTPUT_DIR"""
import hashlib, os, struct, sys

def packets(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    offset = 24
    while offset + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        frame = data[offset + 16:offset + 16 + caplen]
        offset += 16 + caplen
        link = {1: 14, 113: 16, 276: 20}.get(linktype)  # Ethernet, Linux cooked v1, v2
        if link is None:
            raise SystemExit("unsupported link type %d" % linktype)
        ip = frame[link:]
        if not ip or ip[0] >> 4 != 4:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0]
        if ip[9] != 6:
            continue
        tcp = ip[ihl:total]
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        doff = (tcp[12] >> 4) * 4
        payload = tcp[doff:]
        if payload:
            yield sport, dport, seq, payload

def streams(path, port):
    """(client port, direction) -> bytes, in sequence order, retransmissions dropped."""
    segments = {}
    for sport, dport, seq, payload in packets(path):
        key = (sport, "c") if dport == port else (dport, "s")
        segments.setdefault(key, {})[seq] = payload
    out = {}
    for key, by_seq in segments.items():
        out[key] = b"".join(by_seq[s] for s in sorted(by_seq))
    return out

def typed(stream):
    """Typed messages (type byte + length) from the start of `stream`."""
    msgs, i = [], 0
    while i + 5 <= len(stream):
        length = struct.unpack(">I", stream[i + 1:i + 5])[0]
        if length < 4 or i + 1 + length > len(stream):
            break
        msgs.append(stream[i:i + 1 + length])
        i += 1 + length
    return msgs

def startup_end(stream):
    """Length of the start-up packets (SSLRequest … StartupMessage) at the start of a client stream."""
    i = 0
    while i + 8 <= len(stream):
        length, code = struct.unpack(">II", stream[i:i + 8])
        i += length
        if code not in (80877103, 80877104):  # SSLRequest, GSSENCRequest: another packet follows
            return i
    return i

# Small and varied: a seed is at most 16 KiB, a connection gives at most 12 seeds per side, a
# target at most 150 (pgbench -i's COPY alone would give thousands of alike chunks).
MAX_SEED, PER_STREAM, PER_TARGET = 16384, 12, 150

def save(directory, data):
    if not data or len(data) > MAX_SEED:
        return
    if os.path.isdir(directory) and len(os.listdir(directory)) >= PER_TARGET:
        return
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)

def main():
    path, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    for (client, side), stream in streams(path, port).items():
        if side == "c":
            end = startup_end(stream)
            save(os.path.join(out, "startup"), stream[:end])
            msgs = typed(stream[end:])
            for k in range(0, min(len(msgs), 8 * PER_STREAM), 8):
                save(os.path.join(out, "client"), b"".join(msgs[k:k + 8]))
            for m in msgs:
                if m[:1] == b"p" and b"SCRAM-SHA-256\x00" in m[:40]:
                    body = m[5:].split(b"\x00", 1)[1][4:]
                    save(os.path.join(out, "scram"), body)
                elif m[:1] == b"p" and m[5:7] == b"c=":
                    save(os.path.join(out, "scram"), m[5:])
        else:
            if stream[:1] in (b"S", b"N") and len(stream) > 1 and stream[1:2] not in (b"\x00",):
                stream = stream[1:]  # the one-byte answer to an SSLRequest
            msgs = typed(stream)
            for k in range(0, min(len(msgs), 8 * PER_STREAM), 8):
                save(os.path.join(out, "backend"), b"".join(msgs[k:k + 8]))
            for m in msgs:
                if m[:1] == b"R" and len(m) > 9 and struct.unpack(">I", m[5:9])[0] in (11, 12):
                    save(os.path.join(out, "scram"), m[9:])
    # The SCRAM target reads "first message NUL final message": pair what was seen.
    scram = os.path.join(out, "scram")
    if os.path.isdir(scram):
        parts = sorted(open(os.path.join(scram, n), "rb").read() for n in os.listdir(scram))
        firsts = [p for p in parts if p.startswith(b"n,,") or p.startswith(b"r=")]
        finals = [p for p in parts if p.startswith(b"c=") or p.startswith(b"v=")]
        for a in firsts:
            for b in finals:
                save(scram, a + b"\x00" + b)

if __name__ == "__main__":
    main()
