#if canImport(Glibc)
import Glibc
#endif
import NIOCore
import NIOSSL
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

    /// A backend with no connection slot left (`max_connections`, a role's or database's connection
    /// limit): full, not out of step — the client gets its refusal, nobody is failed but the unreachable.
    @Test func aBackendWithNoConnectionSlotLeftRefusesTheClientAndFailsNobody() {
        let full = ErrorFields(severity: "FATAL", sqlState: "53300", message: "sorry, too many clients already")
        #expect(round([.ready, .refused(full), .ready]).decision == .refuseClient(index: 1, fail: []))
        #expect(round([.ready, .refused(full), .unreachable("reset")]).decision == .refuseClient(index: 1, fail: [2]))
        #expect(round([.refused(missingDatabase), .ready, .refused(full)]).decision == .refuseClient(index: 2, fail: []))
    }

    @Test func aTLSFailureRefusesTheClientAndFailsNobody() {
        #expect(round([.ready, .tlsRefused("certificate verify failed"), .ready]).decision == .refuseClientTLS(index: 1))
        #expect(round([.unreachable("a"), .ready, .tlsRefused("x")]).decision == .refuseClientTLS(index: 2))
        #expect(round([.tlsRefused("x"), .pending]).decision == .wait)
    }

    /// A backend killed while it answers the SSL request resets the connection: that is a dead
    /// backend (failed, the others go on), not a TLS refusal (client refused, nobody failed).
    @Test func aConnectionLostDuringTLSIsUnreachableNotATLSRefusal() {
        func unreachable(_ o: LoginRound.Outcome) -> Bool { if case .unreachable = o { true } else { false } }
        func tls(_ o: LoginRound.Outcome) -> Bool { if case .tlsRefused = o { true } else { false } }
        let reset = IOError(errnoCode: ECONNRESET, reason: "read(descriptor:pointer:size:)")
        #expect(unreachable(LoginRound.outcome(of: reset, negotiatingTLS: true)))
        #expect(unreachable(LoginRound.outcome(of: ChannelError.eof, negotiatingTLS: true)))
        #expect(unreachable(LoginRound.outcome(of: NIOSSLError.uncleanShutdown, negotiatingTLS: false)))
        #expect(unreachable(LoginRound.outcome(of: NIOSSLError.handshakeFailed(.sslError([.eofDuringHandshake])), negotiatingTLS: false)))
        #expect(tls(LoginRound.outcome(of: NIOSSLError.handshakeFailed(.unknownError([])), negotiatingTLS: false)))
        #expect(tls(LoginRound.outcome(of: NIOSSLExtraError.failedToValidateHostname, negotiatingTLS: false)))
        // Unencrypted bytes behind the server's 'S' (CVE-2021-23214's shape) are TLS's business.
        struct Other: Error {}
        #expect(tls(LoginRound.outcome(of: Other(), negotiatingTLS: true)))
        #expect(unreachable(LoginRound.outcome(of: Other(), negotiatingTLS: false)))
        // In a round: the dead one is failed, the session proceeds.
        #expect(round([.ready, .ready, LoginRound.outcome(of: reset, negotiatingTLS: true)]).decision == .proceed(fail: [2]))
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
