import Logging
import NIOCore
import NIOPosix
import NIOSSL
import State
import Wire

/// A client connection until it is authenticated: the SSL/GSSENC requests (TLS started here), a
/// CancelRequest (carried out, then the connection closes), the StartupMessage, the node's own
/// authentication of the client (`ClientAuthenticator`, pure). Then it hands the channel over: a
/// `ClientSessionHandler` takes its place in the pipeline with what start-up learnt (`SessionStart`)
/// and the bytes the client has already sent, and logs in to the backends.
///
/// The backend logins stay with the session: a backend taken in later (after recovery) logs in
/// through the same code in the middle of a session.
final class ClientStartupHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// How long a client may take from connecting to being authenticated.
    static let authenticationTimeout: TimeAmount = .seconds(60)

    private enum Phase {
        case awaitingStartup
        case authenticating(ClientAuthenticator, SessionStart)
        /// Handed over to the session, or closed: nothing more to do here.
        case done
    }

    private let shared: ProxyContext
    private let configuration: Configuration
    private var logger: Logger
    private var phase = Phase.awaitingStartup
    private var context: ChannelHandlerContext?
    private var inbound: InboundFrames<ClientMessageDecoder>
    /// This connection counts against `proxy.max_clients` (given to the session at hand-over).
    private var counted = false
    private var tlsStarted = false
    /// More connections than `proxy.max_clients`: refused once the StartupMessage is in (a cancel
    /// request is still carried out), as PostgreSQL does.
    private var overLimit = false
    private var timer: Scheduled<Void>?

    init(shared: ProxyContext, maximumMessageSize: Int) {
        self.inbound = InboundFrames(ClientMessageDecoder(maximumMessageSize: maximumMessageSize))
        self.shared = shared
        self.configuration = shared.configuration
        self.logger = shared.logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let remote = context.channel.remoteAddress { logger[metadataKey: "client"] = "\(remote)" }
    }

    func channelActive(context: ChannelHandlerContext) {
        let count = shared.activeSessions.wrappingAdd(1, ordering: .relaxed).newValue
        ProxyMetrics.sessionsOpened.increment()
        counted = true
        // Not refused at once: closing before the client's first packet is read would reset the
        // connection, and the client could lose the error.
        overLimit = count > configuration.proxy.maxClients
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: Self.authenticationTimeout) {
            bound.value.fatal(ErrorFields(severity: "FATAL", sqlState: "08006", message: "pgchorus: canceling session start-up due to timeout"))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !isDone else { return }
        inbound.append(unwrapInboundIn(data))
        do {
            while !isDone, let message = try inbound.next() {
                switch message {
                case let .startupPhase(message):
                    handleStartupPhase(message, context: context)
                case let .frame(frame):
                    handleFrame(frame, context: context)
                }
            }
        } catch {
            errorCaught(context: context, error: error)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let fields = ClientStartupHandler.clientError(error, logger: logger) { fatal(fields) } else { close() }
    }

    /// What a client is told when its bytes cannot be read (nil: the connection failed, it is closed).
    static func clientError(_ error: Error, logger: Logger) -> ErrorFields? {
        if case let .unsupportedProtocolVersion(major, minor)? = error as? WireError {
            logger.info("client asked for protocol \(major).\(minor)")
            return ErrorFields(severity: "FATAL", sqlState: "0A000", message: "\(WireError.unsupportedProtocolVersion(major: major, minor: minor))")
        } else if let wire = error as? WireError {
            logger.warning("invalid message from client: \(wire)")
            return ErrorFields(severity: "FATAL", sqlState: "08P01", message: "invalid message from client: \(wire)")
        }
        logger.debug("client connection error: \(error)")
        return nil
    }

    private var isDone: Bool {
        if case .done = phase { return true }
        return false
    }

    private func handleStartupPhase(_ message: StartupPhaseMessage, context: ChannelHandlerContext) {
        guard case .awaitingStartup = phase else {
            fatal(ErrorFields(severity: "FATAL", sqlState: "08P01", message: "unexpected start-up packet"))
            return
        }
        switch message {
        case let .sslRequest(trailingBytes):
            guard !trailingBytes else {
                fatal(ErrorFields(severity: "FATAL", sqlState: "08P01", message: "received unencrypted data after SSL request"))
                return
            }
            guard let tls = shared.tlsContext, !tlsStarted else {
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "N")), promise: nil)
                return
            }
            // The answer passes the pipeline before the TLS handler exists, so it goes out in clear.
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "S")), promise: nil)
            tlsStarted = true
            do {
                try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls), position: .first)
            } catch {
                logger.error("cannot start TLS: \(error)")
                close()
            }
        case let .gssEncryptionRequest(trailingBytes):
            guard !trailingBytes else {
                fatal(ErrorFields(severity: "FATAL", sqlState: "08P01", message: "received unencrypted data after GSSAPI encryption request"))
                return
            }
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "N")), promise: nil)
        case let .cancel(request):
            handleCancel(request, context: context)
        case let .startup(startupMessage):
            handleStartup(startupMessage, context: context)
        }
    }

    private func handleStartup(_ message: StartupMessage, context: ChannelHandlerContext) {
        if overLimit {
            fatal(ErrorFields(severity: "FATAL", sqlState: "53300", message: "sorry, too many clients already"))
            return
        }
        let extensionOptions = message.parameters.map(\.name).filter { $0.hasPrefix("_pq_.") }
        if message.protocolMinor > 0 || !extensionOptions.isEmpty {
            write(.negotiateProtocolVersion(newestMinor: 0, unrecognizedOptions: extensionOptions))
        }
        guard let user = message["user"], !user.isEmpty else {
            fatal(ErrorFields(severity: "FATAL", sqlState: "28000", message: "no PostgreSQL user name specified in startup packet"))
            return
        }
        if let replication = message["replication"], !["false", "off", "no", "0"].contains(replication.lowercased()) {
            fatal(ErrorFields(severity: "FATAL", sqlState: "0A000", message: "pgchorus does not relay replication connections; connect to a backend directly"))
            return
        }
        let database = message["database"].flatMap { $0.isEmpty ? nil : $0 } ?? user
        logger[metadataKey: "user"] = "\(user)"
        logger[metadataKey: "database"] = "\(database)"
        let host = context.channel.remoteAddress?.ipAddress ?? "unknown"
        let address = context.channel.remoteAddress?.ipAddress.flatMap(IPAddressBytes.init)
        guard let rule = configuration.auth.rules.first(where: { $0.matches(database: database, user: user, address: address) }) else {
            fatal(ErrorFields(severity: "FATAL", sqlState: "28000",
                              message: "no pgchorus auth rule for host \"\(host)\", user \"\(user)\", database \"\(database)\""))
            return
        }
        var rng = SystemRandomNumberGenerator()
        let random = (0..<24).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var auth = ClientAuthenticator(user: user, rule: rule, stored: shared.users.secrets[user], randomBytes: random, encrypted: tlsStarted)
        let start = SessionStart(startup: message, user: user, database: database, credential: .none)
        let action = auth.start()
        phase = .authenticating(auth, start)
        perform(action, context: context)
    }

    private func handleFrame(_ frame: PostgresFrame, context: ChannelHandlerContext) {
        guard case .authenticating(var auth, let start) = phase,
              frame.type == FrontendMessage.Kind.authenticationResponse.rawValue else {
            fatal(ErrorFields(severity: "FATAL", sqlState: "08P01",
                              message: "expected password response, got message type \(WireError.printable(frame.type))"))
            return
        }
        let action = auth.receive(frame.body)
        phase = .authenticating(auth, start)
        perform(action, context: context)
    }

    private func perform(_ action: ClientAuthenticator.Action, context: ChannelHandlerContext) {
        switch action {
        case let .send(message):
            write(message)
            context.flush()
        case let .authenticated(final):
            if let final { write(final) }
            context.flush()
            handOver(context: context)
        case let .fail(fields):
            logger.info("client authentication failed: \(fields.message ?? "")")
            fatal(fields)
        }
    }

    /// The client is who it says: a session handler takes this one's place with the start-up's
    /// result, this connection's count and the bytes not read yet (a client may send its first
    /// Query right behind its password).
    private func handOver(context: ChannelHandlerContext) {
        guard case let .authenticating(auth, start) = phase else { return }
        var handed = start
        handed.credential = auth.credential
        phase = .done
        timer?.cancel()
        timer = nil
        let session = ClientSessionHandler(shared: shared, start: handed, logger: logger)
        do {
            try context.pipeline.syncOperations.addHandler(session, position: .last)
        } catch {
            logger.error("cannot hand the client over to its session: \(error)")
            close()
            return
        }
        counted = false
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        session.begin(counted: true, unread: inbound)
    }

    private func handleCancel(_ request: CancelRequest, context: ChannelHandlerContext) {
        phase = .done
        guard let session = shared.cancelRegistry.handler(for: request) else {
            logger.debug("cancel request for an unknown session \(request.processID)")
            close()
            return
        }
        // The client's connection closes once every backend has taken the cancel (libpq waits for
        // that close): a cancel must not land on the client's next statement instead.
        let loop = context.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        // The session forwards it: to the backends running the client's statement, not to a statement
        // of pgchorus' own ahead of it (`ClientSessionHandler.clientCancelRequested`), and a statement it
        // still holds back is cancelled there. Its answer may wait for such a statement of its own to
        // end; the connection closes after 30 s at the latest.
        let closed = loop.makePromise(of: Void.self)
        let limit = loop.scheduleTask(in: Self.cancelForwardBound) { closed.succeed(()) }
        closed.futureResult.whenComplete { _ in
            limit.cancel()
            bound.value.close()
        }
        session { closed.succeed(()) }
    }

    /// The longest a client's cancel connection stays open while its session forwards the cancel.
    static let cancelForwardBound = TimeAmount.seconds(30)

    private func write(_ message: BackendMessage) {
        guard let context else { return }
        var b = ByteBuffer()
        message.encode(into: &b)
        context.write(wrapOutboundOut(b), promise: nil)
    }

    /// Sends a final error to the client and closes the connection.
    private func fatal(_ fields: ErrorFields) {
        guard let context, context.channel.isActive else { return finish() }
        write(.errorResponse(fields))
        context.closeAfterFinalMessage()
        finish()
    }

    private func close() {
        context?.flush()
        context?.close(promise: nil)
        finish()
    }

    /// This connection will not become a session: its count and timer are given back.
    private func finish() {
        if case .authenticating = phase { phase = .done }
        if case .awaitingStartup = phase { phase = .done }
        timer?.cancel()
        timer = nil
        if counted {
            counted = false
            shared.activeSessions.wrappingSubtract(1, ordering: .relaxed)
        }
    }
}

/// What start-up hands the session: who the client is and where it wants to go.
struct SessionStart {
    var startup: StartupMessage
    var user: String
    var database: String
    /// What the backend logins answer their challenges with (the client's password or SCRAM keys).
    var credential: BackendCredential
}

extension CancelRegistry.Target {
    /// Sends a CancelRequest for this backend session (a connection of its own, as PostgreSQL wants);
    /// succeeds once the server has closed that connection — it has then processed the request — or
    /// after 5 s at most.
    @discardableResult
    func send(on loop: EventLoop) -> EventLoopFuture<Void> {
        var encoded = ByteBuffer()
        CancelRequest(processID: processID, secretKey: secretKey).encode(into: &encoded)
        let bytes = encoded
        let done = loop.makePromise(of: Void.self)
        ClientBootstrap(group: loop)
            .connectTimeout(.seconds(5))
            .connect(host: host, port: port)
            .whenComplete { result in
                guard case let .success(channel) = result else {
                    done.succeed(())
                    return
                }
                channel.writeAndFlush(bytes, promise: nil)
                let limit = loop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
                channel.closeFuture.whenComplete { _ in
                    limit.cancel()
                    done.succeed(())
                }
            }
        return done.futureResult
    }
}
