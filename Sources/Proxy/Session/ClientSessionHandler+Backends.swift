import Logging
import NIOCore
import NIOPosix
import State
import Wire

extension ClientSessionHandler {
    /// Connects to every online backend and logs in to each as the client's user.
    func connectBackends() {
        guard let context, let startup, let authenticator else { return }
        seenViewGeneration = shared.registry.viewGeneration
        let targets = shared.registry.online()
        guard !targets.isEmpty else {
            fatal(ErrorFields(severity: "FATAL", sqlState: "08001", message: "pgchorus has no online backend"))
            return
        }
        phase = .connectingBackends
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let backendStartup = BackendLogin.startupMessage(for: startup)
        let maxMessage = shared.configuration.proxy.maxMessageSize
        let timeout = shared.configuration.proxy.backendConnectTimeout
        startupTimer?.cancel()
        startupTimer = context.eventLoop.scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
            let session = bound.value
            guard session.phase == .connectingBackends else { return }
            let waiting = session.backends.filter { $0.phase != .ready && $0.phase != .closed }
            if waiting.count < session.backends.count, session.backends.contains(where: { $0.phase == .ready }) {
                // Some answered: the ones that did not are failed, the session goes on without them.
                for i in session.backends.indices where session.backends[i].phase != .ready && session.backends[i].phase != .closed {
                    session.loginFailed(i, ErrorFields(severity: "FATAL", sqlState: "08001", message: "no answer within \(timeout) s while logging in"),
                                        forwardBytes: nil, failBackend: true)
                }
                return
            }
            session.fatal(ErrorFields(severity: "FATAL", sqlState: "08001",
                                      message: "pgchorus: timeout after \(timeout) s logging in to backend \(waiting.map(\.backend.description).joined(separator: ", "))"))
        }
        var rng = SystemRandomNumberGenerator()
        for (index, backend) in targets.enumerated() {
            let nonce = Base64.encode((0..<18).map { _ in UInt8.random(in: 0...255, using: &rng) })
            backends.append(BackendSession(backend: backend, login: BackendLogin(user: startup["user"] ?? "", credential: authenticator.credential, nonce: nonce)))
            ClientBootstrap(group: context.eventLoop)
                .connectTimeout(.milliseconds(Int64(timeout * 1000)))
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            BackendRelayHandler(session: bound, index: index, maximumMessageSize: maxMessage))
                    }
                }
                .connect(host: backend.host, port: backend.port)
                .whenComplete { result in
                    let session = bound.value
                    switch result {
                    case let .success(channel):
                        session.backendConnected(index, channel, startup: backendStartup)
                    case let .failure(error):
                        session.loginFailed(index, ErrorFields(severity: "FATAL", sqlState: "08001",
                                                               message: "pgchorus could not connect to backend \(backend.description): \(error)"),
                                            forwardBytes: nil, failBackend: true)
                    }
                }
        }
    }

    func backendConnected(_ index: Int, _ channel: Channel, startup: StartupMessage) {
        guard phase == .connectingBackends, backends[index].phase == .connecting else {
            channel.close(promise: nil)
            return
        }
        backends[index].channel = channel
        backends[index].phase = .loggingIn
        var bytes = ByteBuffer()
        startup.encode(into: &bytes)
        backends[index].write(bytes)
        flushBackend(index)
    }

    func backendLoginFrame(_ index: Int, _ frame: PostgresFrame) {
        let message: BackendMessage
        do {
            message = try BackendMessage(frame: frame)
        } catch {
            loginFailed(index, ErrorFields(severity: "FATAL", sqlState: "08P01",
                                           message: "pgchorus received an invalid message from backend \(backends[index].backend.description): \(error)"),
                        forwardBytes: nil, failBackend: true)
            return
        }
        switch backends[index].login.receive(message) {
        case .none:
            break
        case let .send(reply):
            backends[index].write(reply.frame.bytes)
            flushBackend(index)
        case .ready:
            backends[index].phase = .ready
            sessionReadyIfComplete()
        case .backendError:
            // The backend's own words (e.g. 3D000 database does not exist) reach the client byte-exact,
            // unless other backends accept the same login: then this one is out of step.
            loginFailed(index, ErrorFields(severity: "FATAL", sqlState: "08001", message: ""), forwardBytes: frame.bytes, failBackend: false)
        case let .fail(reason):
            logger.error("login to backend \(backends[index].backend.description) failed: \(reason)")
            loginFailed(index, ErrorFields(severity: "FATAL", sqlState: "28000",
                                           message: "pgchorus could not log in to backend \(backends[index].backend.description): \(reason)"),
                        forwardBytes: nil, failBackend: false)
        }
    }

    /// One backend could not open this session. If others can, it is taken out of service
    /// (when `failBackend`) or just left out; if none can, the client gets the error.
    func loginFailed(_ index: Int, _ fields: ErrorFields, forwardBytes: ByteBuffer?, failBackend: Bool) {
        guard phase == .connectingBackends, backends[index].phase != .closed else { return }
        backends[index].phase = .closed
        backends[index].channel?.close(promise: nil)
        let others = backends.indices.filter { $0 != index && backends[$0].phase != .closed }
        if others.isEmpty {
            if let forwardBytes {
                writeClientBytes(forwardBytes)
                fatalForwarded = true
                close()
            } else {
                fatal(fields)
            }
            return
        }
        let reason = forwardBytes.flatMap { try? BackendMessage(frame: PostgresFrame(bytes: $0)) }.flatMap { m -> String? in
            if case let .errorResponse(f) = m { return "login refused: \(f.sqlState ?? "") \(f.message ?? "")" }
            return nil
        } ?? fields.message ?? "login failed"
        if failBackend || others.contains(where: { backends[$0].phase == .ready }) {
            shared.registry.fail(backends[index].backend.id, reason: reason, now: WallClock.unixTime())
        }
        logger.warning("backend \(backends[index].backend.description) left out of the session: \(reason)")
        sessionReadyIfComplete()
    }

    /// Finishes start-up once every backend of the session has logged in or dropped out.
    func sessionReadyIfComplete() {
        guard phase == .connectingBackends else { return }
        guard backends.allSatisfy({ $0.phase == .ready || $0.phase == .closed }) else { return }
        guard let first = backends.firstIndex(where: { $0.phase == .ready }) else {
            fatal(ErrorFields(severity: "FATAL", sqlState: "08001", message: "pgchorus has no online backend"))
            return
        }
        startupTimer?.cancel()
        lead = first
        var rng = SystemRandomNumberGenerator()
        let key = shared.cancelRegistry.register(using: &rng)
        virtualProcessID = key.processID
        virtualSecretKey = key.secretKey
        logger[metadataKey: "session"] = "\(virtualProcessID)"
        updateCancelTargets()
        writeClient(.authentication(.ok))
        for p in backends[lead].login.parameters { writeClient(.parameterStatus(name: p.name, value: p.value)) }
        writeClient(.backendKeyData(processID: virtualProcessID, secretKey: virtualSecretKey))
        writeClient(.readyForQuery(.idle))
        phase = .relaying
        flushClient()
        logger.debug("session ready", metadata: ["backends": "\(backends.filter(\.isLive).map(\.backend.id))"])
        ensureCommitLog()
        loadSequenceCatalogIfNeeded()
        let early = earlyFrames
        earlyFrames = []
        for f in early { handleRelayFrame(f) }
        flushBackends()
    }

    func updateCancelTargets() {
        shared.cancelRegistry.setTargets(backends.filter(\.isLive).map {
            CancelRegistry.Target(host: $0.backend.host, port: $0.backend.port, processID: $0.login.processID, secretKey: $0.login.secretKey)
        }, for: virtualProcessID)
    }
}
