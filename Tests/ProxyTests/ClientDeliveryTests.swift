@testable import Proxy
import Testing
import Wire

/// Which of the lead's replies reach the client, and when a new lead can still answer invisibly.
@Suite struct ClientDeliveryTests {
    typealias Kind = BackendMessage.Kind
    let parse = Kind.parseComplete.rawValue
    let bind = Kind.bindComplete.rawValue
    let row = Kind.dataRow.rawValue
    let complete = Kind.commandComplete.rawValue
    let ready = Kind.readyForQuery.rawValue
    let notice = Kind.noticeResponse.rawValue
    let error = Kind.errorResponse.rawValue

    /// The session's delivery state, behind a reference so each step can be asked inside `#expect`.
    final class Session {
        var state = ClientDelivery()
        func lead(_ type: UInt8, seq: Int = 1, holdReady: Bool = false, answerWhenAll: Bool = false, replicated: Bool = true,
                  ownCancel: Bool = false) -> ClientDelivery.Action {
            state.leadMessage(type, seq: seq, holdReady: holdReady, answerWhenAll: answerWhenAll, replicated: replicated, ownCancel: ownCancel)
        }
        func routed(_ type: UInt8, seq: Int, fromLead: Bool) -> Bool { state.routedMessage(type, seq: seq, fromLead: fromLead) }
    }

    @Test func aReplyGoesToTheClientAndTiesItToTheLeadOnceRowsAreOut() {
        let s = Session()
        #expect(s.lead(parse) == .forward)
        #expect(s.lead(bind) == .forward)
        #expect(s.lead(notice) == .forward)
        // Acknowledgements and notices are alike from every backend: a new lead could still take over.
        #expect(!s.state.deliveringBytes)
        #expect(s.lead(row) == .forward)
        #expect(s.state.deliveringBytes)
        #expect(s.lead(complete) == .forward)
        #expect(s.lead(ready) == .forward)
        s.state.delivered(1)
        #expect(!s.state.deliveringBytes && !s.state.owes(1) && s.state.owes(2))
    }

    @Test func aNewLeadDoesNotRepeatTheAcknowledgementsTheClientHas() {
        let s = Session()
        #expect(s.lead(parse) == .forward)
        #expect(s.lead(bind) == .forward)
        s.state.leadReplaced()
        // The new lead answers the cycle from its start: its ParseComplete and BindComplete are repeats.
        #expect(s.lead(parse) == .drop)
        #expect(s.lead(bind) == .drop)
        #expect(s.lead(row) == .forward)
        #expect(s.lead(ready) == .forward)
        s.state.delivered(1)
        // The next cycle owes nothing to the old lead.
        #expect(s.lead(parse, seq: 2) == .forward)
    }

    /// A client streaming a COPY FROM STDIN has had only the CopyInResponse, which every backend sends
    /// alike: a new lead (a follower already in that COPY) can answer the COPY at its end.
    @Test func aCopyInTheClientStreamsCanBeAnsweredByANewLead() {
        let s = Session()
        #expect(s.lead(Kind.copyInResponse.rawValue) == .forward)
        #expect(!s.state.deliveringBytes)
        s.state.leadReplaced()
        // A new lead that had not started the COPY yet answers it from its start: its CopyInResponse is a repeat.
        #expect(s.lead(Kind.copyInResponse.rawValue) == .drop)
        #expect(s.lead(complete) == .forward)
        #expect(s.lead(ready) == .forward)
        // A COPY TO STDOUT's rows tie the client to the lead as any rows do.
        s.state.delivered(1)
        #expect(s.lead(Kind.copyOutResponse.rawValue, seq: 2) == .forward)
        #expect(s.lead(Kind.copyData.rawValue, seq: 2) == .forward)
        #expect(s.state.deliveringBytes)
    }

    @Test func aCycleTheClientHasIsNotAnsweredTwice() {
        let s = Session()
        s.state.delivered(3)
        #expect(s.lead(row, seq: 3) == .drop)
        #expect(s.lead(ready, seq: 2) == .drop)
        #expect(!s.state.deliveringBytes)
    }

    @Test func readyForQueryKeptForTheVoteOrForEveryBackend() {
        let s = Session()
        #expect(s.lead(complete, holdReady: true) == .forward)
        #expect(s.lead(ready, holdReady: true) == .drop)
        #expect(s.lead(ready, answerWhenAll: true) == .holdUntilAll)
        // With one backend left there is nobody to wait for.
        #expect(s.lead(ready, answerWhenAll: true, replicated: false) == .forward)
    }

    @Test func theNodesOwnCancelBecomesASerializationFailure() {
        let s = Session()
        #expect(s.lead(error, ownCancel: true) == .serializationFailure)
        #expect(s.state.deliveringBytes)
    }

    @Test func aRoutedReadGoesOutAndNotificationsOnlyFromTheLead() {
        let s = Session()
        #expect(s.routed(Kind.notificationResponse.rawValue, seq: 1, fromLead: false) == false)
        #expect(s.routed(Kind.rowDescription.rawValue, seq: 1, fromLead: false))
        #expect(!s.state.deliveringBytes)
        #expect(s.routed(row, seq: 1, fromLead: false))
        #expect(s.state.deliveringBytes)
        s.state.delivered(1)
        #expect(!s.routed(row, seq: 1, fromLead: true))
    }
}
