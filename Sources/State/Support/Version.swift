#if canImport(Glibc)
import Glibc
#endif

/// The version of pgchorus, shared by the daemon, the CLI and the package.
public enum PGChorusVersion {
    public static let current = "0.1.0"
}

/// Writes a line to standard error (global `stderr` is off limits in Swift 6 strict mode).
public func printError(_ message: String) {
    let line = message + "\n"
    var utf8 = Array(line.utf8)
    var offset = 0
    while offset < utf8.count {
        let n = utf8.withUnsafeMutableBytes { write(2, $0.baseAddress! + offset, $0.count - offset) }
        if n <= 0 { break }
        offset += n
    }
}
