import Foundation
import LocalCluster
import Testing
import TestSupport

/// TLS between clients and the node.
@Suite struct TLSTests {
    /// A self-signed certificate and key made with the openssl command.
    static func makeCertificate(in directory: String) throws -> (cert: String, key: String) {
        let cert = "\(directory)/server.crt", key = "\(directory)/server.key"
        let out = try CommandRunner.run("/usr/bin/openssl", [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
            "-keyout", key, "-out", cert,
        ], timeout: .seconds(60))
        guard out.exitCode == 0 else { throw CertificateError(description: out.stderr) }
        return (try String(contentsOfFile: cert, encoding: .utf8), try String(contentsOfFile: key, encoding: .utf8))
    }

    struct CertificateError: Error { var description: String }

    @Test func sslmodeRequireWorksWhenTLSIsConfiguredAndFailsWhenItIsNot() async throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("pgchorus-tls-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let pem = try Self.makeCertificate(in: scratch)
        try await withPostgresServers(count: 1) { servers in
            let config = """
            [proxy.tls]
            certificate_file = "server.crt"
            private_key_file = "server.key"
            """
            try await withProxy(backends: servers, config: config, files: ["server.crt": pem.cert, "server.key": pem.key]) { proxy in
                let conn = "host=127.0.0.1 port=\(proxy.port) user=postgres dbname=postgres sslmode=require"
                let out = try Clients.psql(conn, ["-A", "-t", "-c", "select 42", "-c", "\\conninfo"])
                #expect(out.exitCode == 0, "\(out.stderr)")
                #expect(out.stdout.contains("42"))
                #expect(out.stdout.contains("SSL connection (protocol: TLSv1"), "\(out.stdout)")
                // A client that does not ask for TLS still gets in.
                let plain = try Clients.psql(proxy.connectionString(), ["-A", "-t", "-c", "select 1"])
                #expect(plain.exitCode == 0, "\(plain.stderr)")
            }
            try await withProxy(backends: servers) { proxy in
                let conn = "host=127.0.0.1 port=\(proxy.port) user=postgres dbname=postgres sslmode=require"
                let out = try Clients.psql(conn, ["-c", "select 1"])
                #expect(out.exitCode != 0)
                #expect(out.stderr.contains("server does not support SSL"), "\(out.stderr)")
            }
        }
    }
}
