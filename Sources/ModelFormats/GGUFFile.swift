import Tensor

/// A tensor described in a GGUF file's header.
public struct GGUFTensorInfo: Sendable {
    public let name: String
    public let type: QuantType
    /// Dimensions in GGML order: `shape[0]` is the contiguous (innermost) one.
    public let shape: [Int]
    /// Absolute byte offset of the tensor's data in the file.
    public let offset: Int
    public let byteCount: Int

    public var elementCount: Int { shape.reduce(1, *) }
}

/// A parsed GGUF file (versions 2 and 3): metadata, tensor table, and the memory-mapped tensor data.
///
/// Every count and offset read from the file is checked against the file's size before it is used,
/// so a truncated or corrupt file is reported as an error and never causes a crash or a huge allocation.
public final class GGUFFile: @unchecked Sendable {
    public let file: MappedFile
    public let version: UInt32
    /// Metadata in file order.
    public let metadataKeys: [String]
    public let metadata: [String: GGUFValue]
    public let tensors: [GGUFTensorInfo]
    private let tensorIndex: [String: Int]
    public var path: String { file.path }

    public convenience init(path: String) throws(ModelFileError) {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws(ModelFileError) {
        self.file = file
        var reader = ByteReader(bytes: file.bytes, path: file.path)
        guard file.bytes.count >= 4, try reader.read(UInt32.self, "magic") == 0x4655_4747 else {
            throw .notGGUF(path: file.path)
        }
        version = try reader.read(UInt32.self, "version")
        guard version == 2 || version == 3 else { throw .unsupportedVersion(path: file.path, version: version) }
        let tensorCount = try reader.read(UInt64.self, "tensor count")
        let metadataCount = try reader.read(UInt64.self, "metadata count")
        // A metadata pair takes at least 12 bytes (key length + value type), a tensor entry at least 24.
        try reader.checkCount(metadataCount, minimumBytesEach: 12, what: "metadata")
        try reader.checkCount(tensorCount, minimumBytesEach: 24, what: "tensor")

        var keys: [String] = []
        var values: [String: GGUFValue] = [:]
        for _ in 0..<metadataCount {
            let key = try reader.readString("metadata key", strict: true)
            guard values[key] == nil else { throw .duplicate(path: file.path, what: "metadata key '\(key)'") }
            let type = try reader.read(UInt32.self, "type of '\(key)'")
            values[key] = try reader.readValue(type: type, key: key, depth: 0)
            keys.append(key)
        }
        metadataKeys = keys
        metadata = values

        var alignment = 32
        if let value = values["general.alignment"] {
            guard let a = value.intValue, a > 0, a <= 1 << 20, a & (a - 1) == 0 else {
                throw .invalidMetadata(path: file.path, key: "general.alignment", reason: "must be a power of two, is \(value)")
            }
            alignment = a
        }

        struct Raw { let name: String; let type: QuantType; let shape: [Int]; let relativeOffset: UInt64 }
        var raws: [Raw] = []
        var index: [String: Int] = [:]
        for _ in 0..<tensorCount {
            let name = try reader.readString("tensor name", strict: true)
            let dimensionCount = try reader.read(UInt32.self, "dimension count of '\(name)'")
            guard (1...4).contains(dimensionCount) else {
                throw .invalidTensor(path: file.path, tensor: name, reason: "has \(dimensionCount) dimensions (1 to 4 allowed)")
            }
            var shape: [Int] = []
            for _ in 0..<dimensionCount {
                let d = try reader.read(UInt64.self, "dimension of '\(name)'")
                guard d > 0, d < 1 << 40 else {
                    throw .invalidTensor(path: file.path, tensor: name, reason: "has an impossible dimension \(d)")
                }
                shape.append(Int(d))
            }
            let typeID = try reader.read(UInt32.self, "type of '\(name)'")
            guard let type = QuantType(rawValue: typeID) else {
                throw .unsupportedTensorType(path: file.path, tensor: name, type: typeID)
            }
            let offset = try reader.read(UInt64.self, "offset of '\(name)'")
            guard index[name] == nil else { throw .duplicate(path: file.path, what: "tensor '\(name)'") }
            index[name] = raws.count
            raws.append(Raw(name: name, type: type, shape: shape, relativeOffset: offset))
        }

        let dataStart = (reader.offset + alignment - 1) / alignment * alignment
        let fileSize = file.bytes.count
        var infos: [GGUFTensorInfo] = []
        infos.reserveCapacity(raws.count)
        for raw in raws {
            var elements = 1
            for d in raw.shape {
                let (product, overflow) = elements.multipliedReportingOverflow(by: d)
                guard !overflow else { throw .invalidTensor(path: file.path, tensor: raw.name, reason: "has too many elements") }
                elements = product
            }
            guard raw.shape[0] % raw.type.blockSize == 0, let bytes = raw.type.byteCount(elements: elements) else {
                throw .invalidTensor(path: file.path, tensor: raw.name,
                                     reason: "has a row length \(raw.shape[0]) that is not a multiple of the \(raw.type) block size \(raw.type.blockSize)")
            }
            guard raw.relativeOffset % UInt64(alignment) == 0 else {
                throw .invalidTensor(path: file.path, tensor: raw.name, reason: "is not aligned to \(alignment) bytes")
            }
            guard raw.relativeOffset <= UInt64(fileSize), dataStart + Int(raw.relativeOffset) <= fileSize,
                  bytes <= fileSize - dataStart - Int(raw.relativeOffset) else {
                throw .invalidTensor(path: file.path, tensor: raw.name,
                                     reason: "data (\(bytes) bytes at offset \(raw.relativeOffset)) lies past the end of the file (\(fileSize) bytes); the file is truncated or corrupt")
            }
            infos.append(GGUFTensorInfo(name: raw.name, type: raw.type, shape: raw.shape,
                                        offset: dataStart + Int(raw.relativeOffset), byteCount: bytes))
        }
        // Each tensor has bytes of its own: overlapping data is a corrupt (or crafted) file.
        let byOffset = infos.sorted { $0.offset < $1.offset }
        for (previous, next) in zip(byOffset, byOffset.dropFirst()) where next.offset < previous.offset + previous.byteCount {
            throw .invalidTensor(path: file.path, tensor: next.name, reason: "overlaps the data of tensor '\(previous.name)'")
        }
        tensors = infos
        tensorIndex = index
    }

    /// A fingerprint of the model file: FNV-1a (64-bit) over the header (metadata and tensor table)
    /// and the file size. Cheap to compute, and it tells model files apart.
    public var fingerprint: String {
        let headerEnd = tensors.map(\.offset).min() ?? file.bytes.count
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in file.bytes[0..<headerEnd] {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        hash = (hash ^ UInt64(file.bytes.count)) &* 0x0000_0100_0000_01B3
        return String(hash, radix: 16)
    }

    public func tensor(_ name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    public func data(of tensor: GGUFTensorInfo) -> UnsafeRawPointer {
        file.bytes.baseAddress! + tensor.offset
    }

    // MARK: Typed metadata access with clear errors

    public func requiredInt(_ key: String) throws(ModelFileError) -> Int {
        guard let value = metadata[key] else { throw .missingMetadata(path: path, key: key) }
        guard let int = value.intValue else { throw .invalidMetadata(path: path, key: key, reason: "should be an integer, is \(value)") }
        return int
    }

    public func optionalFloat(_ key: String) throws(ModelFileError) -> Float? {
        guard let value = metadata[key] else { return nil }
        guard let float = value.floatValue else { throw .invalidMetadata(path: path, key: key, reason: "should be a number, is \(value)") }
        return float
    }

    public func optionalString(_ key: String) throws(ModelFileError) -> String? {
        guard let value = metadata[key] else { return nil }
        guard let string = value.stringValue else { throw .invalidMetadata(path: path, key: key, reason: "should be a string") }
        return string
    }

    public func requiredString(_ key: String) throws(ModelFileError) -> String {
        guard let string = try optionalString(key) else { throw .missingMetadata(path: path, key: key) }
        return string
    }

    /// Loads a 2-D tensor as a matrix of `shape[1]` rows by `shape[0]` columns, checking its shape.
    public func matrix(_ name: String, rows: Int, columns: Int) throws(ModelFileError) -> WeightMatrix {
        guard let info = tensor(name) else { throw .missingTensor(path: path, tensor: name) }
        guard info.shape == [columns, rows] else {
            throw .invalidTensor(path: path, tensor: name, reason: "has shape \(info.shape), expected [\(columns), \(rows)]")
        }
        return WeightMatrix(type: info.type, rows: rows, columns: columns, data: data(of: info))
    }

    /// Copies a 1-D tensor of `count` elements out as floats (norm weights).
    public func vector(_ name: String, count: Int) throws(ModelFileError) -> [Float] {
        guard let info = tensor(name) else { throw .missingTensor(path: path, tensor: name) }
        guard info.shape == [count] else {
            throw .invalidTensor(path: path, tensor: name, reason: "has shape \(info.shape), expected [\(count)]")
        }
        let source = data(of: info)
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            dequantize(info.type, source, into: buffer.baseAddress!, count: count)
            initialized = count
        }
    }
}

/// Bounds-checked little-endian reading of the GGUF header.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var offset = 0

    var remaining: Int { bytes.count - offset }

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws(ModelFileError) -> T {
        guard remaining >= MemoryLayout<T>.size else { throw .truncated(path: path, what: what(), offset: offset) }
        let value = T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        offset += MemoryLayout<T>.size
        return value
    }

    func checkCount(_ count: UInt64, minimumBytesEach: Int, what: String) throws(ModelFileError) {
        guard count <= UInt64(remaining / minimumBytesEach) else {
            throw .absurdCount(path: path, what: what, count: count)
        }
    }

    mutating func readString(_ what: @autoclosure () -> String, strict: Bool) throws(ModelFileError) -> String {
        let length = try read(UInt64.self, what())
        guard length <= UInt64(remaining) else { throw .truncated(path: path, what: what(), offset: offset) }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + Int(length)])
        offset += Int(length)
        if strict {
            guard let string = String(validating: slice, as: UTF8.self) else { throw .invalidText(path: path, what: what()) }
            return string
        }
        return String(decoding: slice, as: UTF8.self)
    }

    mutating func readValue(type: UInt32, key: String, depth: Int) throws(ModelFileError) -> GGUFValue {
        let what = "value of '\(key)'"
        switch type {
        case 0: return .uint8(try read(UInt8.self, what))
        case 1: return .int8(try read(Int8.self, what))
        case 2: return .uint16(try read(UInt16.self, what))
        case 3: return .int16(try read(Int16.self, what))
        case 4: return .uint32(try read(UInt32.self, what))
        case 5: return .int32(try read(Int32.self, what))
        case 6: return .float32(Float(bitPattern: try read(UInt32.self, what)))
        case 7:
            let byte = try read(UInt8.self, what)
            guard byte <= 1 else { throw .invalidMetadata(path: path, key: key, reason: "is a boolean with value \(byte)") }
            return .bool(byte == 1)
        case 8: return .string(try readString(what, strict: false))
        case 9:
            guard depth < 8 else { throw .invalidMetadata(path: path, key: key, reason: "nests arrays too deeply") }
            let elementType = try read(UInt32.self, what)
            let count = try read(UInt64.self, what)
            try checkCount(count, minimumBytesEach: Self.minimumSize(of: elementType), what: "array '\(key)'")
            var elements: [GGUFValue] = []
            elements.reserveCapacity(Int(count))
            for _ in 0..<count {
                elements.append(try readValue(type: elementType, key: key, depth: depth + 1))
            }
            return .array(elements)
        case 10: return .uint64(try read(UInt64.self, what))
        case 11: return .int64(try read(Int64.self, what))
        case 12: return .float64(Double(bitPattern: try read(UInt64.self, what)))
        default: throw .invalidValueType(path: path, key: key, type: type)
        }
    }

    static func minimumSize(of type: UInt32) -> Int {
        switch type {
        case 0, 1, 7: 1
        case 2, 3: 2
        case 4, 5, 6: 4
        case 8, 10, 11, 12: 8
        case 9: 12
        default: 1  // rejected when the first element is read
        }
    }
}
