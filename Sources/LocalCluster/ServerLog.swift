import Foundation

/// Reads the end of a server's log file for error messages and diagnostics.
enum ServerLog {
    /// Current size of the log, so a later tail can skip what earlier runs wrote.
    static func size(of path: String) -> UInt64 {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        return (attributes?[.size] as? NSNumber)?.uint64Value ?? 0
    }

    /// The last `lines` lines written at or after byte `offset` (reading at most the last 64 KiB).
    static func tail(of path: String, from offset: UInt64 = 0, lines: Int = 20) -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { return "(no log file at \(path))" }
        defer { try? handle.close() }
        let window: UInt64 = 64 * 1024
        guard let end = try? handle.seekToEnd() else { return "(could not read \(path))" }
        let start = max(offset, end > window ? end - window : 0)
        guard start < end, (try? handle.seek(toOffset: start)) != nil, let data = try? handle.readToEnd() else {
            return "(nothing new in \(path))"
        }
        let text = String(decoding: data, as: UTF8.self)
        let all = text.split(separator: "\n", omittingEmptySubsequences: true)
        return all.suffix(max(lines, 1)).joined(separator: "\n")
    }

    /// Whether the log says the server could not listen on its port, which a retry on another port fixes.
    static func reportsPortTaken(_ log: String) -> Bool {
        log.contains("could not bind") || log.contains("Address already in use") || log.contains("could not create any TCP/IP sockets")
    }
}
