import Foundation

/// The text LocalCluster writes into `postgresql.conf` and `pg_hba.conf`; pure, so tests read it directly.
enum ServerConfiguration {
    /// Starts LocalCluster's block in `postgresql.conf`; everything after it is rewritten on each start,
    /// so a retry on another port or a restart in a kept directory does not pile up settings.
    static let marker = "# ---- pgchorus LocalCluster settings (rewritten on every start; edit extraSettings instead) ----"

    /// Settings in the order they are written; later ones win in PostgreSQL.
    static func settings(options: PostgresServerOptions, port: Int, socketDirectory: String) -> [(key: String, value: String)] {
        var settings: [(key: String, value: String)] = [
            ("listen_addresses", "127.0.0.1"),
            ("port", String(port)),
            ("unix_socket_directories", socketDirectory),
            ("max_prepared_transactions", String(options.maxPreparedTransactions)),
            ("max_connections", String(options.maxConnections)),
            // A scratch server: speed over crash safety.
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            ("shared_buffers", "32MB"),
            // pg_ctl -l captures stderr; make each line say when, who and where.
            ("logging_collector", "off"),
            ("log_destination", "stderr"),
            ("log_line_prefix", "%m [%p] %q%u@%d app=%a "),
            ("log_timezone", "UTC"),
            ("log_connections", "on"),
            ("log_disconnections", "on"),
            ("log_lock_waits", "on"),
            ("log_min_messages", "warning"),
            ("log_min_error_statement", "error"),
            ("log_checkpoints", "off"),
            ("lc_messages", "C"),
        ]
        for key in options.extraSettings.keys.sorted() {
            settings.append((key, options.extraSettings[key]!))
        }
        return settings
    }

    /// `original` cut at `marker` (if present), followed by the marker and `settings`.
    static func postgresqlConf(original: String, settings: [(key: String, value: String)]) -> String {
        var base = original
        if let range = base.range(of: marker) {
            base = String(base[..<range.lowerBound])
        }
        if !base.isEmpty && !base.hasSuffix("\n") { base += "\n" }
        var text = base + marker + "\n"
        for (key, value) in settings {
            text += "\(key) = \(quote(value))\n"
        }
        return text
    }

    /// A single-quoted configuration value; PostgreSQL accepts every setting in this form.
    static func quote(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "''") + "'"
    }

    /// The whole `pg_hba.conf`: the Unix socket always trusted (the harness' way in), TCP on
    /// loopback with `authMethod`, nothing else reachable.
    static func hbaConf(authMethod: String) -> String {
        """
        # Written by pgchorus LocalCluster; rewritten on every start.
        # TYPE  DATABASE     USER  ADDRESS        METHOD
        local   all          all                  trust
        local   replication  all                  trust
        host    all          all   127.0.0.1/32   \(authMethod)
        host    all          all   ::1/128        \(authMethod)
        host    replication  all   127.0.0.1/32   \(authMethod)
        host    replication  all   ::1/128        \(authMethod)

        """
    }
}
