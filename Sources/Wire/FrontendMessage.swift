import NIOCore

/// A message from a client to the server after startup, as a Swift value.
public enum FrontendMessage: Sendable, Equatable {
    public struct Bind: Sendable, Equatable {
        public var portal: String
        public var statement: String
        public var parameterFormats: [Int16]
        /// Parameter values; nil is SQL NULL.
        public var parameters: [ByteBuffer?]
        public var resultFormats: [Int16]
        public init(portal: String, statement: String, parameterFormats: [Int16], parameters: [ByteBuffer?], resultFormats: [Int16]) {
            self.portal = portal; self.statement = statement; self.parameterFormats = parameterFormats
            self.parameters = parameters; self.resultFormats = resultFormats
        }
    }

    public struct Parse: Sendable, Equatable {
        public var name: String
        public var query: String
        public var parameterTypes: [Int32]
        public init(name: String, query: String, parameterTypes: [Int32]) {
            self.name = name; self.query = query; self.parameterTypes = parameterTypes
        }
    }

    public struct FunctionCall: Sendable, Equatable {
        public var functionOID: Int32
        public var argumentFormats: [Int16]
        public var arguments: [ByteBuffer?]
        public var resultFormat: Int16
        public init(functionOID: Int32, argumentFormats: [Int16], arguments: [ByteBuffer?], resultFormat: Int16) {
            self.functionOID = functionOID; self.argumentFormats = argumentFormats
            self.arguments = arguments; self.resultFormat = resultFormat
        }
    }

    /// 'S' for a prepared statement, 'P' for a portal.
    public enum Target: UInt8, Sendable, Equatable {
        case statement = 0x53
        case portal = 0x50
    }

    case bind(Bind)
    case close(Target, String)
    case copyData(ByteBuffer)
    case copyDone
    case copyFail(String)
    case describe(Target, String)
    case execute(portal: String, maxRows: Int32)
    case flush
    case functionCall(FunctionCall)
    case parse(Parse)
    /// PasswordMessage, SASLInitialResponse and SASLResponse share the type byte 'p';
    /// their meaning depends on the authentication exchange, so the body is kept whole.
    case authenticationResponse(ByteBuffer)
    case query(String)
    case sync
    case terminate

    public enum Kind: UInt8, Sendable {
        case bind = 0x42 // B
        case close = 0x43 // C
        case copyData = 0x64 // d
        case copyDone = 0x63 // c
        case copyFail = 0x66 // f
        case describe = 0x44 // D
        case execute = 0x45 // E
        case flush = 0x48 // H
        case functionCall = 0x46 // F
        case parse = 0x50 // P
        case authenticationResponse = 0x70 // p
        case query = 0x51 // Q
        case sync = 0x53 // S
        case terminate = 0x58 // X
    }

    /// The portal and statement names of a Bind, without decoding its parameters; nil when the
    /// frame is not a Bind or is too short.
    public static func bindNames(_ frame: PostgresFrame) -> (portal: String, statement: String)? {
        guard frame.type == Kind.bind.rawValue else { return nil }
        var body = frame.body
        guard let portal = body.readNullTerminatedString(), let statement = body.readNullTerminatedString() else { return nil }
        return (portal, statement)
    }

    public init(frame: PostgresFrame) throws(WireError) {
        guard let kind = Kind(rawValue: frame.type) else { throw .unknownMessageType(frame.type) }
        var r = MessageReader(frame.body, message: kind)
        switch kind {
        case .bind:
            let portal = try r.cString("portal")
            let statement = try r.cString("statement")
            let nf = try r.count16("parameter format count", minimumElementSize: 2)
            var formats: [Int16] = []
            for _ in 0..<nf { formats.append(try r.int16("parameter format")) }
            let np = try r.count16("parameter count", minimumElementSize: 4)
            var params: [ByteBuffer?] = []
            for i in 0..<np { params.append(try r.nullableBytes("parameter \(i + 1)")) }
            let nr = try r.count16("result format count", minimumElementSize: 2)
            var results: [Int16] = []
            for _ in 0..<nr { results.append(try r.int16("result format")) }
            self = .bind(Bind(portal: portal, statement: statement, parameterFormats: formats, parameters: params, resultFormats: results))
        case .close, .describe:
            let t = try r.int8("target")
            guard let target = Target(rawValue: t) else {
                throw .invalidValue(message: "\(kind)", field: "target", detail: "expected 'S' or 'P', got \(WireError.printable(t))")
            }
            let name = try r.cString("name")
            self = kind == .close ? .close(target, name) : .describe(target, name)
        case .copyData:
            self = .copyData(r.rest())
        case .copyDone:
            self = .copyDone
        case .copyFail:
            self = .copyFail(try r.cString("message"))
        case .execute:
            let portal = try r.cString("portal")
            self = .execute(portal: portal, maxRows: try r.int32("max rows"))
        case .flush:
            self = .flush
        case .functionCall:
            let oid = try r.int32("function OID")
            let nf = try r.count16("argument format count", minimumElementSize: 2)
            var formats: [Int16] = []
            for _ in 0..<nf { formats.append(try r.int16("argument format")) }
            let na = try r.count16("argument count", minimumElementSize: 4)
            var args: [ByteBuffer?] = []
            for i in 0..<na { args.append(try r.nullableBytes("argument \(i + 1)")) }
            let rf = try r.int16("result format")
            self = .functionCall(FunctionCall(functionOID: oid, argumentFormats: formats, arguments: args, resultFormat: rf))
        case .parse:
            let name = try r.cString("name")
            let query = try r.cString("query")
            let n = try r.count16("parameter type count", minimumElementSize: 4)
            var types: [Int32] = []
            for _ in 0..<n { types.append(try r.int32("parameter type")) }
            self = .parse(Parse(name: name, query: query, parameterTypes: types))
        case .authenticationResponse:
            self = .authenticationResponse(r.rest())
        case .query:
            self = .query(try r.cString("query string"))
        case .sync:
            self = .sync
        case .terminate:
            self = .terminate
        }
        try r.finish()
    }

    public var kind: Kind {
        switch self {
        case .bind: .bind
        case .close: .close
        case .copyData: .copyData
        case .copyDone: .copyDone
        case .copyFail: .copyFail
        case .describe: .describe
        case .execute: .execute
        case .flush: .flush
        case .functionCall: .functionCall
        case .parse: .parse
        case .authenticationResponse: .authenticationResponse
        case .query: .query
        case .sync: .sync
        case .terminate: .terminate
        }
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeMessage(kind.rawValue) { b in
            switch self {
            case let .bind(m):
                b.writeCString(m.portal)
                b.writeCString(m.statement)
                b.writeInteger(UInt16(m.parameterFormats.count))
                for f in m.parameterFormats { b.writeInteger(f) }
                b.writeInteger(UInt16(m.parameters.count))
                for p in m.parameters { b.writeNullableValue(p) }
                b.writeInteger(UInt16(m.resultFormats.count))
                for f in m.resultFormats { b.writeInteger(f) }
            case let .close(t, name), let .describe(t, name):
                b.writeInteger(t.rawValue)
                b.writeCString(name)
            case var .copyData(data), var .authenticationResponse(data):
                b.writeBuffer(&data)
            case .copyDone, .flush, .sync, .terminate:
                break
            case let .copyFail(message):
                b.writeCString(message)
            case let .execute(portal, maxRows):
                b.writeCString(portal)
                b.writeInteger(maxRows)
            case let .functionCall(m):
                b.writeInteger(m.functionOID)
                b.writeInteger(UInt16(m.argumentFormats.count))
                for f in m.argumentFormats { b.writeInteger(f) }
                b.writeInteger(UInt16(m.arguments.count))
                for a in m.arguments { b.writeNullableValue(a) }
                b.writeInteger(m.resultFormat)
            case let .parse(m):
                b.writeCString(m.name)
                b.writeCString(m.query)
                b.writeInteger(UInt16(m.parameterTypes.count))
                for t in m.parameterTypes { b.writeInteger(t) }
            case let .query(q):
                b.writeCString(q)
            }
        }
    }

    public var frame: PostgresFrame {
        var b = ByteBuffer()
        encode(into: &b)
        return PostgresFrame(bytes: b)
    }
}

extension ByteBuffer {
    @inlinable
    mutating func writeNullableValue(_ value: ByteBuffer?) {
        if var value {
            writeInteger(Int32(value.readableBytes))
            writeBuffer(&value)
        } else {
            writeInteger(Int32(-1))
        }
    }
}
