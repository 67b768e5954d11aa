import NIOCore
@testable import Proxy
import Testing
import Wire

/// A Query cut at its COMMITs runs part by part and answers the client once: `QuerySegments`.
@Suite struct QuerySegmentsTests {
    func query(_ sql: String) -> PostgresFrame {
        var b = ByteBuffer()
        FrontendMessage.query(sql).encode(into: &b)
        return PostgresFrame(bytes: b)
    }

    let ready = BackendMessage.Kind.readyForQuery.rawValue
    let error = BackendMessage.Kind.errorResponse.rawValue
    let complete = BackendMessage.Kind.commandComplete.rawValue

    /// The segments of a session, behind a reference so each step can be asked inside `#expect`.
    final class Session {
        var segments = QuerySegments()
        func start(_ parts: [PostgresFrame], readiesOwed: Int) -> Bool { segments.start(parts, readiesOwed: readiesOwed) }
        func next() -> PostgresFrame? { segments.nextPart() }
        func message(_ type: UInt8, length: Int = 6) -> QuerySegments.Pass { segments.clientMessage(type: type, length: length) }
    }

    /// A part held before it was sent (the recovery's gate, a take-in) is the next part again.
    @Test func aPartPutBackIsAdmittedAgain() {
        let s = Session()
        let parts = [query("BEGIN; INSERT INTO t VALUES (1); COMMIT"), query("SELECT 1")]
        #expect(s.start(parts, readiesOwed: 1))
        #expect(s.next() == parts[0])
        s.segments.putBack(parts[0])
        #expect(s.segments.mayAdmit && !s.segments.running)
        #expect(s.next() == parts[0])
        #expect(s.segments.running)
        #expect(s.message(ready) == .keepAndGoOn)
        #expect(s.next() == parts[1])
        s.segments.putBack(parts[1])
        #expect(s.segments.mayAdmit)
        #expect(s.next() == parts[1])
        #expect(!s.segments.inProgress)
    }

    @Test func thePartsRunOneAfterAnotherAndOnlyTheLastReadyForQueryPasses() {
        let s = Session()
        let parts = [query("BEGIN; INSERT INTO t VALUES (1); COMMIT"), query("BEGIN; INSERT INTO t VALUES (2); COMMIT")]
        #expect(s.start(parts, readiesOwed: 1))
        #expect(s.next() == parts[0])
        #expect(s.segments.inProgress && s.segments.running)
        #expect(s.message(complete, length: 11) == .pass)
        // The first part's ReadyForQuery is kept back; the second part may go.
        #expect(s.message(ready) == .keepAndGoOn)
        #expect(s.segments.mayAdmit)
        #expect(s.next() == parts[1])
        // The last part runs like any Query: its answer is the client's.
        #expect(!s.segments.inProgress)
        #expect(s.next() == nil)
    }

    @Test func anErrorSkipsTheRestAndItsReadyForQueryIsTheClients() {
        let s = Session()
        let parts = [query("BEGIN; INSERT INTO t VALUES (1); COMMIT"), query("SELECT 1"), query("SELECT 2")]
        #expect(s.start(parts, readiesOwed: 1))
        #expect(s.next() == parts[0])
        #expect(s.message(error, length: 40) == .pass)
        #expect(s.message(ready) == .passAndGoOn)
        #expect(!s.segments.inProgress && s.segments.left.isEmpty)
        #expect(s.next() == nil)
    }

    @Test func theFirstPartWaitsForTheAnswersOfEarlierPipelinedCycles() {
        let s = Session()
        let parts = [query("BEGIN; COMMIT"), query("SELECT 1")]
        // Two cycles sent before the Query are still to be answered.
        #expect(!s.start(parts, readiesOwed: 3))
        #expect(s.segments.inProgress && !s.segments.mayAdmit)
        #expect(s.message(ready) == .pass)
        // The last earlier answer passes and lets the first part go.
        #expect(s.message(ready) == .passAndGoOn)
        #expect(s.segments.mayAdmit)
        #expect(s.next() == parts[0])
    }

    @Test func onlyAWholeReadyForQueryCounts() {
        let s = Session()
        #expect(s.start([query("BEGIN; COMMIT"), query("SELECT 1")], readiesOwed: 1))
        _ = s.next()
        // Only a ReadyForQuery on its own (6 bytes) ends a part.
        #expect(s.message(ready, length: 60) == .pass)
        #expect(s.segments.running)
    }
}
