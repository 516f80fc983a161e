import Foundation

/// A borg command that runs on R itself (init, list, info, key export, prune, compact,
/// check): its repository connection goes through `relay-agent connect` to a private
/// unix socket of this run (in a fresh 0700 directory, removed afterwards), which is
/// spliced into a channel on B opened with the client's key, or with the server's
/// `maintenance_key` for operations that rewrite the repository.
public struct LocalBorgPlan: Sendable, Equatable {
    /// What the run is, for the history and messages: init, list, info, key-export, …
    public var kind: RunKind
    /// borg's arguments after the program name; `LocalBorgPlan.repository` stands for the
    /// repository URL and `LocalBorgPlan.repository + "::NAME"` for an archive.
    public var arguments: [String]
    /// Open B's channel with the server's maintenance key (not append-only).
    public var maintenance: Bool
    /// More environment for borg on R (the state repository's BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK).
    public var environment: [String: String] = [:]

    public static let repository = "ssh://borg-relay"

    public init(kind: RunKind, arguments: [String], maintenance: Bool) {
        self.kind = kind
        self.arguments = arguments
        self.maintenance = maintenance
    }

    /// The URL borg uses for a client's repository (the same on R as on T).
    public static func url(_ client: ClientConfig) -> String { repository + client.repository }
}
