/// A system call of the agent's own (a pipe, a socket, a child process) failed: what was
/// being done, and why.
public struct SystemError: Error, CustomStringConvertible, Equatable, Sendable {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
