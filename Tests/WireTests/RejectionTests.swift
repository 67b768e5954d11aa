import NIOCore
import Testing

@testable import Wire

/// Malformed input is refused with the exact `WireError`; incomplete input asks for more bytes.
@Suite struct RejectionTests {
    func decodeFrame(_ bytes: [UInt8], limit: Int = 1 << 30) throws -> PostgresFrame? {
        var buffer = ByteBuffer(bytes: bytes)
        var decoder = PostgresFrameDecoder(maximumMessageSize: limit)
        return try decoder.decode(buffer: &buffer)
    }

    func decodeStartup(_ bytes: [UInt8], maximumSize: Int = StartupPhaseDecoder.defaultMaximumSize) throws -> StartupPhaseMessage? {
        var buffer = ByteBuffer(bytes: bytes)
        var decoder = StartupPhaseDecoder(maximumSize: maximumSize)
        return try decoder.decode(buffer: &buffer)
    }

    /// A startup packet with the given body; the length is computed.
    func startupPacket(_ body: [UInt8]) -> [UInt8] {
        int32Bytes(Int32(4 + body.count)) + body
    }

    // MARK: Frame lengths

    @Test func lengthBelowFourIsRejected() {
        #expect(throws: WireError.invalidLength(type: 0x51, length: 3)) { try decodeFrame(hexBytes("51 00 00 00 03")) }
        #expect(throws: WireError.invalidLength(type: 0x53, length: 0)) { try decodeFrame(hexBytes("53 00 00 00 00")) }
        #expect(throws: WireError.invalidLength(type: 0x44, length: -1)) { try decodeFrame(hexBytes("44 ff ff ff ff")) }
        #expect(throws: WireError.invalidLength(type: 0x44, length: Int(Int32.min))) { try decodeFrame(hexBytes("44 80 00 00 00")) }
    }

    @Test func lengthOverTheLimitIsRejectedFromTheHeaderAlone() throws {
        // Only the 5-byte header has arrived: the decoder must not wait for a body it will refuse.
        #expect(throws: WireError.messageTooLarge(type: 0x64, length: 1029, limit: 1024)) {
            try decodeFrame(rawFrame("d", length: 1029).readableBytesView.map { $0 }, limit: 1024)
        }
        #expect(throws: WireError.messageTooLarge(type: 0x51, length: Int(Int32.max), limit: 1 << 30)) {
            try decodeFrame(hexBytes("51 7f ff ff ff"))
        }
        // Exactly at the limit: wait for the body, then accept it.
        #expect(try decodeFrame(hexBytes("64 00 00 04 04"), limit: 1024) == nil)
        let full = try decodeFrame(hexBytes("64 00 00 04 04") + [UInt8](repeating: 7, count: 1024), limit: 1024)
        #expect(full?.body.readableBytes == 1024)
    }

    @Test func partialFrameNeedsMoreBytes() throws {
        let bytes = hexBytes("51 00 00 00 0d") + cString("SELECT 1")
        for cut in 0..<bytes.count {
            var buffer = ByteBuffer(bytes: Array(bytes.prefix(cut)))
            var decoder = PostgresFrameDecoder()
            let result = try decoder.decode(buffer: &buffer)
            #expect(result == nil)
            #expect(buffer.readableBytes == cut)
        }
    }

    // MARK: Unknown types

    @Test func unknownTypeBytesAreRejectedInBothDirections() {
        let frontendTypes = Set("BCdcfDEHFPpQSX".utf8)
        let backendTypes = Set("RK23CdcGHWDIEVvnNAtS1sZT".utf8)
        for t in UInt8.min...UInt8.max {
            let f = PostgresFrame(type: t, body: ByteBuffer())
            if !frontendTypes.contains(t) {
                #expect(throws: WireError.unknownMessageType(t)) { try FrontendMessage(frame: f) }
            }
            if !backendTypes.contains(t) {
                #expect(throws: WireError.unknownMessageType(t)) { try BackendMessage(frame: f) }
            }
        }
    }

    // MARK: Truncated bodies

    @Test func bindCutInsideAParameterIsTruncated() {
        let head = cString("") + cString("s1") + int16Bytes(0)
        let cutInSecond = head + int16Bytes(2) + int32Bytes(5) + Array("hello".utf8) + int32Bytes(3) + Array("ab".utf8)
        #expect(throws: WireError.truncated(message: "bind", field: "parameter 2")) {
            try FrontendMessage(frame: frame("B", cutInSecond))
        }
        let cutInFirst = head + int16Bytes(1) + int32Bytes(5) + Array("he".utf8)
        #expect(throws: WireError.truncated(message: "bind", field: "parameter 1")) {
            try FrontendMessage(frame: frame("B", cutInFirst))
        }
        // Every strict prefix of a valid Bind body is refused, never accepted or crashed on.
        let valid = encoded(WireSamples.frontend[0]).getSlice(at: 5, length: encoded(WireSamples.frontend[0]).readableBytes - 5)!
        let body = Array(valid.readableBytesView)
        for cut in 0..<body.count {
            #expect(throws: WireError.self) { try FrontendMessage(frame: frame("B", Array(body.prefix(cut)))) }
        }
    }

    @Test func truncatedFrontendFields() {
        #expect(throws: WireError.truncated(message: "query", field: "query string")) {
            try FrontendMessage(frame: frame("Q", Array("SELECT 1".utf8)))
        }
        #expect(throws: WireError.truncated(message: "execute", field: "max rows")) {
            try FrontendMessage(frame: frame("E", cString("p") + [0, 0]))
        }
        #expect(throws: WireError.truncated(message: "execute", field: "portal")) { try FrontendMessage(frame: frame("E", [])) }
        #expect(throws: WireError.truncated(message: "close", field: "target")) { try FrontendMessage(frame: frame("C", [])) }
        #expect(throws: WireError.truncated(message: "describe", field: "name")) {
            try FrontendMessage(frame: frame("D", [0x53] + Array("s1".utf8)))
        }
        #expect(throws: WireError.truncated(message: "parse", field: "parameter type count")) {
            try FrontendMessage(frame: frame("P", cString("") + cString("SELECT 1") + int16Bytes(2) + int32Bytes(23)))
        }
        #expect(throws: WireError.truncated(message: "functionCall", field: "result format")) {
            try FrontendMessage(frame: frame("F", int32Bytes(1598) + int16Bytes(0) + int16Bytes(0)))
        }
        #expect(throws: WireError.truncated(message: "copyFail", field: "message")) { try FrontendMessage(frame: frame("f", [0x61])) }
    }

    @Test func truncatedBackendFields() {
        #expect(throws: WireError.truncated(message: "authentication", field: "authentication code")) {
            try BackendMessage(frame: frame("R", [0, 0]))
        }
        #expect(throws: WireError.truncated(message: "authentication", field: "salt")) {
            try BackendMessage(frame: frame("R", int32Bytes(5) + [1, 2, 3]))
        }
        #expect(throws: WireError.truncated(message: "authentication", field: "SASL mechanism")) {
            try BackendMessage(frame: frame("R", int32Bytes(10) + cString("SCRAM-SHA-256")))
        }
        #expect(throws: WireError.truncated(message: "readyForQuery", field: "transaction status")) {
            try BackendMessage(frame: frame("Z", []))
        }
        #expect(throws: WireError.truncated(message: "errorResponse", field: "field code")) {
            try BackendMessage(frame: frame("E", [0x53] + cString("ERROR")))
        }
        #expect(throws: WireError.truncated(message: "noticeResponse", field: "field M")) {
            try BackendMessage(frame: frame("N", [0x4d] + Array("abc".utf8)))
        }
        #expect(throws: WireError.truncated(message: "dataRow", field: "column count")) {
            try BackendMessage(frame: frame("D", int16Bytes(3) + int32Bytes(1) + [0x31]))
        }
        #expect(throws: WireError.truncated(message: "dataRow", field: "column 1")) {
            try BackendMessage(frame: frame("D", int16Bytes(1) + int32Bytes(10) + [0x31]))
        }
        // One 19-byte field ("id" and 16 of its 18 fixed bytes): the format is missing.
        #expect(throws: WireError.truncated(message: "rowDescription", field: "format")) {
            try BackendMessage(frame: frame("T", int16Bytes(1) + cString("id") + [UInt8](repeating: 0, count: 16)))
        }
        #expect(throws: WireError.truncated(message: "rowDescription", field: "field count")) {
            try BackendMessage(frame: frame("T", int16Bytes(2) + cString("id") + [UInt8](repeating: 0, count: 18)))
        }
        #expect(throws: WireError.truncated(message: "backendKeyData", field: "process ID")) {
            try BackendMessage(frame: frame("K", [0, 0]))
        }
        #expect(throws: WireError.truncated(message: "notificationResponse", field: "payload")) {
            try BackendMessage(frame: frame("A", int32Bytes(1) + cString("jobs") + Array("x".utf8)))
        }
    }

    // MARK: Trailing bytes

    @Test func trailingBytesAreRejected() {
        #expect(throws: WireError.trailingBytes(message: "sync", count: 1)) { try FrontendMessage(frame: frame("S", [0])) }
        #expect(throws: WireError.trailingBytes(message: "terminate", count: 2)) { try FrontendMessage(frame: frame("X", [1, 2])) }
        #expect(throws: WireError.trailingBytes(message: "query", count: 2)) {
            try FrontendMessage(frame: frame("Q", cString("SELECT 1") + Array("xx".utf8)))
        }
        #expect(throws: WireError.trailingBytes(message: "bind", count: 1)) {
            try FrontendMessage(frame: frame("B", cString("") + cString("") + int16Bytes(0) + int16Bytes(0) + int16Bytes(0) + [9]))
        }
        #expect(throws: WireError.trailingBytes(message: "readyForQuery", count: 1)) { try BackendMessage(frame: frame("Z", [0x49, 0x49])) }
        #expect(throws: WireError.trailingBytes(message: "authentication", count: 4)) {
            try BackendMessage(frame: frame("R", int32Bytes(0) + [0, 0, 0, 0]))
        }
        #expect(throws: WireError.trailingBytes(message: "authentication", count: 1)) {
            try BackendMessage(frame: frame("R", int32Bytes(5) + [1, 2, 3, 4, 5]))
        }
        #expect(throws: WireError.trailingBytes(message: "commandComplete", count: 1)) {
            try BackendMessage(frame: frame("C", cString("BEGIN") + [0x79]))
        }
        #expect(throws: WireError.trailingBytes(message: "parseComplete", count: 3)) { try BackendMessage(frame: frame("1", [1, 2, 3])) }
    }

    // MARK: Invalid values

    @Test func badCloseOrDescribeTarget() {
        #expect(throws: WireError.invalidValue(message: "close", field: "target", detail: "expected 'S' or 'P', got X")) {
            try FrontendMessage(frame: frame("C", [0x58] + cString("s1")))
        }
        #expect(throws: WireError.invalidValue(message: "describe", field: "target", detail: "expected 'S' or 'P', got s")) {
            try FrontendMessage(frame: frame("D", [0x73] + cString("s1")))
        }
        #expect(throws: WireError.invalidValue(message: "describe", field: "target", detail: "expected 'S' or 'P', got \\x0")) {
            try FrontendMessage(frame: frame("D", [0x00] + cString("")))
        }
    }

    @Test func badReadyForQueryStatus() {
        #expect(throws: WireError.invalidValue(message: "ReadyForQuery", field: "transaction status", detail: "unknown status Q")) {
            try BackendMessage(frame: frame("Z", [0x51]))
        }
        #expect(throws: WireError.invalidValue(message: "ReadyForQuery", field: "transaction status", detail: "unknown status \\xff")) {
            try BackendMessage(frame: frame("Z", [0xff]))
        }
    }

    @Test(arguments: [1, 4, 6, 13, -1] as [Int32])
    func unknownAuthenticationCode(_ code: Int32) {
        #expect(throws: WireError.invalidValue(message: "Authentication", field: "code", detail: "unknown authentication code \(code)")) {
            try BackendMessage(frame: frame("R", int32Bytes(code)))
        }
    }

    @Test func twoByteCountsWithTheHighBitSetAreLargeNotNegative() {
        // PostgreSQL reads 2-byte counts as unsigned: ff ff is 65535 elements, which these bodies cannot hold.
        let twoEmpty = cString("") + cString("")
        #expect(throws: WireError.truncated(message: "bind", field: "parameter format count")) {
            try FrontendMessage(frame: frame("B", twoEmpty + int16Bytes(-1) + [0, 0, 0, 0]))
        }
        #expect(throws: WireError.truncated(message: "bind", field: "parameter count")) {
            try FrontendMessage(frame: frame("B", twoEmpty + int16Bytes(0) + int16Bytes(-2) + int32Bytes(-1)))
        }
        #expect(throws: WireError.truncated(message: "bind", field: "result format count")) {
            try FrontendMessage(frame: frame("B", twoEmpty + int16Bytes(0) + int16Bytes(0) + int16Bytes(.min)))
        }
        #expect(throws: WireError.truncated(message: "parse", field: "parameter type count")) {
            try FrontendMessage(frame: frame("P", twoEmpty + int16Bytes(-1)))
        }
        #expect(throws: WireError.truncated(message: "functionCall", field: "argument count")) {
            try FrontendMessage(frame: frame("F", int32Bytes(1) + int16Bytes(0) + int16Bytes(-1) + int16Bytes(0)))
        }
        #expect(throws: WireError.truncated(message: "dataRow", field: "column count")) {
            try BackendMessage(frame: frame("D", int16Bytes(-1) + int32Bytes(-1)))
        }
        #expect(throws: WireError.truncated(message: "rowDescription", field: "field count")) {
            try BackendMessage(frame: frame("T", int16Bytes(-1)))
        }
        #expect(throws: WireError.truncated(message: "parameterDescription", field: "parameter count")) {
            try BackendMessage(frame: frame("t", int16Bytes(-1)))
        }
        #expect(throws: WireError.truncated(message: "copyInResponse", field: "column count")) {
            try BackendMessage(frame: frame("G", [0] + int16Bytes(-1)))
        }
    }

    @Test func negativeFourByteCountsAreRejected() {
        #expect(throws: WireError.invalidValue(message: "NegotiateProtocolVersion", field: "option count", detail: "impossible count -1")) {
            try BackendMessage(frame: frame("v", int32Bytes(0) + int32Bytes(-1)))
        }
        #expect(throws: WireError.invalidValue(message: "NegotiateProtocolVersion", field: "option count", detail: "impossible count 1000")) {
            try BackendMessage(frame: frame("v", int32Bytes(0) + int32Bytes(1000) + cString("_pq_.x")))
        }
    }

    @Test func negativeValueLengthsAreRejected() {
        #expect(throws: WireError.invalidValue(message: "dataRow", field: "column 1", detail: "negative length -2")) {
            try BackendMessage(frame: frame("D", int16Bytes(1) + int32Bytes(-2)))
        }
        #expect(throws: WireError.invalidValue(message: "bind", field: "parameter 1", detail: "negative length -5")) {
            try FrontendMessage(frame: frame("B", cString("") + cString("") + int16Bytes(0) + int16Bytes(1) + int32Bytes(-5) + int16Bytes(0)))
        }
        #expect(throws: WireError.invalidValue(message: "functionCallResponse", field: "result", detail: "negative length -3")) {
            try BackendMessage(frame: frame("V", int32Bytes(-3)))
        }
    }

    @Test func backendKeyDataKeyLength() throws {
        #expect(throws: WireError.invalidValue(message: "BackendKeyData", field: "secret key", detail: "length 3 is not between 4 and 256")) {
            try BackendMessage(frame: frame("K", int32Bytes(1) + [1, 2, 3]))
        }
        #expect(throws: WireError.invalidValue(message: "BackendKeyData", field: "secret key", detail: "length 257 is not between 4 and 256")) {
            try BackendMessage(frame: frame("K", int32Bytes(1) + [UInt8](repeating: 1, count: 257)))
        }
    }

    // MARK: Startup phase

    @Test func startupLengthOutOfRange() throws {
        #expect(throws: WireError.invalidLength(type: nil, length: 7)) { try decodeStartup(hexBytes("00 00 00 07")) }
        #expect(throws: WireError.invalidLength(type: nil, length: 0)) { try decodeStartup(hexBytes("00 00 00 00")) }
        #expect(throws: WireError.invalidLength(type: nil, length: -1)) { try decodeStartup(hexBytes("ff ff ff ff")) }
        // Refused from the length field alone, before the body arrives.
        #expect(throws: WireError.messageTooLarge(type: nil, length: 10001, limit: 10000)) { try decodeStartup(int32Bytes(10001)) }
        #expect(throws: WireError.messageTooLarge(type: nil, length: Int(Int32.max), limit: 10000)) { try decodeStartup(int32Bytes(.max)) }
        #expect(throws: WireError.messageTooLarge(type: nil, length: 101, limit: 100)) {
            try decodeStartup(int32Bytes(101), maximumSize: 100)
        }
        #expect(try decodeStartup(int32Bytes(10000)) == nil)
    }

    @Test func partialStartupPacketNeedsMoreBytes() throws {
        let bytes = startupPacket(int32Bytes(0x0003_0000) + cString("user") + cString("app") + [0])
        for cut in 0..<bytes.count {
            var buffer = ByteBuffer(bytes: Array(bytes.prefix(cut)))
            var decoder = StartupPhaseDecoder()
            let result = try decoder.decode(buffer: &buffer)
            #expect(result == nil)
            #expect(buffer.readableBytes == cut)
        }
    }

    @Test func unsupportedProtocolVersions() {
        let params = cString("user") + cString("app") + [0]
        #expect(throws: WireError.unsupportedProtocolVersion(major: 2, minor: 0)) {
            try decodeStartup(startupPacket(int32Bytes(0x0002_0000) + params))
        }
        #expect(throws: WireError.unsupportedProtocolVersion(major: 4, minor: 0)) {
            try decodeStartup(startupPacket(int32Bytes(0x0004_0000) + params))
        }
        // An unknown request code of the 1234.x family is not a startup message either.
        #expect(throws: WireError.unsupportedProtocolVersion(major: 1234, minor: 5677)) {
            try decodeStartup(startupPacket(int32Bytes(1234 << 16 | 5677)))
        }
        #expect(WireError.unsupportedProtocolVersion(major: 2, minor: 0).description
            == "unsupported frontend protocol 2.0: server supports 3.0 to 3.0")
    }

    @Test func cancelRequestKeyLength() {
        let head = int32Bytes(StartupPhaseMessage.cancelRequestCode) + int32Bytes(42)
        for length in [0, 3, 257] {
            #expect(throws: WireError.invalidValue(
                message: "CancelRequest", field: "secret key", detail: "length \(length) is not between 4 and 256")
            ) {
                try decodeStartup(startupPacket(head + [UInt8](repeating: 0xab, count: length)))
            }
        }
        #expect(throws: WireError.truncated(message: "startup packet", field: "process ID")) {
            try decodeStartup(startupPacket(int32Bytes(StartupPhaseMessage.cancelRequestCode)))
        }
    }

    @Test func encryptionRequestFollowedByBytesIsFlagged() throws {
        // CVE-2021-23222: bytes sent before the handshake must not be processed after it.
        for (code, expected) in [
            (StartupPhaseMessage.sslRequestCode, StartupPhaseMessage.sslRequest(trailingBytes: true)),
            (StartupPhaseMessage.gssEncryptionRequestCode, .gssEncryptionRequest(trailingBytes: true)),
        ] {
            var buffer = ByteBuffer(bytes: startupPacket(int32Bytes(code)) + hexBytes("16 03 01 02 00"))
            var decoder = StartupPhaseDecoder()
            let decoded = try decoder.decode(buffer: &buffer)
            #expect(decoded == expected)
            #expect(buffer.readableBytes == 5, "the extra bytes stay unread")
        }
        #expect(throws: WireError.trailingBytes(message: "startup packet", count: 4)) {
            try decodeStartup(startupPacket(int32Bytes(StartupPhaseMessage.sslRequestCode) + [0, 0, 0, 0]))
        }
    }

    @Test func malformedStartupParameters() {
        let version = int32Bytes(0x0003_0000)
        #expect(throws: WireError.truncated(message: "startup packet", field: "parameter name")) {
            try decodeStartup(startupPacket(version + cString("user") + cString("app")))
        }
        #expect(throws: WireError.truncated(message: "startup packet", field: "parameter value for user")) {
            try decodeStartup(startupPacket(version + cString("user") + Array("app".utf8)))
        }
        #expect(throws: WireError.trailingBytes(message: "startup packet", count: 2)) {
            try decodeStartup(startupPacket(version + cString("user") + cString("app") + [0] + [1, 2]))
        }
    }

    @Test func errorDescriptionsNameTheProblem() {
        #expect(WireError.messageTooLarge(type: 0x51, length: 2000, limit: 1024).description
            == "invalid message length 2000 for message type 'Q': larger than the limit of 1024 bytes")
        #expect(WireError.invalidLength(type: nil, length: 7).description == "invalid message length 7 for message startup packet")
        #expect(WireError.truncated(message: "bind", field: "parameter 2").description
            == "invalid bind message: truncated at field parameter 2")
    }
}
