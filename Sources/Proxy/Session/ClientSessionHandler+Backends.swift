import Logging
import NIOCore
import NIOPosix
import NIOSSL
import State
import Wire

extension ClientSessionHandler {
    /// Connects to every online backend and logs in to each as the client's user.
    func connectBackends() {
        guard let context else { return }
        seenViewGeneration = shared.registry.viewGeneration
        let targets = shared.registry.online()
        guard !targets.isEmpty else {
            fatal(ErrorFields(severity: "FATAL", sqlState: "08001", message: "pgchorus has no online backend"))
            return
        }
        phase = .connectingBackends
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        var backendStartup = BackendLogin.startupMessage(for: startup)
        if tracker.deterministic {
            // The session's seed and a first stamp, the same on each of its backends (`DeterministicValues`).
            backendStartup.parameters += [(DeterministicValues.seedSetting, DeterministicValues.newSeed()),
                                          (DeterministicValues.stampSetting, "0;\(WallClock.timestampLiteral())")]
        }
        let timeout = configuration.proxy.backendConnectTimeout
        startupTimer?.cancel()
        loginRound = LoginRound(backends: targets.count)
        startupTimer = context.eventLoop.scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
            let session = bound.value
            guard session.phase == .connectingBackends else { return }
            // A backend that has not finished its login in time is as good as unreachable.
            for i in session.backends.indices where session.loginRound.outcomes[i] == .pending {
                session.loginEnded(i, .unreachable("no answer within \(timeout) s (proxy.backend_connect_timeout) while logging in"))
            }
        }
        self.backendStartup = backendStartup
        for backend in targets { addBackend(backend) }
    }

    /// Adds `backend` to the session and opens its connection; the login, as the client's user with
    /// the session's start-up message (`backendStartup`), starts once it is connected.
    func addBackend(_ backend: Configuration.Backend) {
        guard let context, let backendStartup else { return }
        var rng = SystemRandomNumberGenerator()
        let nonce = Base64.encode((0..<18).map { _ in UInt8.random(in: 0...255, using: &rng) })
        let index = backends.count
        backends.append(BackendSession(backend: backend, login: BackendLogin(user: start.user, credential: start.credential, nonce: nonce)))
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let maxMessage = configuration.proxy.maxMessageSize
        let timeout = configuration.proxy.backendConnectTimeout
        ClientBootstrap(group: context.eventLoop)
            .connectTimeout(.milliseconds(Int64(timeout * 1000)))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        BackendRelayHandler(session: bound, index: index, maximumMessageSize: maxMessage,
                                            asksForTLS: backend.tls.mode != .disable))
                }
            }
            .connect(host: backend.host, port: backend.port)
            .whenComplete { result in
                let session = bound.value
                switch result {
                case let .success(channel):
                    session.backendConnected(index, channel, startup: backendStartup)
                case let .failure(error):
                    session.loginEnded(index, .unreachable("could not connect: \(error)"))
                }
            }
    }

    func backendConnected(_ index: Int, _ channel: Channel, startup: StartupMessage) {
        guard phase == .connectingBackends || takingIn?.contains(index) == true, backends[index].phase == .connecting else {
            channel.close(promise: nil)
            return
        }
        backends[index].channel = channel
        if backends[index].backend.tls.mode != .disable {
            // Asked first, as libpq does; the answer is one byte (`backendTLSAnswer`).
            backends[index].phase = .negotiatingTLS
            var request = ByteBuffer()
            StartupPhaseMessage.sslRequest(trailingBytes: false).encode(into: &request)
            backends[index].write(request)
        } else {
            sendStartup(index, startup)
        }
        flushBackend(index)
    }

    private func sendStartup(_ index: Int, _ startup: StartupMessage) {
        backends[index].phase = .loggingIn
        var bytes = ByteBuffer()
        startup.encode(into: &bytes)
        backends[index].write(bytes)
    }

    /// The backend's answer to the SSL request: 'S' starts TLS (checked as `sslmode` says) and the
    /// login goes on inside it; 'N' goes on in plaintext only under `prefer`.
    func backendTLSAnswer(_ index: Int, _ answer: UInt8) {
        guard index < backends.count, backends[index].phase == .negotiatingTLS, let channel = backends[index].channel,
              let startup = backendStartup else { return }
        let backend = backends[index].backend
        switch answer {
        case UInt8(ascii: "S"):
            guard let tls = shared.backendTLSContext(backend.id) else {
                loginEnded(index, .tlsRefused("no TLS settings loaded for this backend"))
                return
            }
            do {
                // A host name is checked against the certificate's names (verify-full) and sent as
                // SNI; an IP address is checked against its IP addresses.
                let name = IPAddressBytes(backend.host) == nil ? backend.host : nil
                try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: name), position: .first)
            } catch {
                loginEnded(index, .tlsRefused("\(error)"))
                return
            }
            sendStartup(index, startup)
        case UInt8(ascii: "N") where backend.tls.mode == .prefer:
            sendStartup(index, startup)
        case UInt8(ascii: "N"):
            loginEnded(index, .tlsRefused("the server does not accept TLS connections (ssl = off), and sslmode is \(backend.tls.mode.rawValue)"))
            return
        default:
            loginEnded(index, .unreachable("unexpected answer to the SSL request: \(WireError.printable(answer))"))
            return
        }
        flushBackend(index)
    }

    func backendLoginFrame(_ index: Int, _ frame: PostgresFrame) {
        let message: BackendMessage
        do {
            message = try BackendMessage(frame: frame)
        } catch {
            loginEnded(index, .unreachable("invalid message while logging in: \(error)"))
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
            loginEnded(index, .ready)
        case .backendError:
            // The backend's own words (e.g. 3D000 database does not exist) reach the client (all its
            // fields, in order) if every backend refuses; if others accept, this one is out of step.
            if case let .errorResponse(fields) = message {
                loginEnded(index, .refused(fields))
            } else {
                loginEnded(index, .unreachable("unexpected login reply"))
            }
        case let .fail(reason):
            logger.error("login to backend \(backends[index].backend.description) failed: \(reason)")
            loginEnded(index, .unreachable("\(reason)"))
        }
    }

    /// Records how one backend's login ended and, once every login has, runs the decision of
    /// `LoginRound`: relay with all that accepted (failing the rest cluster-wide), or refuse the client.
    func loginEnded(_ index: Int, _ outcome: LoginRound.Outcome) {
        if takingIn?.contains(index) == true {
            takeInEnded(index, outcome)
            return
        }
        guard phase == .connectingBackends, loginRound.outcomes.indices.contains(index),
              loginRound.outcomes[index] == .pending else { return }
        loginRound.record(index, outcome)
        if outcome != .ready {
            backends[index].phase = .closed
            backends[index].channel?.close(promise: nil)
        }
        switch loginRound.decision {
        case .wait:
            return
        case let .proceed(fail):
            if !fail.isEmpty, let fenced = shared.registry.fencedReason() {
                // Without quorum the backends that refused cannot be failed: no session without them.
                fatal(fencedError(fenced, detail: "backend \(fail.map { backends[$0].backend.id }.joined(separator: ", ")) refused the login and cannot be taken out of service"))
                return
            }
            for i in fail { failAtLogin(i) }
            sessionReadyIfComplete()
        case let .refuseClient(refused, fail):
            for i in fail { failAtLogin(i) }
            if case let .refused(fields) = loginRound.outcomes[refused] {
                if fields.sqlState == "53300", loginRound.outcomes.contains(.ready) {
                    logger.warning("backend \(backends[refused].backend.description) has no connection slot left for this session (\(fields.message ?? "53300")): the client is refused, no backend is failed (every session needs a connection on every backend: its max_connections bounds the cluster's)")
                }
                fatalForwarded = true
                fatal(fields)
            }
        case let .refuseClientTLS(index):
            let b = backends[index].backend
            guard case let .tlsRefused(why) = loginRound.outcomes[index] else { return }
            logger.error("TLS to backend \(b.description) failed: \(why)")
            fatal(ErrorFields(severity: "FATAL", sqlState: "08006",
                              message: "pgchorus could not connect to backend \(b.description) over TLS (sslmode \(b.tls.mode.rawValue)): \(why)",
                              hint: "Check the backend's certificate and the node's sslrootcert/sslmode; `pgchorus backends` shows what the health checks see."))
        case .noBackend:
            let why = loginRound.outcomes.indices.map { i -> String in
                if case let .unreachable(w) = loginRound.outcomes[i] { return "pgchorus could not log in to backend \(backends[i].backend.description): \(w)" }
                return "pgchorus could not log in to backend \(backends[i].backend.description)"
            }.joined(separator: "; ")
            logger.warning("no backend accepted the session: \(why)")
            fatal(ErrorFields(severity: "FATAL", sqlState: "08001", message: why))
        }
    }

    /// A backend that refused or missed a login others completed: failed cluster-wide, never skipped.
    private func failAtLogin(_ index: Int) {
        let reason = loginRound.reason(index)
        logger.error("backend failed at session start", metadata: ["backend": "\(backends[index].backend.id)", "reason": "\(reason)"])
        ProxyMetrics.backendsDropped.increment()
        shared.failBackendClusterWide(backends[index].backend.id, reason: reason)
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
        let key = shared.cancelRegistry.register(preferring: backends[lead].login.processID, using: &rng)
        virtualProcessID = key.processID
        virtualSecretKey = key.secretKey
        logger[metadataKey: "session"] = "\(virtualProcessID)"
        if let context {
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let loop = context.eventLoop
            shared.cancelRegistry.setCancelHandler({ delivered in
                loop.execute { bound.value.clientCancelRequested(delivered: delivered) }
            }, for: virtualProcessID)
        }
        writeClient(.authentication(.ok))
        for p in backends[lead].login.parameters { writeClient(.parameterStatus(name: p.name, value: p.value)) }
        writeClient(.backendKeyData(processID: virtualProcessID, secretKey: virtualSecretKey))
        writeClient(.readyForQuery(.idle))
        phase = .relaying
        flushClient()
        if let context, backends.count > 1 {
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let loop = context.eventLoop
            viewWatch = shared.viewBoard.add { loop.execute { bound.value.clusterViewChanged() } }
        }
        logger.debug("session ready", metadata: ["backends": "\(backends.filter(\.isLive).map(\.backend.id))"])
        ensureCommitLog()
        loadSequenceCatalogIfNeeded()
        let early = earlyFrames
        earlyFrames = []
        for f in early { handleRelayFrame(f) }
        forwardOpenGroup()
        flushBackends()
    }

    /// What a CancelRequest for this session's process on backend `index` needs.
    func cancelTarget(_ index: Int) -> CancelRegistry.Target {
        let b = backends[index]
        return CancelRegistry.Target(host: b.backend.host, port: b.backend.port, processID: b.login.processID, secretKey: b.login.secretKey)
    }
}
