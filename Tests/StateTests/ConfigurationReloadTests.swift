import State
import Testing

/// What a reload applies, what waits for a restart, and the backends it adds and removes.
@Suite struct ConfigurationReloadTests {
    static let base = """
    [proxy]
    listen_port = 6432
    [[backends]]
    id = "db1"
    host = "127.0.0.1"
    port = 5433
    [[backends]]
    id = "db2"
    host = "127.0.0.1"
    port = 5434
    """

    func parse(_ extra: String, backends: String = base) throws -> Configuration {
        try Configuration.parse(text: backends + "\n" + extra, file: "/etc/pgchorus/pgchorus.toml")
    }

    @Test func theSameFileChangesNothing() throws {
        let c = try parse("")
        let r = ConfigurationReload(running: c, file: c)
        #expect(r.changesNothing)
        #expect(r.effective == c)
    }

    @Test func liveKeysApplyAndRestartKeysKeepTheirRunningValue() throws {
        let old = try parse("[log]\nlevel = \"info\"\n[health_check]\ninterval = 1\n")
        let new = try Configuration.parse(text: Self.base.replacingOccurrences(of: "listen_port = 6432", with: "listen_port = 7000")
            + "\n[log]\nlevel = \"debug\"\n[health_check]\ninterval = 2\n[replication]\nread_routing = \"lead\"\ncommit_epochs = false\n",
            file: "/etc/pgchorus/pgchorus.toml")
        let r = ConfigurationReload(running: old, file: new)
        #expect(Set(r.applied) == ["log.level", "health_check", "replication.read_routing"])
        #expect(Set(r.needsRestart) == ["proxy.listen_port", "replication.commit_epochs"])
        #expect(r.effective.proxy.listenPort == 6432)
        #expect(r.effective.replication.commitEpochs == old.replication.commitEpochs)
        #expect(r.effective.log.level == "debug")
        #expect(r.effective.healthCheck.interval == 2)
        #expect(r.effective.replication.readRouting == "lead")
    }

    @Test func backendsAreAddedRemovedAndAnAddressChangeWaitsForARestart() throws {
        let old = try parse("")
        let new = try Configuration.parse(text: """
            [proxy]
            listen_port = 6432
            [[backends]]
            id = "db1"
            host = "127.0.0.1"
            port = 6000
            [[backends]]
            id = "db3"
            host = "127.0.0.1"
            port = 5435
            """, file: "/etc/pgchorus/pgchorus.toml")
        let r = ConfigurationReload(running: old, file: new)
        #expect(r.backendsAdded.map(\.id) == ["db3"])
        #expect(r.backendsRemoved.map(\.id) == ["db2"])
        #expect(r.needsRestart == ["backends.db1 (address)"])
        #expect(r.effective.backends.map(\.description) == ["db1 (127.0.0.1:5433)", "db3 (127.0.0.1:5435)"])
    }
}
