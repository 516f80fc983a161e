import Foundation
import RelayCore

/// A run's files under `state_dir/logs/CLIENT/`: its log (`RUN.log`) and borg's stdout of
/// an operation (`RUN.out`), read in chunks by the control API.
enum RunFiles {
    /// Where borg's stdout of the run whose log is `logFile` goes.
    static func outputPath(_ logFile: String) -> String {
        (logFile.hasSuffix(".log") ? String(logFile.dropLast(4)) : logFile) + ".out"
    }

    /// Removes the output of the run whose log is `logFile`; its path if there was one.
    static func remove(outputOf logFile: String) -> String? {
        let path = outputPath(logFile)
        return unlink(path) == 0 ? path : nil
    }

    /// Up to `max` bytes of `path` from `offset` (nothing when it cannot be read).
    static func read(_ path: String?, offset: Int, max: Int) -> [UInt8] {
        guard let path, let fh = FileHandle(forReadingAtPath: path) else { return [] }
        defer { try? fh.close() }
        guard (try? fh.seek(toOffset: UInt64(offset))) != nil else { return [] }
        return [UInt8]((try? fh.read(upToCount: max)) ?? Data())
    }

    /// A chunk of text from `offset`: `complete` once the run has ended and all is read.
    /// While more may follow, a UTF-8 character is never split between two chunks.
    static func chunk(_ path: String?, runID: String, offset: Int, finished: Bool) -> LogChunk {
        var bytes = read(path, offset: offset, max: ControlAPI.maxLogChunk)
        let full = bytes.count == ControlAPI.maxLogChunk
        if full || !finished { bytes.removeLast(bytes.count - completeUTF8Length(bytes)) }
        return LogChunk(runID: runID, offset: offset, nextOffset: offset + bytes.count,
                        data: String(decoding: bytes, as: UTF8.self), complete: finished && !full)
    }

    /// A chunk of a log held in memory (a fleet's stored log of another relay's run).
    static func chunk(of all: [UInt8], runID: String, offset: Int, finished: Bool) -> LogChunk {
        let start = min(max(0, offset), all.count)
        var bytes = Array(all[start..<min(all.count, start + ControlAPI.maxLogChunk)])
        let full = bytes.count == ControlAPI.maxLogChunk
        if full || !finished { bytes.removeLast(bytes.count - completeUTF8Length(bytes)) }
        return LogChunk(runID: runID, offset: start, nextOffset: start + bytes.count,
                        data: String(decoding: bytes, as: UTF8.self), complete: finished && !full)
    }

    /// Raw bytes from `offset`: `complete` once the run has ended and all is read.
    static func raw(_ path: String?, offset: Int, finished: Bool) -> (bytes: [UInt8], next: Int, complete: Bool) {
        let bytes = read(path, offset: offset, max: ControlAPI.maxRawChunk)
        return (bytes, offset + bytes.count, finished && bytes.count < ControlAPI.maxRawChunk)
    }

    /// The length of the longest prefix of `bytes` that does not end inside a UTF-8 sequence.
    static func completeUTF8Length(_ bytes: [UInt8]) -> Int {
        var i = bytes.count
        while i > 0 && bytes.count - i < 4 {
            let b = bytes[i - 1]
            if b & 0xC0 == 0x80 { i -= 1; continue }
            let need = b < 0xC0 ? 1 : b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : 2
            return bytes.count - (i - 1) >= need ? bytes.count : i - 1
        }
        return bytes.count
    }
}
