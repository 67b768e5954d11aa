import FoundationEssentials
import Recovery
import State

/// The human forms of admin answers, as `pgchorus` prints them.
public enum StatusRendering {
    public static func time(_ t: Double?) -> String {
        guard let t else { return "never" }
        let d = Date(timeIntervalSince1970: t)
        return d.formatted(.iso8601.year().month().day().dateSeparator(.dash).time(includingFractionalSeconds: false).timeSeparator(.colon)) + "Z"
    }

    static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i == cells.count - 1 ? c : c + String(repeating: " ", count: widths[i] - c.count) }
                .joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    public static func backends(_ s: ClusterStatus) -> String {
        table(["BACKEND", "ADDRESS", "STATUS", "LEAD", "SINCE", "CHECK", "REASON"], s.backends.map { b in
            let check: String
            if let c = b.check {
                check = c.ok ? "ok \(Int(((c.latency ?? 0) * 1000).rounded())) ms" : "FAILED x\(c.consecutiveFailures)"
            } else {
                check = "-"
            }
            return [b.id, "\(b.host):\(b.port)", b.status, b.lead ? "yes" : "", time(b.since), check, b.reason]
        })
    }

    public static func nodes(_ s: ClusterStatus) -> String {
        table(["NODE", "ADDRESS", "ALIVE", "PRIORITY", "LAST SEEN", "QUORUM"], s.nodes.map { n in
            [n.id + (n.isSelf ? " (this node)" : ""), "\(n.address):\(n.port)", n.alive ? "yes" : "NO", String(n.priority), time(n.lastSeen),
             n.quorum.map { $0 ? "yes" : "no" } ?? "?"]
        })
    }

    public static func status(_ s: ClusterStatus) -> String {
        let online = s.backends.filter { $0.status == "online" }.count
        let alive = s.nodes.filter(\.alive).count
        var out = """
        node:     \(s.node.id) (\(s.node.address)), pgchorus \(s.node.version), up since \(time(s.node.startedAt)), \(s.node.sessions) client session(s)
        health:   \(s.health)
        quorum:   \(s.quorum ? "yes" : "NO") (\(alive) of \(s.nodes.count) node(s) alive)
        vip:      \(s.vip.mode == "none" ? "none configured" : "\(s.vip.address ?? "?") owned by \(s.vip.owner ?? "nobody")")
        recovery: \(s.recovery.map(recovery) ?? "none")
        backends: \(online) of \(s.backends.count) online

        """
        for w in s.warnings ?? [] { out += "warning:  \(w)\n" }
        out += "\n" + nodes(s) + "\n\n" + backends(s) + "\n"
        return out
    }

    public static func events(_ events: [ClusterEvent]) -> String {
        table(["TIME", "ORIGIN", "KIND", "SUBJECT", "DETAIL"], events.map { [time($0.time), $0.origin, $0.kind, $0.subject, $0.detail] })
    }

    /// One line on a recovery: phase, what it does, bytes, lag, the gate's stall, or why it failed.
    public static func recovery(_ r: RecoveryProgress) -> String {
        var parts = ["\(r.backend) from \(r.donor) (node \(r.node)): \(r.phase)"]
        if !r.finished { parts.append(r.detail) }
        if !r.databases.isEmpty && r.phase == "copying" { parts.append("database \(min(r.copied + 1, r.databases.count)) of \(r.databases.count)") }
        if let b = r.bytes, r.phase == "copying" { parts.append(bytes(b)) }
        if let l = r.lagBytes, r.phase == "catching-up" || r.phase == "gating" { parts.append("lag \(bytes(l))") }
        if let g = r.gateStall { parts.append("gate stall \(decimals(g, 3)) s") }
        if let n = r.restarts, n > 0 { parts.append("copy started over \(n) time\(n == 1 ? "" : "s") (\(r.restartReason ?? "DDL on the donor"))") }
        if let e = r.error { parts.append("error: \(e)") }
        let end = r.finishedAt ?? Date().timeIntervalSince1970
        parts.append("\(decimals(end - r.startedAt, 1)) s")
        return parts.joined(separator: ", ")
    }

    static func bytes(_ n: Int64) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var v = Double(n), u = 0
        while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(n) B" : "\(decimals(v, 1)) \(units[u])"
    }

    static func decimals(_ v: Double, _ digits: Int) -> String {
        var factor = 1.0
        for _ in 0..<digits { factor *= 10 }
        let scaled = Int((v * factor).rounded())
        let whole = scaled / Int(factor), fraction = abs(scaled % Int(factor))
        let f = String(fraction)
        return "\(scaled < 0 && whole == 0 ? "-" : "")\(whole).\(String(repeating: "0", count: max(0, digits - f.count)) + f)"
    }
}
