import Foundation

/// Reading and writing the safetensors format: an 8-byte little-endian header length, a JSON header
/// `{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {…}}`, then the data.
public enum SafeTensors {
    public enum DType: String, Sendable {
        case f32 = "F32", f16 = "F16", bf16 = "BF16", i32 = "I32", i8 = "I8"

        var size: Int {
            switch self {
            case .f32, .i32: 4
            case .f16, .bf16: 2
            case .i8: 1
            }
        }
    }

    public struct Tensor: Sendable {
        public var dtype: DType
        public var shape: [Int]
        public var data: [UInt8]

        public init(dtype: DType, shape: [Int], data: [UInt8]) {
            self.dtype = dtype
            self.shape = shape
            self.data = data
        }

        public init(floats: [Float], shape: [Int]) {
            self.init(dtype: .f32, shape: shape, data: floats.withUnsafeBytes { Array($0) })
        }

        public init(ints: [Int32], shape: [Int]) {
            self.init(dtype: .i32, shape: shape, data: ints.withUnsafeBytes { Array($0) })
        }

        /// The values as floats (F32, F16 or BF16).
        public func floats() -> [Float]? {
            switch dtype {
            case .f32: return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            case .f16: return data.withUnsafeBytes { $0.bindMemory(to: UInt16.self).map { Float(Float16(bitPattern: $0)) } }
            case .bf16: return data.withUnsafeBytes { $0.bindMemory(to: UInt16.self).map { Float(bitPattern: UInt32($0) << 16) } }
            case .i32, .i8: return nil
            }
        }

        public func ints() -> [Int32]? {
            dtype == .i32 ? data.withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) } : nil
        }

        public func int8s() -> [Int8]? {
            dtype == .i8 ? data.map { Int8(bitPattern: $0) } : nil
        }
    }

    public struct File: Sendable {
        public var tensors: [String: Tensor]
        public var metadata: [String: String]

        public init(tensors: [String: Tensor], metadata: [String: String] = [:]) {
            self.tensors = tensors
            self.metadata = metadata
        }
    }

    public enum Error: Swift.Error, CustomStringConvertible {
        case corrupt(path: String, reason: String)

        public var description: String {
            switch self {
            case let .corrupt(path, reason): "\(path) is not a valid safetensors file: \(reason)"
            }
        }
    }

    public static func read(path: String) throws -> File {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Error.corrupt(path: path, reason: "cannot be read")
        }
        func fail(_ reason: String) -> Error { .corrupt(path: path, reason: reason) }
        guard data.count >= 8 else { throw fail("shorter than its header length") }
        let headerLength = data.prefix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard headerLength <= UInt64(data.count - 8), headerLength <= 100_000_000 else { throw fail("header length \(headerLength) is past the end") }
        let headerEnd = 8 + Int(headerLength)
        guard let header = try? JSONSerialization.jsonObject(with: data[8..<headerEnd]) as? [String: Any] else {
            throw fail("the header is not a JSON object")
        }
        var file = File(tensors: [:])
        for (name, value) in header {
            if name == "__metadata__" {
                file.metadata = value as? [String: String] ?? [:]
                continue
            }
            guard let entry = value as? [String: Any], let dtypeName = entry["dtype"] as? String,
                  let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2 else {
                throw fail("tensor '\(name)' has a malformed entry")
            }
            guard let dtype = DType(rawValue: dtypeName) else { throw fail("tensor '\(name)' has unsupported dtype \(dtypeName)") }
            guard shape.allSatisfy({ $0 >= 0 && $0 < 1 << 31 }) else { throw fail("tensor '\(name)' has an impossible shape") }
            let (begin, end) = (offsets[0], offsets[1])
            var expected = dtype.size
            for d in shape {
                let (product, overflow) = expected.multipliedReportingOverflow(by: d)
                guard !overflow else { throw fail("tensor '\(name)' has an impossible shape") }
                expected = product
            }
            guard begin >= 0, end >= begin, end - begin == expected, end <= data.count - headerEnd else {
                throw fail("tensor '\(name)' data [\(begin), \(end)) does not fit its shape or the file")
            }
            file.tensors[name] = Tensor(dtype: dtype, shape: shape, data: Array(data[(headerEnd + begin)..<(headerEnd + end)]))
        }
        return file
    }

    public static func write(_ file: File, to path: String) throws {
        var header: [String: Any] = [:]
        var offset = 0
        let names = file.tensors.keys.sorted()
        for name in names {
            let tensor = file.tensors[name]!
            header[name] = ["dtype": tensor.dtype.rawValue, "shape": tensor.shape, "data_offsets": [offset, offset + tensor.data.count]]
            offset += tensor.data.count
        }
        if !file.metadata.isEmpty { header["__metadata__"] = file.metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (8 + json.count) % 8 != 0 { json.append(UInt8(ascii: " ")) }
        var out = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for name in names { out.append(contentsOf: file.tensors[name]!.data) }
        try out.write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
