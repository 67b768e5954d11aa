import NIOCore

/// The fields of an ErrorResponse or NoticeResponse, in wire order, unknown codes included.
public struct ErrorFields: Sendable, Equatable {
    public var fields: [Field]

    public struct Field: Sendable, Equatable {
        public var code: UInt8
        public var value: String
        public init(code: UInt8, value: String) { self.code = code; self.value = value }
    }

    public init(_ fields: [Field]) { self.fields = fields }

    /// Builds the usual fields of an error raised by pgchorus itself.
    public init(severity: String, sqlState: String, message: String, detail: String? = nil, hint: String? = nil) {
        var f: [Field] = [
            Field(code: 0x53, value: severity), // S
            Field(code: 0x56, value: severity), // V (non-localized)
            Field(code: 0x43, value: sqlState), // C
            Field(code: 0x4d, value: message), // M
        ]
        if let detail { f.append(Field(code: 0x44, value: detail)) }
        if let hint { f.append(Field(code: 0x48, value: hint)) }
        self.fields = f
    }

    public subscript(code: Character) -> String? {
        guard let ascii = code.asciiValue else { return nil }
        return fields.first(where: { $0.code == ascii })?.value
    }

    public var severity: String? { self["V"] ?? self["S"] }
    /// The SQLSTATE; never assume it is present.
    public var sqlState: String? { self["C"] }
    public var message: String? { self["M"] }
}

/// An authentication request of the server.
public enum AuthenticationRequest: Sendable, Equatable {
    case ok
    case kerberosV5
    case cleartextPassword
    case md5Password(salt: [UInt8])
    case gss
    case gssContinue(ByteBuffer)
    case sspi
    case sasl(mechanisms: [String])
    case saslContinue(ByteBuffer)
    case saslFinal(ByteBuffer)
}

/// A message from the server to a client, as a Swift value.
public enum BackendMessage: Sendable, Equatable {
    public struct Field: Sendable, Equatable {
        public var name: String
        public var tableOID: Int32
        public var columnNumber: Int16
        public var typeOID: Int32
        public var typeSize: Int16
        public var typeModifier: Int32
        public var format: Int16
        public init(name: String, tableOID: Int32, columnNumber: Int16, typeOID: Int32, typeSize: Int16, typeModifier: Int32, format: Int16) {
            self.name = name; self.tableOID = tableOID; self.columnNumber = columnNumber; self.typeOID = typeOID
            self.typeSize = typeSize; self.typeModifier = typeModifier; self.format = format
        }
    }

    public struct CopyResponse: Sendable, Equatable {
        public var format: UInt8
        public var columnFormats: [Int16]
        public init(format: UInt8, columnFormats: [Int16]) { self.format = format; self.columnFormats = columnFormats }
    }

    /// 'I' idle, 'T' in a transaction block, 'E' in a failed transaction block.
    public enum TransactionStatus: UInt8, Sendable, Equatable {
        case idle = 0x49
        case inTransaction = 0x54
        case failed = 0x45
    }

    case authentication(AuthenticationRequest)
    case backendKeyData(processID: Int32, secretKey: [UInt8])
    case bindComplete
    case closeComplete
    case commandComplete(String)
    case copyData(ByteBuffer)
    case copyDone
    case copyInResponse(CopyResponse)
    case copyOutResponse(CopyResponse)
    case copyBothResponse(CopyResponse)
    case dataRow([ByteBuffer?])
    case emptyQueryResponse
    case errorResponse(ErrorFields)
    case functionCallResponse(ByteBuffer?)
    case negotiateProtocolVersion(newestMinor: Int32, unrecognizedOptions: [String])
    case noData
    case noticeResponse(ErrorFields)
    case notificationResponse(processID: Int32, channel: String, payload: String)
    case parameterDescription([Int32])
    case parameterStatus(name: String, value: String)
    case parseComplete
    case portalSuspended
    case readyForQuery(TransactionStatus)
    case rowDescription([Field])

    public enum Kind: UInt8, Sendable {
        case authentication = 0x52 // R
        case backendKeyData = 0x4b // K
        case bindComplete = 0x32 // 2
        case closeComplete = 0x33 // 3
        case commandComplete = 0x43 // C
        case copyData = 0x64 // d
        case copyDone = 0x63 // c
        case copyInResponse = 0x47 // G
        case copyOutResponse = 0x48 // H
        case copyBothResponse = 0x57 // W
        case dataRow = 0x44 // D
        case emptyQueryResponse = 0x49 // I
        case errorResponse = 0x45 // E
        case functionCallResponse = 0x56 // V
        case negotiateProtocolVersion = 0x76 // v
        case noData = 0x6e // n
        case noticeResponse = 0x4e // N
        case notificationResponse = 0x41 // A
        case parameterDescription = 0x74 // t
        case parameterStatus = 0x53 // S
        case parseComplete = 0x31 // 1
        case portalSuspended = 0x73 // s
        case readyForQuery = 0x5a // Z
        case rowDescription = 0x54 // T
    }

    public init(frame: PostgresFrame) throws(WireError) {
        guard let kind = Kind(rawValue: frame.type) else { throw .unknownMessageType(frame.type) }
        var r = MessageReader(frame.body, message: kind)
        switch kind {
        case .authentication:
            let code = try r.int32("authentication code")
            switch code {
            case 0: self = .authentication(.ok)
            case 2: self = .authentication(.kerberosV5)
            case 3: self = .authentication(.cleartextPassword)
            case 5: self = .authentication(.md5Password(salt: Array(try r.bytes(4, "salt").readableBytesView)))
            case 7: self = .authentication(.gss)
            case 8: self = .authentication(.gssContinue(r.rest()))
            case 9: self = .authentication(.sspi)
            case 10:
                var mechanisms: [String] = []
                while true {
                    let m = try r.cString("SASL mechanism")
                    if m.isEmpty { break }
                    mechanisms.append(m)
                }
                self = .authentication(.sasl(mechanisms: mechanisms))
            case 11: self = .authentication(.saslContinue(r.rest()))
            case 12: self = .authentication(.saslFinal(r.rest()))
            default:
                throw .invalidValue(message: "Authentication", field: "code", detail: "unknown authentication code \(code)")
            }
        case .backendKeyData:
            let pid = try r.int32("process ID")
            let n = r.buffer.readableBytes
            guard (4...256).contains(n) else {
                throw .invalidValue(message: "BackendKeyData", field: "secret key", detail: "length \(n) is not between 4 and 256")
            }
            self = .backendKeyData(processID: pid, secretKey: Array(r.rest().readableBytesView))
        case .bindComplete: self = .bindComplete
        case .closeComplete: self = .closeComplete
        case .commandComplete: self = .commandComplete(try r.cString("command tag"))
        case .copyData: self = .copyData(r.rest())
        case .copyDone: self = .copyDone
        case .copyInResponse, .copyOutResponse, .copyBothResponse:
            let format = try r.int8("format")
            let n = try r.count16("column count", minimumElementSize: 2)
            var formats: [Int16] = []
            for _ in 0..<n { formats.append(try r.int16("column format")) }
            let c = CopyResponse(format: format, columnFormats: formats)
            self = kind == .copyInResponse ? .copyInResponse(c) : kind == .copyOutResponse ? .copyOutResponse(c) : .copyBothResponse(c)
        case .dataRow:
            let n = try r.count16("column count", minimumElementSize: 4)
            var columns: [ByteBuffer?] = []
            columns.reserveCapacity(n)
            for i in 0..<n { columns.append(try r.nullableBytes("column \(i + 1)")) }
            self = .dataRow(columns)
        case .emptyQueryResponse: self = .emptyQueryResponse
        case .errorResponse, .noticeResponse:
            var fields: [ErrorFields.Field] = []
            while true {
                let code = try r.int8("field code")
                if code == 0 { break }
                fields.append(.init(code: code, value: try r.cString("field \(WireError.printable(code))")))
            }
            self = kind == .errorResponse ? .errorResponse(ErrorFields(fields)) : .noticeResponse(ErrorFields(fields))
        case .functionCallResponse:
            self = .functionCallResponse(try r.nullableBytes("result"))
        case .negotiateProtocolVersion:
            let minor = try r.int32("newest minor version")
            let n = Int(try r.int32("option count"))
            guard n >= 0, n <= r.buffer.readableBytes else {
                throw .invalidValue(message: "NegotiateProtocolVersion", field: "option count", detail: "impossible count \(n)")
            }
            var options: [String] = []
            for _ in 0..<n { options.append(try r.cString("option")) }
            self = .negotiateProtocolVersion(newestMinor: minor, unrecognizedOptions: options)
        case .noData: self = .noData
        case .notificationResponse:
            let pid = try r.int32("process ID")
            let channel = try r.cString("channel")
            self = .notificationResponse(processID: pid, channel: channel, payload: try r.cString("payload"))
        case .parameterDescription:
            let n = try r.count16("parameter count", minimumElementSize: 4)
            var types: [Int32] = []
            for _ in 0..<n { types.append(try r.int32("parameter type")) }
            self = .parameterDescription(types)
        case .parameterStatus:
            let name = try r.cString("name")
            self = .parameterStatus(name: name, value: try r.cString("value"))
        case .parseComplete: self = .parseComplete
        case .portalSuspended: self = .portalSuspended
        case .readyForQuery:
            let s = try r.int8("transaction status")
            guard let status = TransactionStatus(rawValue: s) else {
                throw .invalidValue(message: "ReadyForQuery", field: "transaction status", detail: "unknown status \(WireError.printable(s))")
            }
            self = .readyForQuery(status)
        case .rowDescription:
            let n = try r.count16("field count", minimumElementSize: 19)
            var fields: [Field] = []
            for i in 0..<n {
                let name = try r.cString("field \(i + 1) name")
                fields.append(Field(
                    name: name, tableOID: try r.int32("table OID"), columnNumber: try r.int16("column number"),
                    typeOID: try r.int32("type OID"), typeSize: try r.int16("type size"),
                    typeModifier: try r.int32("type modifier"), format: try r.int16("format")))
            }
            self = .rowDescription(fields)
        }
        try r.finish()
    }

    public var kind: Kind {
        switch self {
        case .authentication: .authentication
        case .backendKeyData: .backendKeyData
        case .bindComplete: .bindComplete
        case .closeComplete: .closeComplete
        case .commandComplete: .commandComplete
        case .copyData: .copyData
        case .copyDone: .copyDone
        case .copyInResponse: .copyInResponse
        case .copyOutResponse: .copyOutResponse
        case .copyBothResponse: .copyBothResponse
        case .dataRow: .dataRow
        case .emptyQueryResponse: .emptyQueryResponse
        case .errorResponse: .errorResponse
        case .functionCallResponse: .functionCallResponse
        case .negotiateProtocolVersion: .negotiateProtocolVersion
        case .noData: .noData
        case .noticeResponse: .noticeResponse
        case .notificationResponse: .notificationResponse
        case .parameterDescription: .parameterDescription
        case .parameterStatus: .parameterStatus
        case .parseComplete: .parseComplete
        case .portalSuspended: .portalSuspended
        case .readyForQuery: .readyForQuery
        case .rowDescription: .rowDescription
        }
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeMessage(kind.rawValue) { b in
            switch self {
            case let .authentication(a):
                switch a {
                case .ok: b.writeInteger(Int32(0))
                case .kerberosV5: b.writeInteger(Int32(2))
                case .cleartextPassword: b.writeInteger(Int32(3))
                case let .md5Password(salt): b.writeInteger(Int32(5)); b.writeBytes(salt)
                case .gss: b.writeInteger(Int32(7))
                case var .gssContinue(d): b.writeInteger(Int32(8)); b.writeBuffer(&d)
                case .sspi: b.writeInteger(Int32(9))
                case let .sasl(mechanisms):
                    b.writeInteger(Int32(10))
                    for m in mechanisms { b.writeCString(m) }
                    b.writeInteger(UInt8(0))
                case var .saslContinue(d): b.writeInteger(Int32(11)); b.writeBuffer(&d)
                case var .saslFinal(d): b.writeInteger(Int32(12)); b.writeBuffer(&d)
                }
            case let .backendKeyData(pid, key):
                b.writeInteger(pid)
                b.writeBytes(key)
            case .bindComplete, .closeComplete, .copyDone, .emptyQueryResponse, .noData, .parseComplete, .portalSuspended:
                break
            case let .commandComplete(tag):
                b.writeCString(tag)
            case var .copyData(d):
                b.writeBuffer(&d)
            case let .copyInResponse(c), let .copyOutResponse(c), let .copyBothResponse(c):
                b.writeInteger(c.format)
                b.writeInteger(UInt16(c.columnFormats.count))
                for f in c.columnFormats { b.writeInteger(f) }
            case let .dataRow(columns):
                b.writeInteger(UInt16(columns.count))
                for c in columns { b.writeNullableValue(c) }
            case let .errorResponse(e), let .noticeResponse(e):
                for f in e.fields {
                    b.writeInteger(f.code)
                    b.writeCString(f.value)
                }
                b.writeInteger(UInt8(0))
            case let .functionCallResponse(v):
                b.writeNullableValue(v)
            case let .negotiateProtocolVersion(minor, options):
                b.writeInteger(minor)
                b.writeInteger(Int32(options.count))
                for o in options { b.writeCString(o) }
            case let .notificationResponse(pid, channel, payload):
                b.writeInteger(pid)
                b.writeCString(channel)
                b.writeCString(payload)
            case let .parameterDescription(types):
                b.writeInteger(UInt16(types.count))
                for t in types { b.writeInteger(t) }
            case let .parameterStatus(name, value):
                b.writeCString(name)
                b.writeCString(value)
            case let .readyForQuery(status):
                b.writeInteger(status.rawValue)
            case let .rowDescription(fields):
                b.writeInteger(UInt16(fields.count))
                for f in fields {
                    b.writeCString(f.name)
                    b.writeInteger(f.tableOID)
                    b.writeInteger(f.columnNumber)
                    b.writeInteger(f.typeOID)
                    b.writeInteger(f.typeSize)
                    b.writeInteger(f.typeModifier)
                    b.writeInteger(f.format)
                }
            }
        }
    }

    public var frame: PostgresFrame {
        var b = ByteBuffer()
        encode(into: &b)
        return PostgresFrame(bytes: b)
    }
}
