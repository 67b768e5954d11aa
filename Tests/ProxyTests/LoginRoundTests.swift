@testable import Proxy
import Testing
import Wire

/// A session opens every online backend or none: `LoginRound`'s decisions, without sockets.
@Suite struct LoginRoundTests {
    let missingDatabase = ErrorFields(severity: "FATAL", sqlState: "3D000", message: "database \"x\" does not exist")

    func round(_ outcomes: [LoginRound.Outcome]) -> LoginRound {
        var r = LoginRound(backends: outcomes.count)
        for (i, o) in outcomes.enumerated() where o != .pending { r.record(i, o) }
        return r
    }

    @Test func waitsWhileAnyLoginIsGoingOn() {
        #expect(round([.ready, .pending, .ready]).decision == .wait)
        #expect(round([.refused(missingDatabase), .pending]).decision == .wait)
    }

    @Test func allReadyProceedsFailingNobody() {
        #expect(round([.ready, .ready, .ready]).decision == .proceed(fail: []))
    }

    @Test func aRefusalOthersDoNotGiveFailsThatBackend() {
        let r = round([.ready, .ready, .refused(missingDatabase)])
        #expect(r.decision == .proceed(fail: [2]))
        #expect(r.reason(2).contains("3D000"))
        #expect(round([.refused(missingDatabase), .ready, .unreachable("timeout")]).decision == .proceed(fail: [0, 2]))
    }

    @Test func aRefusalEveryBackendGivesIsTheClients() {
        #expect(round([.refused(missingDatabase), .refused(missingDatabase)]).decision == .refuseClient(index: 0, fail: []))
        // A backend that could not even be reached while others answered is failed; the client gets the refusal.
        #expect(round([.unreachable("connection refused"), .refused(missingDatabase)]).decision == .refuseClient(index: 1, fail: [0]))
    }

    @Test func aTLSFailureRefusesTheClientAndFailsNobody() {
        #expect(round([.ready, .tlsRefused("certificate verify failed"), .ready]).decision == .refuseClientTLS(index: 1))
        #expect(round([.unreachable("a"), .ready, .tlsRefused("x")]).decision == .refuseClientTLS(index: 2))
        #expect(round([.tlsRefused("x"), .pending]).decision == .wait)
    }

    @Test func nothingAnsweredIsNoBackend() {
        #expect(round([.unreachable("a"), .unreachable("b")]).decision == .noBackend)
    }

    @Test func theFirstOutcomeOfABackendCounts() {
        var r = LoginRound(backends: 2)
        r.record(0, .refused(missingDatabase))
        r.record(0, .unreachable("timeout after the refusal"))
        r.record(1, .ready)
        #expect(r.outcomes[0] == .refused(missingDatabase))
        #expect(r.decision == .proceed(fail: [0]))
    }
}
