import NIOCore
import Testing

@testable import Wire

/// Valid messages of every kind, shared by the round-trip and the mutation tests.
enum WireSamples {
    static func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }
    static func buffer(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    /// One message of every frontend kind, several for the kinds with interesting fields.
    static let frontend: [FrontendMessage] = [
        .bind(.init(
            portal: "", statement: "s1", parameterFormats: [0, 1],
            parameters: [buffer("42"), nil, buffer([]), buffer([0x00, 0xff, 0x10, 0x00])], resultFormats: [1])),
        .bind(.init(portal: "p1", statement: "", parameterFormats: [], parameters: [], resultFormats: [])),
        .bind(.init(portal: "", statement: "", parameterFormats: [1], parameters: [nil], resultFormats: [0, 1, 0])),
        .close(.statement, "s1"),
        .close(.portal, ""),
        .copyData(buffer([0x31, 0x09, 0x61, 0x0a, 0x00, 0xff])),
        .copyData(buffer([])),
        .copyDone,
        .copyFail("COPY from stdin failed: disk full"),
        .describe(.statement, "s1"),
        .describe(.portal, "portal ✓"),
        .execute(portal: "", maxRows: 0),
        .execute(portal: "p1", maxRows: 100),
        .flush,
        .functionCall(.init(functionOID: 1598, argumentFormats: [1], arguments: [buffer([0, 0, 0, 7]), nil], resultFormat: 1)),
        .functionCall(.init(functionOID: 0, argumentFormats: [], arguments: [], resultFormat: 0)),
        .parse(.init(name: "s1", query: "SELECT $1::int + $2", parameterTypes: [23, 0])),
        .parse(.init(name: "", query: "", parameterTypes: [])),
        .authenticationResponse(buffer(Array("md520c46e3762c864548e296b33c3406aa9".utf8) + [0])),
        .authenticationResponse(buffer(Array("SCRAM-SHA-256".utf8) + [0, 0, 0, 0, 4] + Array("n,,n".utf8))),
        .query("SELECT 'héllo ✓', 1"),
        .query(""),
        .sync,
        .terminate,
    ]

    static let allAuthenticationRequests: [AuthenticationRequest] = [
        .ok,
        .kerberosV5,
        .cleartextPassword,
        .md5Password(salt: [0xde, 0xad, 0xbe, 0xef]),
        .gss,
        .gssContinue(buffer([1, 2, 3])),
        .gssContinue(buffer([])),
        .sspi,
        .sasl(mechanisms: ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]),
        .sasl(mechanisms: []),
        .saslContinue(buffer("r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")),
        .saslFinal(buffer("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")),
    ]

    static let field = BackendMessage.Field(
        name: "id", tableOID: 16384, columnNumber: 1, typeOID: 23, typeSize: 4, typeModifier: -1, format: 0)

    /// One message of every backend kind (and every authentication request).
    static let backend: [BackendMessage] = allAuthenticationRequests.map { .authentication($0) } + [
        .backendKeyData(processID: 4242, secretKey: [1, 2, 3, 4]),
        .backendKeyData(processID: -1, secretKey: (0..<256).map { UInt8($0) }),
        .bindComplete,
        .closeComplete,
        .commandComplete("INSERT 0 1"),
        .commandComplete("SELECT 1"),
        .copyData(buffer([0x00, 0x01, 0xfe, 0xff])),
        .copyDone,
        .copyInResponse(.init(format: 0, columnFormats: [0, 0])),
        .copyOutResponse(.init(format: 1, columnFormats: [1])),
        .copyBothResponse(.init(format: 0, columnFormats: [])),
        .dataRow([buffer("1"), nil, buffer([]), buffer([0xff, 0x00])]),
        .dataRow([]),
        .emptyQueryResponse,
        .errorResponse(ErrorFields(
            severity: "FATAL", sqlState: "28P01", message: "password authentication failed for user \"app\"",
            detail: "none", hint: "check the users file")),
        .errorResponse(ErrorFields([.init(code: 0x53, value: "ERROR"), .init(code: 0x7a, value: "unknown code kept")])),
        .functionCallResponse(nil),
        .functionCallResponse(buffer([0, 0, 0, 42])),
        .negotiateProtocolVersion(newestMinor: 0, unrecognizedOptions: ["_pq_.compression", "_pq_.other"]),
        .negotiateProtocolVersion(newestMinor: 2, unrecognizedOptions: []),
        .noData,
        .noticeResponse(ErrorFields(severity: "NOTICE", sqlState: "00000", message: "relation exists, skipping")),
        .notificationResponse(processID: 77, channel: "jobs", payload: "{\"id\": 1}"),
        .parameterDescription([23, 25, 0]),
        .parameterDescription([]),
        .parameterStatus(name: "server_version", value: "16.4"),
        .parseComplete,
        .portalSuspended,
        .readyForQuery(.idle),
        .readyForQuery(.inTransaction),
        .readyForQuery(.failed),
        .rowDescription([field, .init(name: "naïve", tableOID: 0, columnNumber: 0, typeOID: 25, typeSize: -1, typeModifier: -1, format: 1)]),
        .rowDescription([]),
    ]

    static let startupParameters: [(name: String, value: String)] = [
        ("user", "app"),
        ("database", "appdb"),
        ("options", "-c search_path=app,public -c statement_timeout=5s"),
        ("application_name", "psql ✓"),
        ("client_encoding", "UTF8"),
        ("_pq_.compression", "on"),
    ]

    /// Every startup-phase packet kind (trailingBytes is false: alone on the wire).
    static let startup: [StartupPhaseMessage] = [
        .startup(StartupMessage(parameters: startupParameters)),
        .startup(StartupMessage(protocolMajor: 3, protocolMinor: 2, parameters: [("user", "postgres")])),
        .startup(StartupMessage(parameters: [])),
        .sslRequest(trailingBytes: false),
        .gssEncryptionRequest(trailingBytes: false),
        .cancel(CancelRequest(processID: 12345, secretKey: [0xde, 0xad, 0xbe, 0xef])),
        .cancel(CancelRequest(processID: Int32.max, secretKey: (0..<256).map { UInt8(255 - $0) })),
    ]
}

// MARK: - Helpers shared by the test files

func encoded(_ message: FrontendMessage) -> ByteBuffer {
    var b = ByteBuffer()
    message.encode(into: &b)
    return b
}

func encoded(_ message: BackendMessage) -> ByteBuffer {
    var b = ByteBuffer()
    message.encode(into: &b)
    return b
}

func encoded(_ message: StartupPhaseMessage) -> ByteBuffer {
    var b = ByteBuffer()
    message.encode(into: &b)
    return b
}

/// Parses "5a 00 00 00 05 49" into bytes.
func hexBytes(_ text: String) -> [UInt8] {
    text.split(separator: " ").map { UInt8($0, radix: 16)! }
}

/// Builds a frame whose length field is computed from the given body bytes.
func frame(_ type: Character, _ body: [UInt8]) -> PostgresFrame {
    PostgresFrame(type: type.asciiValue!, body: ByteBuffer(bytes: body))
}

/// Builds raw frame bytes with an explicit (possibly wrong) length field.
func rawFrame(_ type: Character, length: Int32, _ body: [UInt8] = []) -> ByteBuffer {
    var b = ByteBuffer()
    b.writeInteger(type.asciiValue!)
    b.writeInteger(length)
    b.writeBytes(body)
    return b
}

/// Decodes exactly one frame from `bytes` and expects nothing left over.
func decodeOneFrame(_ bytes: ByteBuffer, sourceLocation: SourceLocation = #_sourceLocation) throws -> PostgresFrame? {
    var buffer = bytes
    var decoder = PostgresFrameDecoder()
    let frame = try decoder.decode(buffer: &buffer)
    #expect(buffer.readableBytes == 0, "bytes left after the frame", sourceLocation: sourceLocation)
    return frame
}

/// The bytes of a C string.
func cString(_ s: String) -> [UInt8] { Array(s.utf8) + [0] }

func int16Bytes(_ v: Int16) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }
func int32Bytes(_ v: Int32) -> [UInt8] { withUnsafeBytes(of: v.bigEndian) { Array($0) } }
