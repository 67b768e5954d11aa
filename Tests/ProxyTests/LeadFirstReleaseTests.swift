import NIOCore
@testable import Proxy
import Testing

/// The lead-first release of a session's groups, without sockets: what goes to the followers, when,
/// and in which order.
@Suite struct LeadFirstReleaseTests {
    func group(_ seq: Int?, _ sql: String = "SELECT 1", waitsForLead: Bool = true, complete: Bool = true,
               mixes: Bool = false, kind: CycleKind? = .client) -> PendingGroup {
        PendingGroup(seq: seq, kind: seq == nil ? nil : kind, bytes: ByteBuffer(string: sql), waitsForLead: waitsForLead,
                     mixesTransactionControl: mixes, complete: complete)
    }

    /// Drains what may go now, as the session does, one at a time.
    func releases(_ q: inout LeadFirstRelease, handoverPending: Bool = false) -> [String] {
        var out: [String] = []
        for _ in 0..<100 {
            guard let r = q.next(handoverPending: handoverPending) else { break }
            switch r {
            case let .send(g, took):
                out.append("send \(g.seq.map(String.init) ?? "-") took \(took.map { "\($0.nanoseconds / 1_000_000)ms" } ?? "-")")
            case let .followLeadOutcome(_, seq, status):
                out.append("outcome \(seq) \(Character(UnicodeScalar(status)))")
            }
        }
        return out
    }

    @Test func aLeadFirstGroupWaitsForTheLeadsAnswer() {
        var q = LeadFirstRelease()
        q.add(group(1))
        let out1 = releases(&q)
        #expect(out1.isEmpty)
        #expect(q.holds(seq: 1))
        let answered2 = q.leadAnswered(seq: 1, took: .milliseconds(4), timingStatus: nil)
        #expect(answered2)
        let out3 = releases(&q)
        #expect(out3 == ["send 1 took 4ms"])
        #expect(q.isEmpty && !q.holds(seq: 1))
        // Answered again (a cycle gone out already): nothing held, nothing to do.
        let answered4 = q.leadAnswered(seq: 1, took: .milliseconds(1), timingStatus: nil)
        #expect(!answered4)
    }

    @Test func groupsGoInTheOrderTheClientSentThem() {
        var q = LeadFirstRelease()
        q.add(group(1))
        q.add(group(nil, "flush", waitsForLead: false))
        q.add(group(2))
        // The second cycle's answer comes first (a pipeline): it still waits behind the first.
        q.leadAnswered(seq: 2, took: .milliseconds(1), timingStatus: nil)
        let out5 = releases(&q)
        #expect(out5.isEmpty)
        q.leadAnswered(seq: 1, took: .milliseconds(2), timingStatus: nil)
        let out6 = releases(&q)
        #expect(out6 == ["send 1 took 2ms", "send - took -", "send 2 took 1ms"])
    }

    @Test func aGroupThatIsNotLeadFirstGoesAtOnceButNotPastAnEarlierOne() {
        var q = LeadFirstRelease()
        q.add(group(1, "BEGIN", waitsForLead: false))
        let out7 = releases(&q)
        #expect(out7 == ["send 1 took -"])
        q.add(group(2))
        q.add(group(3, "COPY data", waitsForLead: false))
        let out8 = releases(&q)
        #expect(out8.isEmpty)
        q.leadAnswered(seq: 2, took: .zero, timingStatus: nil)
        let out9 = releases(&q)
        #expect(out9 == ["send 2 took 0ms", "send 3 took -"])
    }

    @Test func aPipelineStillArrivingIsNotReleasedBeforeItsSync() {
        var q = LeadFirstRelease()
        q.add(group(1, "Parse Bind Execute", complete: false))
        q.leadAnswered(seq: 1, took: .milliseconds(1), timingStatus: nil)
        let out10 = releases(&q)
        #expect(out10.isEmpty)
        let found = q.update(seq: 1) {
            $0.bytes.writeString(" Sync")
            $0.complete = true
        }
        #expect(found)
        #expect(q.groups.first.map { String(buffer: $0.bytes) } == "Parse Bind Execute Sync")
        let out11 = releases(&q)
        #expect(out11 == ["send 1 took 1ms"])
        let gone = q.update(seq: 1) { $0.complete = false }
        #expect(!gone)
    }

    @Test func nothingGoesWhileANewLeadWaitsForItsHandover() {
        var q = LeadFirstRelease()
        q.add(group(1, waitsForLead: false))
        let out12 = releases(&q, handoverPending: true)
        #expect(out12.isEmpty)
        let out13 = releases(&q)
        #expect(out13 == ["send 1 took -"])
    }

    @Test func aNewLeadMustAnswerAgainWhatTheOldOneHad() {
        var q = LeadFirstRelease()
        q.add(group(1))
        q.add(group(2))
        q.leadAnswered(seq: 2, took: .milliseconds(1), timingStatus: nil)
        #expect(q.waitsForLead)
        q.leadReplaced()
        q.leadAnswered(seq: 1, took: .milliseconds(3), timingStatus: nil)
        // The old lead's answer to 2 no longer counts: the new lead has not answered it.
        let out14 = releases(&q)
        #expect(out14 == ["send 1 took 3ms"])
        q.leadAnswered(seq: 2, took: .milliseconds(5), timingStatus: nil)
        let out15 = releases(&q)
        #expect(out15 == ["send 2 took 5ms"])
        #expect(!q.waitsForLead)
    }

    @Test func aTimingOutcomeOfTheLeadIsWhatTheFollowersGetInstead() {
        var q = LeadFirstRelease()
        q.add(group(1, "UPDATE t SET v = 1"))
        q.leadAnswered(seq: 1, took: .milliseconds(50), timingStatus: UInt8(ascii: "E"))
        let out16 = releases(&q)
        #expect(out16 == ["outcome 1 E"])
        // A group that mixes COMMIT/ROLLBACK with other statements cannot be substituted: it is sent.
        q.add(group(2, "UPDATE t SET v = 2; COMMIT", mixes: true))
        q.leadAnswered(seq: 2, took: .milliseconds(1), timingStatus: UInt8(ascii: "I"))
        let out17 = releases(&q)
        #expect(out17 == ["send 2 took 1ms"])
        // pgchorus' own cycles (hidden) are never substituted either.
        q.add(group(3, "BEGIN", kind: .hidden))
        q.leadAnswered(seq: 3, took: .milliseconds(1), timingStatus: UInt8(ascii: "E"))
        let out18 = releases(&q)
        #expect(out18 == ["send 3 took 1ms"])
    }
}
