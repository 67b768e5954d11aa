import NIOCore
import Testing

@testable import Wire

/// Every message encodes to bytes that decode back to the same value, and a few
/// encodings are checked byte for byte against the PostgreSQL protocol documentation.
@Suite struct RoundTripTests {
    // MARK: Regular phase

    @Test(arguments: WireSamples.frontend)
    func frontendMessageRoundTrips(_ message: FrontendMessage) throws {
        let bytes = encoded(message)
        let frame = try #require(try decodeOneFrame(bytes))
        #expect(frame.bytes == bytes)
        #expect(frame == message.frame)
        #expect(frame.type == message.kind.rawValue)
        #expect(try FrontendMessage(frame: frame) == message)
    }

    @Test(arguments: WireSamples.backend)
    func backendMessageRoundTrips(_ message: BackendMessage) throws {
        let bytes = encoded(message)
        let frame = try #require(try decodeOneFrame(bytes))
        #expect(frame.bytes == bytes)
        #expect(frame == message.frame)
        #expect(frame.type == message.kind.rawValue)
        #expect(try BackendMessage(frame: frame) == message)
    }

    @Test func samplesCoverEveryMessageType() {
        // Type bytes from the "Message Formats" chapter of the PostgreSQL documentation.
        let frontendTypes = Set("BCdcfDEHFPpQSX".utf8)
        let backendTypes = Set("RK23CdcGHWDIEVvnNAtS1sZT".utf8)
        #expect(Set(WireSamples.frontend.map(\.kind.rawValue)) == frontendTypes)
        #expect(Set(WireSamples.backend.map(\.kind.rawValue)) == backendTypes)
        for t in UInt8.min...UInt8.max {
            #expect((FrontendMessage.Kind(rawValue: t) != nil) == frontendTypes.contains(t))
            #expect((BackendMessage.Kind(rawValue: t) != nil) == backendTypes.contains(t))
        }
    }

    @Test func streamOfMessagesDecodesInOrder() throws {
        var stream = ByteBuffer()
        for m in WireSamples.backend { m.encode(into: &stream) }
        var decoder = PostgresFrameDecoder()
        var decoded: [BackendMessage] = []
        for _ in 0..<(WireSamples.backend.count + 1) {
            guard let frame = try decoder.decode(buffer: &stream) else { break }
            decoded.append(try BackendMessage(frame: frame))
        }
        #expect(decoded == WireSamples.backend)
        #expect(stream.readableBytes == 0)
    }

    @Test func everyStrictPrefixNeedsMoreBytes() throws {
        var all = WireSamples.frontend.map { encoded($0) }
        all += WireSamples.backend.map { encoded($0) }
        for bytes in all {
            for cut in 0..<bytes.readableBytes {
                var prefix = bytes.getSlice(at: bytes.readerIndex, length: cut)!
                var decoder = PostgresFrameDecoder()
                let result = try decoder.decode(buffer: &prefix)
                #expect(result == nil)
                #expect(prefix.readableBytes == cut, "a partial frame must not be consumed")
            }
        }
    }

    @Test func messageArrivingByteByByteDecodesOnce() throws {
        let message = FrontendMessage.parse(.init(name: "s1", query: "SELECT $1", parameterTypes: [23]))
        let bytes = Array(encoded(message).readableBytesView)
        var buffer = ByteBuffer()
        var decoder = PostgresFrameDecoder()
        var frames: [PostgresFrame] = []
        for byte in bytes {
            buffer.writeInteger(byte)
            if let f = try decoder.decode(buffer: &buffer) { frames.append(f) }
        }
        #expect(frames.count == 1)
        #expect(try frames.map { try FrontendMessage(frame: $0) } == [message])
    }

    @Test func countsAboveInt16MaxAreUnsignedLikePostgreSQL() throws {
        // PostgreSQL reads 2-byte counts as unsigned (pq_getmsgint) and libpq sends up to 65535
        // parameters (PQ_QUERY_PARAM_MAX_LIMIT), so 40,000 is a valid Bind, not a negative count.
        let n = 40_000
        var body = cString("") + cString("bulk_insert") + int16Bytes(0)
        body += hexBytes("9c 40")
        for i in 0..<n { body += int32Bytes(1) + [UInt8(truncatingIfNeeded: 0x30 + i % 10)] }
        body += int16Bytes(0)
        guard case let .bind(bind) = try FrontendMessage(frame: frame("B", body)) else {
            Issue.record("not a Bind")
            return
        }
        #expect(bind.parameters.count == n)
        #expect(bind.parameters[12_345] == ByteBuffer(string: "5"))
        #expect(Array(encoded(FrontendMessage.bind(bind)).readableBytesView) == Array(frame("B", body).bytes.readableBytesView))

        let parse = FrontendMessage.parse(.init(name: "", query: "INSERT", parameterTypes: Array(repeating: 23, count: 65_535)))
        let parseFrame = try #require(try decodeOneFrame(encoded(parse)))
        #expect(parseFrame.body.getBytes(at: parseFrame.body.readerIndex + 8, length: 2) == [0xff, 0xff])
        #expect(try FrontendMessage(frame: parseFrame) == parse)

        let description = BackendMessage.parameterDescription(Array(repeating: 25, count: 50_000))
        let descriptionFrame = try #require(try decodeOneFrame(encoded(description)))
        #expect(try BackendMessage(frame: descriptionFrame) == description)
    }

    // MARK: Exact layouts from the protocol documentation

    @Test func readyForQueryIdleBytes() throws {
        #expect(Array(encoded(BackendMessage.readyForQuery(.idle)).readableBytesView) == hexBytes("5a 00 00 00 05 49"))
        #expect(Array(encoded(BackendMessage.readyForQuery(.inTransaction)).readableBytesView) == hexBytes("5a 00 00 00 05 54"))
        #expect(Array(encoded(BackendMessage.readyForQuery(.failed)).readableBytesView) == hexBytes("5a 00 00 00 05 45"))
        let frame = try #require(try decodeOneFrame(ByteBuffer(bytes: hexBytes("5a 00 00 00 05 49"))))
        #expect(try BackendMessage(frame: frame) == .readyForQuery(.idle))
    }

    @Test func bodilessFrontendMessageBytes() {
        #expect(Array(encoded(FrontendMessage.sync).readableBytesView) == hexBytes("53 00 00 00 04"))
        #expect(Array(encoded(FrontendMessage.flush).readableBytesView) == hexBytes("48 00 00 00 04"))
        #expect(Array(encoded(FrontendMessage.terminate).readableBytesView) == hexBytes("58 00 00 00 04"))
        #expect(Array(encoded(FrontendMessage.copyDone).readableBytesView) == hexBytes("63 00 00 00 04"))
    }

    @Test func queryBytes() {
        // 'Q', length 4 + 8 + 1 = 13, "SELECT 1", NUL.
        let expected = hexBytes("51 00 00 00 0d") + Array("SELECT 1".utf8) + [0]
        #expect(Array(encoded(FrontendMessage.query("SELECT 1")).readableBytesView) == expected)
    }

    @Test func executeAndCloseBytes() {
        #expect(Array(encoded(FrontendMessage.execute(portal: "", maxRows: 0)).readableBytesView)
            == hexBytes("45 00 00 00 09 00 00 00 00 00"))
        #expect(Array(encoded(FrontendMessage.close(.statement, "a")).readableBytesView)
            == hexBytes("43 00 00 00 07 53 61 00"))
        #expect(Array(encoded(FrontendMessage.describe(.portal, "")).readableBytesView)
            == hexBytes("44 00 00 00 06 50 00"))
    }

    @Test func bindBytes() {
        // Unnamed portal and statement, no formats, one text parameter "7" and one NULL, no result formats.
        let message = FrontendMessage.bind(.init(
            portal: "", statement: "", parameterFormats: [], parameters: [ByteBuffer(string: "7"), nil], resultFormats: []))
        let body = hexBytes("00 00 00 00 00 02 00 00 00 01 37 ff ff ff ff 00 00")
        #expect(Array(encoded(message).readableBytesView) == hexBytes("42 00 00 00 15") + body)
    }

    @Test func authenticationBytes() {
        #expect(Array(encoded(BackendMessage.authentication(.ok)).readableBytesView)
            == hexBytes("52 00 00 00 08 00 00 00 00"))
        #expect(Array(encoded(BackendMessage.authentication(.cleartextPassword)).readableBytesView)
            == hexBytes("52 00 00 00 08 00 00 00 03"))
        #expect(Array(encoded(BackendMessage.authentication(.md5Password(salt: [1, 2, 3, 4]))).readableBytesView)
            == hexBytes("52 00 00 00 0c 00 00 00 05 01 02 03 04"))
        // AuthenticationSASL: code 10, "SCRAM-SHA-256\0", final NUL; length 4 + 4 + 14 + 1 = 23.
        #expect(Array(encoded(BackendMessage.authentication(.sasl(mechanisms: ["SCRAM-SHA-256"]))).readableBytesView)
            == hexBytes("52 00 00 00 17 00 00 00 0a") + cString("SCRAM-SHA-256") + [0])
    }

    @Test func backendDataBytes() {
        #expect(Array(encoded(BackendMessage.dataRow([nil])).readableBytesView)
            == hexBytes("44 00 00 00 0a 00 01 ff ff ff ff"))
        #expect(Array(encoded(BackendMessage.bindComplete).readableBytesView) == hexBytes("32 00 00 00 04"))
        #expect(Array(encoded(BackendMessage.parseComplete).readableBytesView) == hexBytes("31 00 00 00 04"))
        #expect(Array(encoded(BackendMessage.backendKeyData(processID: 1, secretKey: [9, 8, 7, 6])).readableBytesView)
            == hexBytes("4b 00 00 00 0c 00 00 00 01 09 08 07 06"))
        #expect(Array(encoded(BackendMessage.commandComplete("BEGIN")).readableBytesView)
            == hexBytes("43 00 00 00 0a") + cString("BEGIN"))
    }

    @Test func errorFieldsAccessors() throws {
        let fields = ErrorFields(severity: "ERROR", sqlState: "42P01", message: "relation \"t\" does not exist")
        let frame = try #require(try decodeOneFrame(encoded(BackendMessage.errorResponse(fields))))
        guard case let .errorResponse(decoded) = try BackendMessage(frame: frame) else {
            Issue.record("not an ErrorResponse")
            return
        }
        #expect(decoded.severity == "ERROR")
        #expect(decoded.sqlState == "42P01")
        #expect(decoded.message == "relation \"t\" does not exist")
        #expect(decoded["D"] == nil)
        #expect(ErrorFields([.init(code: 0x4d, value: "m")]).sqlState == nil)
    }

    // MARK: Startup phase

    @Test(arguments: WireSamples.startup)
    func startupPhaseMessageRoundTrips(_ message: StartupPhaseMessage) throws {
        var bytes = encoded(message)
        let length = bytes.readableBytes
        var decoder = StartupPhaseDecoder()
        let decoded = try decoder.decode(buffer: &bytes)
        #expect(decoded == message)
        #expect(bytes.readableBytes == 0)
        #expect(length >= 8)
    }

    @Test func startupPrefixesNeedMoreBytes() throws {
        for message in WireSamples.startup {
            let bytes = encoded(message)
            for cut in 0..<bytes.readableBytes {
                var prefix = bytes.getSlice(at: bytes.readerIndex, length: cut)!
                var decoder = StartupPhaseDecoder()
                let result = try decoder.decode(buffer: &prefix)
                #expect(result == nil)
                #expect(prefix.readableBytes == cut)
            }
        }
    }

    @Test func startupMessageKeepsParametersInOrder() throws {
        var bytes = encoded(.startup(StartupMessage(parameters: WireSamples.startupParameters)))
        var decoder = StartupPhaseDecoder()
        guard case let .startup(m) = try decoder.decode(buffer: &bytes) else {
            Issue.record("not a StartupMessage")
            return
        }
        #expect(m.protocolMajor == 3 && m.protocolMinor == 0)
        #expect(m.parameters.map(\.name) == WireSamples.startupParameters.map(\.name))
        #expect(m["options"] == "-c search_path=app,public -c statement_timeout=5s")
        #expect(m["user"] == "app")
        #expect(m["database"] == "appdb")
        #expect(m["password"] == nil)
    }

    @Test func startupMessageBytes() {
        // Length 4 + 4 + "user\0" + "a\0" + "\0" = 16, then protocol 3.0 = 0x00030000.
        let expected = hexBytes("00 00 00 10 00 03 00 00") + cString("user") + cString("a") + [0]
        let message = StartupPhaseMessage.startup(StartupMessage(parameters: [("user", "a")]))
        #expect(Array(encoded(message).readableBytesView) == expected)
    }

    @Test func requestCodesMatchTheDocumentation() {
        // 1234 << 16 | 5679, 5680 and 5678.
        #expect(Array(encoded(StartupPhaseMessage.sslRequest(trailingBytes: false)).readableBytesView)
            == hexBytes("00 00 00 08 04 d2 16 2f"))
        #expect(Array(encoded(StartupPhaseMessage.gssEncryptionRequest(trailingBytes: false)).readableBytesView)
            == hexBytes("00 00 00 08 04 d2 16 30"))
        let cancel = StartupPhaseMessage.cancel(CancelRequest(processID: 0x0102_0304, secretKey: [5, 6, 7, 8]))
        #expect(Array(encoded(cancel).readableBytesView)
            == hexBytes("00 00 00 10 04 d2 16 2e 01 02 03 04 05 06 07 08"))
    }

    @Test func startupFollowedByRegularMessagesLeavesThemUnread() throws {
        var bytes = encoded(.startup(StartupMessage(parameters: [("user", "app")])))
        FrontendMessage.query("SELECT 1").encode(into: &bytes)
        var startup = StartupPhaseDecoder()
        let decoded = try startup.decode(buffer: &bytes)
        #expect(decoded == .startup(StartupMessage(parameters: [("user", "app")])))
        let frame = try #require(try decodeOneFrame(bytes))
        #expect(try FrontendMessage(frame: frame) == .query("SELECT 1"))
    }
}
