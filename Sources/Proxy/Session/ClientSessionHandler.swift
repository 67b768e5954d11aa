import Logging
import NIOCore
import NIOPosix
import NIOSSL
import State
import Wire

/// One client connection: startup and TLS negotiation, client authentication by the node,
/// the backend logins, then the relay of messages in both directions.
///
/// Everything here runs on the client channel's event loop; the backend channels are created on
/// the same loop, so no state is shared across threads.
final class ClientSessionHandler: ChannelInboundHandler {
    typealias InboundIn = ClientInbound
    typealias OutboundOut = ByteBuffer

    enum Phase {
        case awaitingStartup
        case authenticating
        case connectingBackends
        case relaying
        case closed
    }

    static let authenticationTimeout: TimeAmount = .seconds(60)

    let shared: ProxyContext
    var logger: Logger
    var phase = Phase.awaitingStartup
    var context: ChannelHandlerContext?
    var startup: StartupMessage?
    var authenticator: ClientAuthenticator?
    var backends: [BackendSession] = []
    var virtualProcessID: Int32 = 0
    var virtualSecretKey: [UInt8] = []
    var counted = false
    var tlsStarted = false
    var fatalForwarded = false
    var clientNeedsFlush = false
    /// Frames a client sent before its session was ready (a pipelining client may do this).
    var earlyFrames: [PostgresFrame] = []
    var startupTimer: Scheduled<Void>?

    init(shared: ProxyContext) {
        self.shared = shared
        self.logger = shared.logger
    }

    // MARK: client channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if let remote = context.channel.remoteAddress { logger[metadataKey: "client"] = "\(remote)" }
    }

    func channelActive(context: ChannelHandlerContext) {
        let count = shared.activeSessions.wrappingAdd(1, ordering: .relaxed).newValue
        counted = true
        if count > shared.configuration.proxy.maxClients {
            fatal(ErrorFields(severity: "FATAL", sqlState: "53300", message: "sorry, too many clients already"))
            return
        }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        startupTimer = context.eventLoop.scheduleTask(in: Self.authenticationTimeout) {
            let session = bound.value
            guard session.phase != .relaying, session.phase != .closed else { return }
            session.fatal(ErrorFields(severity: "FATAL", sqlState: "08006", message: "pgchorus: canceling session start-up due to timeout"))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        shutDown()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard phase != .closed else { return }
        switch unwrapInboundIn(data) {
        case let .startupPhase(message):
            handleStartupPhase(message, context: context)
        case let .frame(frame):
            handleClientFrame(frame)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        for i in backends.indices { backends[i].flushIfNeeded() }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if case let .unsupportedProtocolVersion(major, minor)? = error as? WireError {
            logger.info("client asked for protocol \(major).\(minor)")
            fatal(ErrorFields(severity: "FATAL", sqlState: "0A000", message: "\(WireError.unsupportedProtocolVersion(major: major, minor: minor))"))
        } else if let wire = error as? WireError {
            logger.warning("invalid message from client: \(wire)")
            fatal(ErrorFields(severity: "FATAL", sqlState: "08P01", message: "invalid message from client: \(wire)"))
        } else {
            logger.debug("client connection error: \(error)")
            close()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // Backpressure: stop reading the backends while the client cannot take more.
        let writable = context.channel.isWritable
        for b in backends { b.channel?.setOption(ChannelOptions.autoRead, value: writable).whenFailure { _ in } }
    }

    // MARK: start-up

    private func handleStartupPhase(_ message: StartupPhaseMessage, context: ChannelHandlerContext) {
        guard phase == .awaitingStartup else {
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
        startup = message
        let extensionOptions = message.parameters.map(\.name).filter { $0.hasPrefix("_pq_.") }
        if message.protocolMinor > 0 || !extensionOptions.isEmpty {
            writeClient(.negotiateProtocolVersion(newestMinor: 0, unrecognizedOptions: extensionOptions))
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
        guard let rule = shared.configuration.auth.rules.first(where: { $0.matches(database: database, user: user, address: address) }) else {
            fatal(ErrorFields(severity: "FATAL", sqlState: "28000",
                              message: "no pgchorus auth rule for host \"\(host)\", user \"\(user)\", database \"\(database)\""))
            return
        }
        var rng = SystemRandomNumberGenerator()
        let random = (0..<24).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var auth = ClientAuthenticator(user: user, rule: rule, stored: shared.users.secrets[user], randomBytes: random)
        phase = .authenticating
        let action = auth.start()
        authenticator = auth
        perform(action)
    }

    private func perform(_ action: ClientAuthenticator.Action) {
        switch action {
        case let .send(message):
            writeClient(message)
            flushClient()
        case let .authenticated(final):
            if let final { writeClient(final) }
            flushClient()
            connectBackends()
        case let .fail(fields):
            logger.info("client authentication failed: \(fields.message ?? "")")
            fatal(fields)
        }
    }

    private func handleCancel(_ request: CancelRequest, context: ChannelHandlerContext) {
        let targets = shared.cancelRegistry.targets(for: request)
        if targets.isEmpty {
            logger.debug("cancel request for an unknown session \(request.processID)")
        }
        for target in targets {
            var encoded = ByteBuffer()
            CancelRequest(processID: target.processID, secretKey: target.secretKey).encode(into: &encoded)
            let bytes = encoded
            ClientBootstrap(group: context.eventLoop)
                .connectTimeout(.seconds(5))
                .connect(host: target.host, port: target.port)
                .whenSuccess { channel in
                    channel.writeAndFlush(bytes).whenComplete { _ in channel.close(promise: nil) }
                }
        }
        close()
    }

    // MARK: backends

    /// The backends this session runs on.
    private func sessionBackends() -> [Configuration.Backend] {
        Array(shared.configuration.backends.prefix(1))
    }

    private func connectBackends() {
        guard let context, let startup, let authenticator else { return }
        phase = .connectingBackends
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let backendStartup = BackendLogin.startupMessage(for: startup)
        let maxMessage = shared.configuration.proxy.maxMessageSize
        let timeout = shared.configuration.proxy.backendConnectTimeout
        startupTimer?.cancel()
        startupTimer = context.eventLoop.scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
            let session = bound.value
            guard session.phase == .connectingBackends else { return }
            let waiting = session.backends.filter { $0.phase != .ready }.map(\.backend.description).joined(separator: ", ")
            session.fatal(ErrorFields(severity: "FATAL", sqlState: "08001",
                                      message: "pgchorus: timeout after \(timeout) s logging in to backend \(waiting)"))
        }
        var rng = SystemRandomNumberGenerator()
        for (index, backend) in sessionBackends().enumerated() {
            let nonce = Base64.encode((0..<18).map { _ in UInt8.random(in: 0...255, using: &rng) })
            backends.append(BackendSession(backend: backend, login: BackendLogin(user: startup["user"] ?? "", credential: authenticator.credential, nonce: nonce)))
            ClientBootstrap(group: context.eventLoop)
                .connectTimeout(.milliseconds(Int64(timeout * 1000)))
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers([
                            ByteToMessageHandler(PostgresFrameDecoder(maximumMessageSize: maxMessage)),
                            BackendRelayHandler(session: bound, index: index),
                        ])
                    }
                }
                .connect(host: backend.host, port: backend.port)
                .whenComplete { result in
                    let session = bound.value
                    switch result {
                    case let .success(channel):
                        session.backendConnected(index, channel, startup: backendStartup)
                    case let .failure(error):
                        session.fatal(ErrorFields(severity: "FATAL", sqlState: "08001",
                                                  message: "pgchorus could not connect to backend \(backend.description): \(error)"))
                    }
                }
        }
    }

    private func backendConnected(_ index: Int, _ channel: Channel, startup: StartupMessage) {
        guard phase == .connectingBackends else {
            channel.close(promise: nil)
            return
        }
        backends[index].channel = channel
        backends[index].phase = .loggingIn
        var bytes = ByteBuffer()
        startup.encode(into: &bytes)
        backends[index].write(bytes)
        backends[index].flushIfNeeded()
    }

    func backendFrame(_ index: Int, _ frame: PostgresFrame) {
        switch backends[index].phase {
        case .loggingIn:
            backendLoginFrame(index, frame)
        case .ready:
            relayFromBackend(index, frame)
        case .connecting, .closed:
            break
        }
    }

    private func backendLoginFrame(_ index: Int, _ frame: PostgresFrame) {
        let message: BackendMessage
        do {
            message = try BackendMessage(frame: frame)
        } catch {
            backendFailed(index, error)
            return
        }
        switch backends[index].login.receive(message) {
        case .none:
            break
        case let .send(reply):
            backends[index].write(reply.frame.bytes)
            backends[index].flushIfNeeded()
        case .ready:
            backends[index].phase = .ready
            if backends.allSatisfy({ $0.phase == .ready }) { sessionReady() }
        case .backendError:
            // The backend's own words (e.g. 3D000 database does not exist) reach the client byte-exact.
            writeClientBytes(frame.bytes)
            fatalForwarded = true
            close()
        case let .fail(reason):
            logger.error("login to backend \(backends[index].backend.description) failed: \(reason)")
            fatal(ErrorFields(severity: "FATAL", sqlState: "28000",
                              message: "pgchorus could not log in to backend \(backends[index].backend.description): \(reason)"))
        }
    }

    private func sessionReady() {
        guard phase == .connectingBackends else { return }
        startupTimer?.cancel()
        var rng = SystemRandomNumberGenerator()
        let key = shared.cancelRegistry.register(using: &rng)
        virtualProcessID = key.processID
        virtualSecretKey = key.secretKey
        logger[metadataKey: "session"] = "\(virtualProcessID)"
        shared.cancelRegistry.setTargets(backends.map {
            CancelRegistry.Target(host: $0.backend.host, port: $0.backend.port, processID: $0.login.processID, secretKey: $0.login.secretKey)
        }, for: virtualProcessID)
        let lead = backends[0].login
        writeClient(.authentication(.ok))
        for p in lead.parameters { writeClient(.parameterStatus(name: p.name, value: p.value)) }
        writeClient(.backendKeyData(processID: virtualProcessID, secretKey: virtualSecretKey))
        writeClient(.readyForQuery(.idle))
        phase = .relaying
        flushClient()
        logger.debug("session ready")
        let early = earlyFrames
        earlyFrames = []
        for f in early { handleClientFrame(f) }
        for i in backends.indices { backends[i].flushIfNeeded() }
    }

    // MARK: relay

    private func handleClientFrame(_ frame: PostgresFrame) {
        switch phase {
        case .authenticating:
            guard frame.type == FrontendMessage.Kind.authenticationResponse.rawValue, var auth = authenticator else {
                fatal(ErrorFields(severity: "FATAL", sqlState: "08P01",
                                  message: "expected password response, got message type \(WireError.printable(frame.type))"))
                return
            }
            let action = auth.receive(frame.body)
            authenticator = auth
            perform(action)
        case .connectingBackends:
            earlyFrames.append(frame)
        case .relaying:
            guard let kind = FrontendMessage.Kind(rawValue: frame.type) else {
                fatal(ErrorFields(severity: "FATAL", sqlState: "08P01",
                                  message: "invalid frontend message type \(frame.type) ('\(WireError.printable(frame.type))')"))
                return
            }
            if kind == .terminate {
                close()
                return
            }
            for i in backends.indices { backends[i].write(frame.bytes) }
        case .awaitingStartup, .closed:
            break
        }
    }

    private func relayFromBackend(_ index: Int, _ frame: PostgresFrame) {
        guard phase == .relaying else { return }
        switch frame.type {
        case BackendMessage.Kind.notificationResponse.rawValue:
            // The client knows its session by the process id pgchorus gave it, so a notification
            // sent by this very session carries that id.
            if case let .notificationResponse(pid, channel, payload)? = try? BackendMessage(frame: frame),
               pid == backends[index].login.processID {
                writeClient(.notificationResponse(processID: virtualProcessID, channel: channel, payload: payload))
                return
            }
        case BackendMessage.Kind.errorResponse.rawValue:
            if case let .errorResponse(fields)? = try? BackendMessage(frame: frame),
               let severity = fields.severity, severity == "FATAL" || severity == "PANIC" {
                fatalForwarded = true
            }
        default:
            break
        }
        writeClientBytes(frame.bytes)
    }

    func backendReadComplete(_ index: Int) {
        flushClient()
    }

    func backendWritabilityChanged(_ index: Int, _ writable: Bool) {
        // Backpressure: stop reading the client while a backend cannot take more.
        context?.channel.setOption(ChannelOptions.autoRead, value: writable).whenFailure { _ in }
    }

    func backendClosed(_ index: Int) {
        guard index < backends.count else { return }
        let wasOpen = backends[index].phase != .closed
        backends[index].phase = .closed
        guard wasOpen, phase != .closed else { return }
        if fatalForwarded {
            close()
        } else {
            logger.warning("backend \(backends[index].backend.description) closed the connection")
            fatal(ErrorFields(severity: "FATAL", sqlState: "08006",
                              message: "pgchorus lost the connection to backend \(backends[index].backend.description)"))
        }
    }

    func backendFailed(_ index: Int, _ error: Error) {
        guard phase != .closed else { return }
        let name = backends[index].backend.description
        if let wire = error as? WireError {
            logger.error("invalid message from backend \(name): \(wire)")
            fatal(ErrorFields(severity: "FATAL", sqlState: "08P01", message: "pgchorus received an invalid message from backend \(name): \(wire)"))
        } else {
            logger.warning("backend \(name) connection error: \(error)")
            fatal(ErrorFields(severity: "FATAL", sqlState: "08006", message: "pgchorus lost the connection to backend \(name): \(error)"))
        }
    }

    // MARK: output and teardown

    private func writeClient(_ message: BackendMessage) {
        var b = ByteBuffer()
        message.encode(into: &b)
        writeClientBytes(b)
    }

    private func writeClientBytes(_ bytes: ByteBuffer) {
        guard let context else { return }
        context.write(wrapOutboundOut(bytes), promise: nil)
        clientNeedsFlush = true
    }

    private func flushClient() {
        guard clientNeedsFlush, let context else { return }
        clientNeedsFlush = false
        context.flush()
    }

    /// Sends a final error to the client and ends the session.
    func fatal(_ fields: ErrorFields) {
        guard phase != .closed else { return }
        writeClient(.errorResponse(fields))
        close()
    }

    func close() {
        guard phase != .closed else { return }
        flushClient()
        context?.close(promise: nil)
        shutDown()
    }

    private func shutDown() {
        if phase != .closed { phase = .closed }
        startupTimer?.cancel()
        startupTimer = nil
        for i in backends.indices where backends[i].phase != .closed {
            if let channel = backends[i].channel {
                // A polite Terminate spares the backend log an "unexpected EOF" line.
                if backends[i].phase == .ready { channel.writeAndFlush(FrontendMessage.terminate.frame.bytes, promise: nil) }
                channel.close(promise: nil)
            }
            backends[i].phase = .closed
        }
        if virtualProcessID != 0 {
            shared.cancelRegistry.unregister(virtualProcessID)
            virtualProcessID = 0
        }
        if counted {
            counted = false
            shared.activeSessions.wrappingSubtract(1, ordering: .relaxed)
        }
    }
}
