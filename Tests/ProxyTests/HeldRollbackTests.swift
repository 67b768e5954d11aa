import NIOCore
@testable import Proxy
import Testing
import Wire

/// Which held groups a client's cancel leaves to run (`ClientSessionHandler.onlyRollsBack`): a group
/// of ROLLBACKs alone, in the simple or the extended protocol; anything else with them is cancelled.
@Suite struct HeldRollbackTests {
    func bytes(_ messages: [FrontendMessage]) -> ByteBuffer {
        var b = ByteBuffer()
        for m in messages { m.encode(into: &b) }
        return b
    }

    func extended(_ sql: String, statement: String = "") -> [FrontendMessage] {
        [.parse(.init(name: statement, query: sql, parameterTypes: [])),
         .bind(.init(portal: "", statement: statement, parameterFormats: [], parameters: [], resultFormats: [])),
         .execute(portal: "", maxRows: 0), .sync]
    }

    @Test(arguments: ["ROLLBACK", "rollback;", "  Rollback  Work ;  ", "ABORT", "ROLLBACK TO SAVEPOINT a", "rollback and no chain"])
    func aRollbackAloneRuns(sql: String) {
        #expect(ClientSessionHandler.onlyRollsBack(bytes([.query(sql)])))
        #expect(ClientSessionHandler.onlyRollsBack(bytes(extended(sql))))
    }

    @Test(arguments: ["rollback; insert into t values (1)", "insert into t values (1); rollback", "select 1", "commit", "",
                      "begin; rollback"])
    func anythingElseIsCancelled(sql: String) {
        #expect(!ClientSessionHandler.onlyRollsBack(bytes([.query(sql)])))
        #expect(!ClientSessionHandler.onlyRollsBack(bytes(extended(sql))))
    }

    @Test func aNamedStatementsTextIsUnknownHere() {
        // Its text was parsed in an earlier group: not looked up, cancelled as before.
        #expect(!ClientSessionHandler.onlyRollsBack(bytes(Array(extended("", statement: "r").dropFirst()))))
        #expect(!ClientSessionHandler.onlyRollsBack(bytes([.query("rollback")] + [.query("select 1")])))
    }
}
