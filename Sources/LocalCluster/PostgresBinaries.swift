import Foundation

/// Finds the PostgreSQL server programs (`initdb`, `pg_ctl`, `postgres`, `psql`).
public enum PostgresBinaries {
    /// Environment variable naming a bin directory to use instead of searching.
    public static let environmentVariable = "PGCHORUS_PG_BIN"

    /// Where Debian's `postgresql-<version>` packages install their programs.
    static let debianRoot = "/usr/lib/postgresql"

    /// Programs a server needs; a directory lacking any of them is not used.
    static let requiredTools = ["initdb", "pg_ctl", "postgres", "psql"]

    /// The bin directory of the newest PostgreSQL under `/usr/lib/postgresql/<version>/bin`,
    /// or `$PGCHORUS_PG_BIN` when set.
    public static func directory() throws -> String {
        try directory(environment: ProcessInfo.processInfo.environment, searchRoot: debianRoot)
    }

    /// The full path of one PostgreSQL program, e.g. `path(of: "pgbench")`.
    public static func path(of tool: String) throws -> String {
        let path = try directory() + "/" + tool
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw LocalClusterError(.binariesNotFound, "\(path) is missing or not executable; install the Debian package that provides it (e.g. apt-get install postgresql postgresql-contrib)")
        }
        return path
    }

    /// `directory()` with its inputs explicit, so tests need not touch the process environment.
    static func directory(environment: [String: String], searchRoot: String) throws -> String {
        if let override = environment[environmentVariable], !override.isEmpty {
            let missing = missingTools(in: override)
            guard missing.isEmpty else {
                throw LocalClusterError(.binariesNotFound, "\(environmentVariable)=\(override) does not hold the PostgreSQL programs (missing: \(missing.joined(separator: ", "))); point it at a directory like /usr/lib/postgresql/15/bin or unset it")
            }
            return override
        }
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: searchRoot)) ?? []
        let candidates = versions
            .compactMap { name -> (version: [Int], bin: String)? in
                let parts = name.split(separator: ".").map { Int($0) }
                guard !parts.isEmpty, !parts.contains(nil) else { return nil }
                return (parts.compactMap { $0 }, searchRoot + "/" + name + "/bin")
            }
            .sorted { $0.version.lexicographicallyPrecedes($1.version) }
        if let best = candidates.last(where: { missingTools(in: $0.bin).isEmpty }) {
            return best.bin
        }
        let found = candidates.isEmpty ? "no version directories" : "incomplete installs: " + candidates.map(\.bin).joined(separator: ", ")
        throw LocalClusterError(.binariesNotFound, "PostgreSQL server programs not found under \(searchRoot) (\(found)); install them with `apt-get install postgresql` (PostgreSQL 15 on Debian 12) or set \(environmentVariable) to a bin directory holding \(requiredTools.joined(separator: ", "))")
    }

    static func missingTools(in directory: String) -> [String] {
        requiredTools.filter { !FileManager.default.isExecutableFile(atPath: directory + "/" + $0) }
    }
}
