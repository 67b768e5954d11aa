import NIOCore
@testable import Proxy
import Testing
import Wire

/// The client's `statement_timeout` over statements pgchorus holds: the lead's `SHOW` read as
/// milliseconds, and which texts make the session ask the lead again.
@Suite struct StatementTimeoutTests {
    @Test(arguments: [("0", 0), ("250", 250), ("500ms", 500), ("5s", 5000), ("2min", 120_000), ("1h", 3_600_000), ("1d", 86_400_000)])
    func theLeadsSettingIsReadInMilliseconds(value: String, milliseconds: Int) {
        #expect(ClientSessionHandler.milliseconds(ofSetting: value) == milliseconds)
    }

    @Test(arguments: ["", "s", "5 s", "5sec", "-1", "1.5s", "99999999999999999999d"])
    func anythingElseIsNotATime(value: String) {
        #expect(ClientSessionHandler.milliseconds(ofSetting: value) == nil)
    }

    func noted(_ sql: String, times: Int = 1) -> Bool {
        var r = SessionReplay()
        var b = ByteBuffer()
        FrontendMessage.query(sql).encode(into: &b)
        var decoder = PostgresFrameDecoder(maximumMessageSize: 1 << 20)
        let frame = try! decoder.decode(buffer: &b)!
        var changed = false
        for _ in 0..<times {
            r.timeoutMayHaveChanged = false
            r.note(frame)
            changed = r.timeoutMayHaveChanged
        }
        return changed
    }

    @Test(arguments: ["SET statement_timeout = '1s'", "set session statement_timeout to 0", "RESET statement_timeout", "RESET ALL",
                      "SET LOCAL statement_timeout = 10", "DISCARD ALL", "select set_config('statement_timeout', '2s', false)",
                      "set statement_timeout = 5; select 1"])
    func aTextThatMayChangeItIsSeenEachTime(sql: String) {
        #expect(noted(sql))
        #expect(noted(sql, times: 3), "seen again when sent again")
    }

    @Test(arguments: ["select 1", "SET work_mem = '8MB'", "SET LOCAL lock_timeout = 10", "insert into t values (1)"])
    func otherTextsAreNot(sql: String) {
        #expect(!noted(sql))
        #expect(!noted(sql, times: 2))
    }
}
