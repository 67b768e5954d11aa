import NIOCore
@testable import Proxy
import Testing
import Wire

/// What must agree across backends for one cycle, and what may differ harmlessly.
@Suite struct OutcomeDigestTests {
    func digest(_ messages: [BackendMessage], hashRows: Bool = true) -> OutcomeDigest { OutcomeDigest(of: messages, hashRows: hashRows) }

    func row(_ values: String?...) -> BackendMessage {
        .dataRow(values.map { $0.map { ByteBuffer(string: $0) } })
    }

    let field = BackendMessage.Field(name: "a", tableOID: 0, columnNumber: 0, typeOID: 25, typeSize: -1, typeModifier: -1, format: 0)

    func select(_ rows: [BackendMessage], tag: String? = nil, status: BackendMessage.TransactionStatus = .idle) -> [BackendMessage] {
        [.rowDescription([field])] + rows + [.commandComplete(tag ?? "SELECT \(rows.count)"), .readyForQuery(status)]
    }

    func error(_ sqlState: String, message: String = "boom") -> BackendMessage {
        .errorResponse(ErrorFields(severity: "ERROR", sqlState: sqlState, message: message))
    }

    @Test func sameSequenceSameDigest() {
        let messages = select([row("1"), row("2"), row(nil)])
        #expect(digest(messages) == digest(messages))
        #expect(digest(messages, hashRows: false) == digest(messages, hashRows: false))
        #expect(digest([error("23505"), .readyForQuery(.failed)]) == digest([error("23505"), .readyForQuery(.failed)]))
    }

    @Test func differentSQLStateDiffers() {
        let a = digest([error("23505"), .readyForQuery(.idle)])
        let b = digest([error("23503"), .readyForQuery(.idle)])
        #expect(a != b)
        #expect(a.description == "E:23505 Z:I")
        // The message text may differ (names, OIDs, locale): only the SQLSTATE counts.
        #expect(a == digest([error("23505", message: "duplicate key value violates unique constraint \"t_pkey\""), .readyForQuery(.idle)]))
    }

    @Test func errorVersusSuccessDiffers() {
        #expect(digest([.commandComplete("INSERT 0 1"), .readyForQuery(.idle)]) != digest([error("23505"), .readyForQuery(.idle)]))
    }

    @Test func differentCommandTagDiffers() {
        let a = digest([.commandComplete("UPDATE 1"), .readyForQuery(.inTransaction)])
        let b = digest([.commandComplete("UPDATE 0"), .readyForQuery(.inTransaction)])
        #expect(a != b)
        #expect(a.description == "C:UPDATE 1 Z:T")
    }

    @Test func differentRowBytesDifferWhenHashed() {
        let a = digest(select([row("1"), row("2")]), hashRows: true)
        let b = digest(select([row("1"), row("3")]), hashRows: true)
        #expect(a != b)
        // NULL and the empty string are different rows.
        #expect(digest(select([row(nil)])) != digest(select([row("")])))
        // A row repeated is not the same as two different rows (the multiset counts each row).
        #expect(digest(select([row("1"), row("1")])) != digest(select([row("1"), row("2")])))
        #expect(digest(select([row("1"), row("1"), row("2")])) != digest(select([row("1"), row("2"), row("2")])))
    }

    /// Row order is not data: physical order differs per backend once (auto)vacuum ran on one.
    @Test func theSameRowsInAnotherOrderAreAlike() {
        #expect(digest(select([row("1"), row("2"), row(nil)])) == digest(select([row(nil), row("2"), row("1")])))
        // …but a row moved from one result to another is not: the row count and the multiset still count.
        #expect(digest(select([row("1"), row("2")])) != digest(select([row("2")])))
    }

    /// Rows are hashed eight bytes a step with a byte-wise tail: a difference anywhere in a long row
    /// counts, in a whole word as in the tail, and so do the length and the order of the bytes.
    @Test func longRowsDifferAnywhere() {
        let base = String(repeating: "abcdefgh", count: 1_000) + "xyz"
        let whole = digest(select([row(base)]))
        #expect(whole == digest(select([row(base)])))
        for position in [0, 7, 8, 4_000, 7_999, 8_000, 8_002] {
            var bytes = Array(base.utf8)
            bytes[position] = UInt8(ascii: "Q")
            #expect(digest(select([row(String(decoding: bytes, as: UTF8.self))])) != whole, "byte \(position)")
        }
        #expect(digest(select([row(base + "z")])) != whole)
        #expect(digest(select([row(String(base.dropLast()))])) != whole)
        // Two words swapped within a row are another row.
        let swapped = "bcdefgha" + "abcdefgh" + String(repeating: "abcdefgh", count: 998) + "xyz"
        #expect(digest(select([row("abcdefgh" + "bcdefgha" + String(repeating: "abcdefgh", count: 998) + "xyz")])) != digest(select([row(swapped)])))
    }

    @Test func rowBytesIgnoredWhenNotHashed() {
        let a = digest(select([row("1"), row("2")]), hashRows: false)
        let b = digest(select([row("x"), row("y")]), hashRows: false)
        #expect(a == b)
        #expect(a.description == "T D×2 C:SELECT 2 Z:I")
        // The row count still counts.
        #expect(a != digest(select([row("1")], tag: "SELECT 2"), hashRows: false))
    }

    @Test func differentReadyForQueryStatusDiffers() {
        let idle = digest([.commandComplete("BEGIN"), .readyForQuery(.idle)])
        let inTransaction = digest([.commandComplete("BEGIN"), .readyForQuery(.inTransaction)])
        let failed = digest([.commandComplete("BEGIN"), .readyForQuery(.failed)])
        #expect(idle != inTransaction)
        #expect(inTransaction != failed)
        #expect(idle != failed)
        #expect(failed.description == "C:BEGIN Z:E")
    }

    @Test func noticesParameterStatusAndNotificationsAreIgnored() {
        let plain = select([row("1"), row("2")])
        let noisy: [BackendMessage] = [
            .noticeResponse(ErrorFields(severity: "NOTICE", sqlState: "00000", message: "hello from backend 2")),
            .rowDescription([field]),
            row("1"),
            .parameterStatus(name: "application_name", value: "x"),
            .notificationResponse(processID: 1234, channel: "c", payload: "p"),
            row("2"),
            .commandComplete("SELECT 2"),
            .noticeResponse(ErrorFields(severity: "WARNING", sqlState: "01000", message: "w")),
            .readyForQuery(.idle),
        ]
        #expect(digest(noisy) == digest(plain))
        #expect(digest(noisy).description == "T D×2 C:SELECT 2 Z:I")
    }

    @Test func consecutiveRowsCollapse() {
        let d = digest(select((0..<5).map { row("\($0)") }))
        #expect(d.description == "T D×5 C:SELECT 5 Z:I")
        // Two result sets in one simple query: two runs.
        let two = digest([
            .rowDescription([field]), row("1"), row("2"), row("3"), .commandComplete("SELECT 3"),
            .rowDescription([field]), row("1"), .commandComplete("SELECT 1"),
            .readyForQuery(.idle),
        ])
        #expect(two.description == "T D×3 C:SELECT 3 T D×1 C:SELECT 1 Z:I")
        #expect(two.summary.count == 7)
    }

    @Test func copyDataRunsAreSeparateFromRows() {
        let d = digest([
            .copyOutResponse(.init(format: 0, columnFormats: [0])),
            .copyData(ByteBuffer(string: "1\n")), .copyData(ByteBuffer(string: "2\n")),
            .copyDone, .commandComplete("COPY 2"), .readyForQuery(.idle),
        ])
        #expect(d.description == "H d×2 c C:COPY 2 Z:I")
    }
}
