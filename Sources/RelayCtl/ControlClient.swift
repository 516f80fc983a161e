import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
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

/// The control API over the agent's unix socket.
final class ControlClient: Sendable {
    let socketPath: String
    private let http: HTTPClient

    init(socketPath: String) throws(CtlError) {
        self.socketPath = socketPath
        switch UnixSocket.probe(socketPath) {
        case 0: break
        case ENOENT: throw .notRunning(path: socketPath, detail: "no socket")
        case ECONNREFUSED: throw .notRunning(path: socketPath, detail: "nobody listening")
        case EACCES, EPERM: throw .permissionDenied(path: socketPath)
        case let e: throw .transport(path: socketPath, detail: String(cString: strerror(e)))
        }
        http = HTTPClient(eventLoopGroupProvider: .singleton)
    }

    func close() async {
        try? await http.shutdown()
    }

    /// A raw chunk of a run's output: the bytes, where the next starts, whether it was the last.
    func rawOutput(run: String, offset: Int) async throws(CtlError) -> (bytes: [UInt8], next: Int, complete: Bool) {
        guard let url = URL(httpURLWithSocketPath: socketPath, uri: ControlAPI.prefix + "/runs/\(run)/output/raw?offset=\(offset)") else {
            throw .transport(path: socketPath, detail: "the socket path cannot be used in a URL")
        }
        let request = HTTPClientRequest(url: url.absoluteString)
        do {
            let response = try await http.execute(request, timeout: .seconds(60))
            let buffer = try await response.body.collect(upTo: ControlAPI.maxRawChunk + 65536)
            guard response.status.code == 200 else {
                let data = Data(buffer.readableBytesView)
                if let e = try? ControlAPI.decoder().decode(APIErrorBody.self, from: data) {
                    throw CtlError.refused(status: Int(response.status.code), body: e)
                }
                throw CtlError.badResponse("HTTP \(response.status.code)")
            }
            let next = response.headers.first(name: ControlAPI.nextOffsetHeader).flatMap(Int.init) ?? offset
            let complete = response.headers.first(name: ControlAPI.completeHeader) == "1"
            return ([UInt8](buffer.readableBytesView), next, complete)
        } catch let e as CtlError {
            throw e
        } catch {
            throw .transport(path: socketPath, detail: "\(error)")
        }
    }

    func get<T: Decodable>(_ path: String, as: T.Type = T.self) async throws(CtlError) -> T {
        try await call(.GET, path, body: Optional<RunRequest>.none)
    }

    func post<T: Decodable, B: Encodable>(_ path: String, body: B?, as: T.Type = T.self) async throws(CtlError) -> T {
        try await call(.POST, path, body: body)
    }

    private func call<T: Decodable, B: Encodable>(_ method: HTTPMethod, _ path: String, body: B?) async throws(CtlError) -> T {
        guard let url = URL(httpURLWithSocketPath: socketPath, uri: ControlAPI.prefix + path) else {
            throw .transport(path: socketPath, detail: "the socket path cannot be used in a URL")
        }
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = method
        if let body {
            do {
                let data = try ControlAPI.encoder().encode(body)
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(ByteBuffer(bytes: data))
            } catch {
                throw .badResponse("encoding the request: \(error)")
            }
        }
        let status: Int
        let data: Data
        do {
            let response = try await http.execute(request, timeout: .seconds(60))
            status = Int(response.status.code)
            let buffer = try await response.body.collect(upTo: 8 * 1024 * 1024)
            data = Data(buffer.readableBytesView)
        } catch {
            throw .transport(path: socketPath, detail: "\(error)")
        }
        let decoder = ControlAPI.decoder()
        guard (200..<300).contains(status) else {
            if let e = try? decoder.decode(APIErrorBody.self, from: data) { throw .refused(status: status, body: e) }
            throw .refused(status: status, body: APIErrorBody(code: "http_\(status)", error: "HTTP \(status): \(String(decoding: data.prefix(300), as: UTF8.self))"))
        }
        do {
            return try decoder.decode(T.self, from: data)
        } catch {
            throw .badResponse("\(error)")
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
