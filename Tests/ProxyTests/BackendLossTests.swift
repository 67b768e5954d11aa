@testable import Proxy
import Testing
import Wire

/// Losing a backend takes one path, whatever the phase and the cause: `BackendLoss`' decisions.
@Suite struct BackendLossTests {
    func situation(lead: Bool = false, others: Int = 2, draining: Bool = false, fatalForwarded: Bool = false,
                   lastWords: String? = nil, checking: Bool = false) -> BackendLoss.Situation {
        BackendLoss.Situation(isLead: lead, othersLive: others, draining: draining, fatalForwarded: fatalForwarded,
                              lastWords: lastWords, checkingTermination: checking)
    }

    @Test func aBackendThatIsNotTheLastIsFailedAndTheSessionGoesOn() {
        for lead in [false, true] {
            for cause in ["connection lost", "connection error: Connection reset by peer", "invalid message: bad length"] {
                #expect(BackendLoss.lost(situation(lead: lead), name: "db3", cause: cause) == .fail(reason: cause))
                #expect(BackendLoss.lost(situation(lead: lead, others: 1, draining: true), name: "db3", cause: cause) == .fail(reason: cause))
            }
        }
    }

    @Test func aFatalIsNamedInTheReason() {
        let step = BackendLoss.lost(situation(lastWords: "57P02 terminating connection because of crash of another server process"), name: "db2", cause: "connection lost")
        #expect(step == .fail(reason: "ended the session: 57P02 terminating connection because of crash of another server process (connection lost)"))
        #expect(BackendLoss.lost(situation(lead: true, lastWords: "XX000 crash"), name: "db1", cause: "connection lost")
            == .fail(reason: "ended the session: XX000 crash (connection lost)"))
    }

    @Test(arguments: ["25P03 terminating connection due to idle-in-transaction timeout", "57P05 terminating connection due to idle-session timeout",
                      "25P04 terminating connection due to transaction timeout"])
    func aSessionTimeoutOfTheClientsEndsAnIdleSessionAndFailsNobody(words: String) {
        for lead in [false, true] {
            var s = situation(lead: lead, lastWords: words)
            s.sessionIdle = true
            #expect(BackendLoss.lost(s, name: "db2", cause: "connection lost")
                == .endSession(ErrorFields(severity: "FATAL", sqlState: String(words.prefix(5)), message: String(words.dropFirst(6)))))
            // Once the client has another backend's FATAL, or the session is ending: quietly, nobody failed.
            for (forwarded, draining) in [(true, false), (false, true)] {
                var after = situation(lead: lead, others: 1, draining: draining, fatalForwarded: forwarded, lastWords: words)
                after.sessionIdle = false
                #expect(BackendLoss.lost(after, name: "db2", cause: "connection lost") == .endSession(nil))
            }
            // With something in flight it is an ordinary loss.
            s.sessionIdle = false
            #expect(BackendLoss.lost(s, name: "db2", cause: "connection lost") == .fail(reason: "ended the session: \(words) (connection lost)"))
        }
    }

    @Test func theLastBackendEndsTheSession() {
        guard case let .endSession(error?) = BackendLoss.lost(situation(lead: true, others: 0), name: "db1 (127.0.0.1:5432)", cause: "connection lost") else {
            Issue.record("the last backend's loss must end the session with an error")
            return
        }
        #expect(error.sqlState == "08006")
        #expect(error.message == "pgchorus lost the connection to backend db1 (127.0.0.1:5432): connection lost")
        // Quietly when the client has gone or already has a FATAL.
        #expect(BackendLoss.lost(situation(others: 0, draining: true), name: "db1", cause: "x") == .endSession(nil))
        #expect(BackendLoss.lost(situation(others: 0, fatalForwarded: true), name: "db1", cause: "x") == .endSession(nil))
    }

    @Test func aLeadThatEndedTheSessionWith57P01IsAskedAboutFirst() {
        let words = "57P01 terminating connection due to administrator command"
        #expect(BackendLoss.lost(situation(lead: true, lastWords: words), name: "db1", cause: "connection lost") == .checkServing)
        // A follower's too (an operator's script ending a role's sessions on that server); while
        // another backend is being asked about, it is failed as usual; so is a lead while the client has gone.
        #expect(BackendLoss.lost(situation(lead: false, lastWords: words), name: "db2", cause: "c") == .checkServing)
        var another = situation(lead: false, lastWords: words)
        another.checkingAnother = true
        #expect(BackendLoss.lost(another, name: "db2", cause: "c") == .fail(reason: "ended the session: \(words) (c)"))
        #expect(BackendLoss.lost(situation(lead: true, draining: true, lastWords: words), name: "db1", cause: "c") == .fail(reason: "ended the session: \(words) (c)"))
        // While asking, a second loss report of the backend asked about waits for the answer; another
        // backend's loss is its own.
        #expect(BackendLoss.lost(situation(lead: true, lastWords: words, checking: true), name: "db1", cause: "c") == .awaitTerminationCheck)
        var other = situation(lead: false)
        other.checkingAnother = true
        #expect(BackendLoss.lost(other, name: "db2", cause: "c") == .fail(reason: "c"))
    }

    @Test func theTerminationAnswerDecides() {
        guard case let .endSession(error?) = BackendLoss.terminationChecked(serving: true, lastWords: "57P01 t", cause: "c") else {
            Issue.record("a server that still serves ended this session alone")
            return
        }
        #expect(error.sqlState == "57P01")
        #expect(BackendLoss.terminationChecked(serving: false, lastWords: "57P01 t", cause: "c") == .fail(reason: "ended the session: 57P01 t (c)"))
    }

    @Test func theFirstLiveBackendLeadsUnlessTheClientHasPartOfAReply() {
        #expect(BackendLoss.promotion(nextLive: 1, deliveringBytes: false, fatalForwarded: false) == .promote(1))
        guard case let .endSession(midReply?) = BackendLoss.promotion(nextLive: 1, deliveringBytes: true, fatalForwarded: false) else {
            Issue.record("a reply half from one backend cannot be finished by another")
            return
        }
        #expect(midReply.sqlState == "08006")
        guard case let .endSession(none?) = BackendLoss.promotion(nextLive: nil, deliveringBytes: false, fatalForwarded: false) else {
            Issue.record("no backend left must end the session")
            return
        }
        #expect(none.message == "pgchorus lost every backend of this session")
        #expect(BackendLoss.promotion(nextLive: nil, deliveringBytes: false, fatalForwarded: true) == .endSession(nil))
    }

    @Test func aRoutedReadGoesElsewhereUnlessPartOfItWasOut() {
        #expect(BackendLoss.routedReadLost(deliveringBytes: false) == nil)
        #expect(BackendLoss.routedReadLost(deliveringBytes: true)?.sqlState == "08006")
    }

    @Test func theClusterTakingOutEveryBackendEndsTheSession() {
        #expect(BackendLoss.clusterTookOut(gone: 1, live: 3) == nil)
        #expect(BackendLoss.clusterTookOut(gone: 2, live: 3) == nil)
        #expect(BackendLoss.clusterTookOut(gone: 3, live: 3)?.sqlState == "08006")
        #expect(BackendLoss.clusterTookOut(gone: 0, live: 0) == nil)
    }
}
