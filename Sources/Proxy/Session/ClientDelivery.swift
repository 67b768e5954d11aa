import Wire

/// Which of the lead's replies reach the client, and how far the client's view has got (**pure**).
/// The client sees one backend's replies, the lead's. If the lead is lost, a new lead answers the
/// cycles the client has not finished; that is invisible to the client only while it has received
/// nothing of such a cycle but acknowledgements, which every backend sends alike (the new lead's
/// repeats of those are skipped). Once other bytes of a reply went out (`deliveringBytes`), another
/// backend's reply cannot be spliced onto them: losing the lead then ends the session (`BackendLoss`).
struct ClientDelivery {
    /// The highest cycle whose replies have all reached the client.
    private(set) var deliveredThrough = 0
    /// Bytes of the cycle after `deliveredThrough` other than acknowledgements, notices and
    /// parameter changes went to the client.
    private(set) var deliveringBytes = false
    /// Acknowledgements of that cycle forwarded, and how many a new lead must not repeat.
    private(set) var acknowledgementsDelivered = 0
    private(set) var acknowledgementsToSkip = 0

    /// What to do with one of the lead's messages of a client cycle.
    enum Action: Equatable {
        case forward
        /// Not for the client: a new lead's repeat of an acknowledgement, a reply to a cycle the client
        /// has complete, a ReadyForQuery the vote answers.
        case drop
        /// The ReadyForQuery of an autocommit write outside the vote: kept until every backend has done it.
        case holdUntilAll
        /// The node's own cancel of the statement (commit epochs): the client gets a serialization
        /// failure (40001) instead of the 57014.
        case serializationFailure
    }

    /// Replies that only acknowledge a message and are the same from every backend in step.
    /// CopyInResponse too (the table's column count and formats): a lead lost while the client streams
    /// a COPY FROM STDIN is replaced by a follower already in that COPY, which answers it at its end.
    /// (A switch: asked for every backend message, where a Set lookup hashes.)
    static func isAcknowledgement(_ type: UInt8) -> Bool {
        switch type {
        case BackendMessage.Kind.parseComplete.rawValue, BackendMessage.Kind.bindComplete.rawValue,
             BackendMessage.Kind.closeComplete.rawValue, BackendMessage.Kind.noData.rawValue,
             BackendMessage.Kind.parameterDescription.rawValue, BackendMessage.Kind.rowDescription.rawValue,
             BackendMessage.Kind.copyInResponse.rawValue:
            return true
        default:
            return false
        }
    }

    /// Messages that do not tie the client to one backend's reply.
    static func isIncidental(_ type: UInt8) -> Bool {
        type == BackendMessage.Kind.noticeResponse.rawValue || type == BackendMessage.Kind.parameterStatus.rawValue
    }

    /// Whether cycle `seq` is still to reach the client.
    func owes(_ seq: Int) -> Bool { seq > deliveredThrough }

    /// One message of type `type` of the lead's reply to client cycle `seq`. `holdReady`: the vote
    /// answers the client (an autocommit write in the vote); `answerWhenAll`: the cycle is answered
    /// once every backend has done it, when more than one is live (`replicated`); `ownCancel`: the
    /// message is the 57014 of the node's own cancel.
    mutating func leadMessage(_ type: UInt8, seq: Int, holdReady: Bool, answerWhenAll: Bool, replicated: Bool, ownCancel: Bool) -> Action {
        let ready = type == BackendMessage.Kind.readyForQuery.rawValue
        if holdReady && ready { return .drop }
        guard owes(seq) else { return .drop }
        if answerWhenAll && ready && replicated { return .holdUntilAll }
        if Self.isAcknowledgement(type), acknowledgementsToSkip > 0 {
            acknowledgementsToSkip -= 1
            return .drop
        }
        if ownCancel {
            deliveringBytes = true
            return .serializationFailure
        }
        if Self.isAcknowledgement(type) {
            acknowledgementsDelivered += 1
        } else if !Self.isIncidental(type) {
            deliveringBytes = true
        }
        return .forward
    }

    /// One message of a read sent to one backend alone (`fromLead`: that backend is the lead); true
    /// when it goes to the client. Notifications come from the lead only.
    mutating func routedMessage(_ type: UInt8, seq: Int, fromLead: Bool) -> Bool {
        guard owes(seq) else { return false }
        if !fromLead && type == BackendMessage.Kind.notificationResponse.rawValue { return false }
        if !Self.isAcknowledgement(type) && !Self.isIncidental(type) { deliveringBytes = true }
        return true
    }

    /// The client has the whole reply of cycle `seq` (or all it will get of it).
    mutating func delivered(_ seq: Int) {
        deliveredThrough = seq
        deliveringBytes = false
        acknowledgementsDelivered = 0
        acknowledgementsToSkip = 0
    }

    /// A new lead answers the cycles not delivered: the acknowledgements the client has are not repeated.
    mutating func leadReplaced() {
        acknowledgementsToSkip = acknowledgementsDelivered
    }
}
