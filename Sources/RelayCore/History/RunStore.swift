import Foundation

/// Where runs, archives and alarms are recorded: the embedded SQLite history of one relay
/// (`HistoryStore`) or the PostgreSQL database a fleet of relays shares (`PostgresStore`,
/// in RelayDaemon). Both apply the same migrations (`StoreSchema`) and answer alike; the
/// store tests run the same cases against both.
public protocol RunStore: AnyObject, Sendable {
    /// The database, for messages (a path, or a URL without secrets).
    var location: String { get }

    func insert(_ record: RunRecord) throws(HistoryError)
    /// Records how a run ended; the report as it finally stands (see `HistoryStore.finish`).
    @discardableResult func finish(_ report: RunReport) throws(HistoryError) -> RunReport
    /// Runs left running or queued by an agent that is gone become interrupted; their ids.
    @discardableResult func markInterrupted(isAlive: @Sendable (RunRecord) -> Bool) throws(HistoryError) -> [String]
    func markStarted(_ id: String) throws(HistoryError)
    func markEnded(_ id: String, state: RunState, error: String?) throws(HistoryError)
    func get(_ id: String) throws(HistoryError) -> RunRecord?
    func expectedArchives(client: String) throws(HistoryError) -> [ArchiveRecord]
    func archiveRecords(client: String) throws(HistoryError) -> [ArchiveRecord]
    @discardableResult func recordPruned(client: String, runID: String, removed: [PresentArchive], at date: Date) throws(HistoryError) -> Int
    func lastFinished(client: String) throws(HistoryError) -> RunRecord?
    func lastQueued(client: String) throws(HistoryError) -> Date?
    @discardableResult func prune(keepPerClient: Int, maxAgeDays: Int, now: Date) throws(HistoryError) -> [String]
    func finishedRuns() throws(HistoryError) -> [RunRecord]
    func lastFinished(client: String, kind: RunKind) throws(HistoryError) -> RunRecord?
    func archiveCounts() throws(HistoryError) -> [String: Int]
    func recent(client: String?, limit: Int) throws(HistoryError) -> [RunRecord]
    func runs(kind: RunKind, since: Date, client: String?) throws(HistoryError) -> [RunRecord]
}

extension RunStore {
    @discardableResult public func markInterrupted() throws(HistoryError) -> [String] {
        try markInterrupted(isAlive: HistoryStore.agentAlive)
    }

    @discardableResult
    public func recordPruned(client: String, runID: String, removed: [PresentArchive]) throws(HistoryError) -> Int {
        try recordPruned(client: client, runID: runID, removed: removed, at: Date())
    }

    @discardableResult public func prune(keepPerClient: Int, maxAgeDays: Int) throws(HistoryError) -> [String] {
        try prune(keepPerClient: keepPerClient, maxAgeDays: maxAgeDays, now: Date())
    }

    /// The newest 50 runs of `client`.
    public func recent(client: String) throws(HistoryError) -> [RunRecord] {
        try recent(client: client, limit: 50)
    }

    /// The newest runs of the whole fleet.
    public func recent(limit: Int = 50) throws(HistoryError) -> [RunRecord] {
        try recent(client: nil, limit: limit)
    }

    public func runs(kind: RunKind, since: Date) throws(HistoryError) -> [RunRecord] {
        try runs(kind: kind, since: since, client: nil)
    }
}

extension RunReport {
    /// The report once its archive row was written and read back (`recordedID`: the id the
    /// store returned, nil when the row has none): the backup's proof is judged again with
    /// what was read. Shared by both stores.
    public func recorded(archiveID recordedID: String?) -> RunReport {
        var final = self
        guard var proof = backupProof else { return final }
        proof.recording = recordedID.map { .recorded(id: $0) } ?? .failed("the archive row has no id")
        final.backupProof = proof
        final.warnings.removeAll { $0.hasPrefix("borg create finished with warnings") }
        final.apply(proof.verdict)
        return final
    }

    /// The attempts as the history stores them (JSON), nil when there were none.
    public var attemptsJSON: String? {
        attempts.isEmpty ? nil : (try? JSONCoding.encoder().encode(attempts)).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The archive's figures as the history stores them (JSON).
    public var statsJSON: String? {
        archive.flatMap { a in (try? JSONEncoder().encode(a)).map { String(decoding: $0, as: UTF8.self) } }
    }

    /// What the history keeps as the run's error: a warning run keeps borg's warning.
    public var recordedError: String? {
        error ?? (state == .warning ? warnings.joined(separator: "; ") : nil)
    }
}
