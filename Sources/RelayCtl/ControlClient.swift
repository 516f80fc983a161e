import ArgumentParser
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import RelayCore

/// What can go wrong talking to the agent, each with what to do about it.
enum CtlError: Error, CustomStringConvertible {
    case notRunning(path: String, detail: String)
    case permissionDenied(path: String)
    case refused(status: Int, body: APIErrorBody)
    case transport(path: String, detail: String)
    case badResponse(String)

    var description: String {
        switch self {
        case .notRunning(let path, let detail):
            return "relay-agent is not running (\(detail) at \(path)); start it (`systemctl start relay-agent` or `relay-agent serve --config FILE`), or point --socket at its socket"
        case .permissionDenied(let path):
            return "permission denied on \(path): use root, the agent's user, or a member of the socket's group"
        case .refused(_, let body):
            return body.error
        case .transport(let path, let detail):
            return "talking to relay-agent on \(path) failed: \(detail)"
        case .badResponse(let detail):
            return "relay-agent sent an answer relayctl does not understand: \(detail)"
        }
    }

    /// Unknown clients or runs and malformed requests are usage errors (2); the rest 1.
    var exitCode: Int32 {
        if case .refused(let status, _) = self, status == 400 || status == 404 { return CLI.Exit.usage }
        return CLI.Exit.runFailed
    }
}

/// The control API over the agent's unix socket: one HTTP/1.1 exchange per connection
/// (`Connection: close`), through swift-nio's own HTTP/1.1 codec. relayctl only ever talks
/// to a local socket, so it carries no HTTP client with TLS, pooling or redirects: that
/// kept AsyncHTTPClient's TLS stack (BoringSSL) out of the binary (docs/development.md).
final class ControlClient: Sendable {
    let socketPath: String

    /// An answer: its status, headers and whole body.
    struct Response: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: [UInt8]
    }

    init(socketPath: String) throws(CtlError) {
        self.socketPath = socketPath
        switch UnixSocket.probe(socketPath) {
        case 0: break
        case ENOENT: throw .notRunning(path: socketPath, detail: "no socket")
        case ECONNREFUSED: throw .notRunning(path: socketPath, detail: "nobody listening")
        case EACCES, EPERM: throw .permissionDenied(path: socketPath)
        case let e: throw .transport(path: socketPath, detail: String(cString: strerror(e)))
        }
    }

    /// Nothing is held between requests; kept for the callers' symmetry.
    func close() async {}

    /// A raw chunk of a run's output: the bytes, where the next starts, whether it was the last.
    func rawOutput(run: String, offset: Int) async throws(CtlError) -> (bytes: [UInt8], next: Int, complete: Bool) {
        let response = try await exchange(.GET, ControlAPI.prefix + "/runs/\(run)/output/raw?offset=\(offset)",
                                          body: nil, limit: ControlAPI.maxRawChunk + 65536)
        guard response.status == 200 else {
            if let e = try? ControlAPI.decoder().decode(APIErrorBody.self, from: Data(response.body)) {
                throw .refused(status: response.status, body: e)
            }
            throw .badResponse("HTTP \(response.status)")
        }
        let next = response.headers.first(name: ControlAPI.nextOffsetHeader).flatMap(Int.init) ?? offset
        let complete = response.headers.first(name: ControlAPI.completeHeader) == "1"
        return (response.body, next, complete)
    }

    func get<T: Decodable>(_ path: String, as: T.Type = T.self) async throws(CtlError) -> T {
        try await call(.GET, path, body: Optional<RunRequest>.none)
    }

    func post<T: Decodable, B: Encodable>(_ path: String, body: B?, as: T.Type = T.self) async throws(CtlError) -> T {
        try await call(.POST, path, body: body)
    }

    private func call<T: Decodable, B: Encodable>(_ method: HTTPMethod, _ path: String, body: B?) async throws(CtlError) -> T {
        var encoded: [UInt8]?
        if let body {
            do {
                encoded = Array(try ControlAPI.encoder().encode(body))
            } catch {
                throw .badResponse("encoding the request: \(error)")
            }
        }
        let response = try await exchange(method, ControlAPI.prefix + path, body: encoded, limit: 8 * 1024 * 1024)
        let data = Data(response.body)
        let decoder = ControlAPI.decoder()
        guard (200..<300).contains(response.status) else {
            if let e = try? decoder.decode(APIErrorBody.self, from: data) { throw .refused(status: response.status, body: e) }
            throw .refused(status: response.status, body: APIErrorBody(code: "http_\(response.status)", error: "HTTP \(response.status): \(String(decoding: data.prefix(300), as: UTF8.self))"))
        }
        do {
            return try decoder.decode(T.self, from: data)
        } catch {
            throw .badResponse("\(error)")
        }
    }

    /// One request and its whole answer on a new connection. The answer must come within
    /// `timeout` and be at most `limit` bytes; otherwise the connection is closed and the
    /// error says which.
    func exchange(_ method: HTTPMethod, _ uri: String, body: [UInt8]?, limit: Int,
                  timeout: TimeAmount = .seconds(60)) async throws(CtlError) -> Response {
        let path = socketPath
        let timedOut = NIOLockedValueBox(false)
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(10))
                .connect(unixDomainSocketPath: path) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                    }
                }
            let deadline = channel.channel.eventLoop.scheduleTask(in: timeout) { [channel = channel.channel] in
                timedOut.withLockedValue { $0 = true }
                channel.close(promise: nil)
            }
            defer { deadline.cancel() }
            return try await channel.executeThenClose { inbound, outbound in
                var head = HTTPRequestHead(version: .http1_1, method: method, uri: uri)
                head.headers.add(name: "Host", value: "localhost")
                head.headers.add(name: "Connection", value: "close")
                if body != nil {
                    head.headers.add(name: "Content-Type", value: "application/json")
                }
                head.headers.add(name: "Content-Length", value: "\(body?.count ?? 0)")
                // The whole request in one write: with Content-Length 0 the agent may answer
                // and close as soon as it has the head, and a separate write of the end then
                // failed with "I/O on closed channel" (seen in CI under load).
                var parts: [HTTPClientRequestPart] = [.head(head)]
                if let body, !body.isEmpty { parts.append(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
                parts.append(.end(nil))
                do {
                    try await outbound.write(contentsOf: parts)
                } catch ChannelError.ioOnClosedChannel {
                    // Closed after it answered: the answer is read below.
                }

                var response: Response?
                for try await part in inbound {
                    switch part {
                    case .head(let h):
                        response = Response(status: Int(h.status.code), headers: h.headers, body: [])
                    case .body(let chunk):
                        guard response != nil else { continue }
                        guard response!.body.count + chunk.readableBytes <= limit else {
                            throw CtlError.badResponse("an answer larger than \(limit) bytes")
                        }
                        response!.body.append(contentsOf: chunk.readableBytesView)
                    case .end:
                        if let response { return response }
                    }
                }
                throw CtlError.transport(path: path, detail: "the agent closed the connection before it answered")
            }
        } catch let e as CtlError {
            if timedOut.withLockedValue({ $0 }) {
                throw .transport(path: path, detail: "no answer within \(timeout.nanoseconds / 1_000_000_000) s")
            }
            throw e
        } catch {
            if timedOut.withLockedValue({ $0 }) {
                throw .transport(path: path, detail: "no answer within \(timeout.nanoseconds / 1_000_000_000) s")
            }
            if let e = error as? HTTPParserError {
                if e == .invalidEOFState {
                    throw .transport(path: path, detail: "the connection closed in the middle of the answer")
                }
                throw .transport(path: path, detail: "the answer is not HTTP (\(e)): is this the agent's control socket?")
            }
            throw .transport(path: path, detail: "\(error)")
        }
    }
}

/// `--config` and `--socket`, shared by the commands that talk to the agent.
struct AgentOptions: ParsableArguments {
    @Option(name: .long, help: "The config file (for the socket path).")
    var config: String = RelayConfig.defaultPath

    @Option(name: .long, help: "The agent's control socket (default: [relay] socket of the config).")
    var socket: String?

    /// The socket path: --socket, else the config's, else the default (for users who may
    /// use the socket but not read the config).
    func socketPath() throws -> String {
        if let s = socket { return s }
        do {
            return try ConfigLoader.load(path: config, checkFiles: false).relay.socket
        } catch {
            if case .unreadableFile = error.kind, config == RelayConfig.defaultPath {
                return RelaySettings.defaultSocket
            }
            throw fail("\(error)", exit: CLI.Exit.usage)
        }
    }

    func connect() throws -> ControlClient {
        let path = try socketPath()
        do {
            return try ControlClient(socketPath: path)
        } catch {
            throw fail("\(error)", exit: error.exitCode)
        }
    }
}

/// Runs `body` with a client; API errors become a message and the contract's exit code.
func withAgent<T>(_ options: AgentOptions, _ body: (ControlClient) async throws -> T) async throws -> T {
    let client = try options.connect()
    do {
        let result = try await body(client)
        await client.close()
        return result
    } catch let e as CtlError {
        await client.close()
        throw fail("\(e)", exit: e.exitCode)
    } catch {
        await client.close()
        throw error
    }
}

/// relayctl's one way out on failure: `relayctl: MESSAGE` on stderr, and the exit code of
/// the contract (`CLI.Exit`: 1 a run or operation failed, 2 usage, config or agent) to throw.
func fail(_ message: String, exit: Int32) -> ExitCode {
    CLI.printError("relayctl: \(message)")
    return ExitCode(exit)
}
