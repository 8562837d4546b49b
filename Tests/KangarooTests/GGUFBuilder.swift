import Foundation
import ModelFormats

/// Writes small GGUF files for tests: metadata of every value type and raw tensor bytes.
struct GGUFBuilder {
    enum Value {
        case u8(UInt8), i8(Int8), u16(UInt16), i16(Int16), u32(UInt32), i32(Int32), f32(Float), bool(Bool)
        case string(String), array(elementType: UInt32, [Value]), u64(UInt64), i64(Int64), f64(Double)

        var typeID: UInt32 {
            switch self {
            case .u8: 0
            case .i8: 1
            case .u16: 2
            case .i16: 3
            case .u32: 4
            case .i32: 5
            case .f32: 6
            case .bool: 7
            case .string: 8
            case .array: 9
            case .u64: 10
            case .i64: 11
            case .f64: 12
            }
        }
    }

    struct Tensor {
        var name: String
        var shape: [UInt64]
        var type: UInt32
        var data: [UInt8]
    }

    var version: UInt32 = 3
    var metadata: [(String, Value)] = []
    var tensors: [Tensor] = []
    var alignment = 32

    mutating func add(_ key: String, _ value: Value) { metadata.append((key, value)) }

    mutating func addTensor(_ name: String, shape: [Int], type: UInt32, data: [UInt8]) {
        tensors.append(Tensor(name: name, shape: shape.map(UInt64.init), type: type, data: data))
    }

    mutating func addFloatTensor(_ name: String, shape: [Int], values: [Float]) {
        precondition(values.count == shape.reduce(1, *))
        addTensor(name, shape: shape, type: 0, data: values.withUnsafeBytes { Array($0) })
    }

    func bytes() -> [UInt8] {
        var out: [UInt8] = []
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func putString(_ s: String) {
            put(UInt64(s.utf8.count))
            out += Array(s.utf8)
        }
        func putValue(_ v: Value) {
            switch v {
            case let .u8(x): put(x)
            case let .i8(x): put(x)
            case let .u16(x): put(x)
            case let .i16(x): put(x)
            case let .u32(x): put(x)
            case let .i32(x): put(x)
            case let .f32(x): put(x.bitPattern)
            case let .bool(x): put(UInt8(x ? 1 : 0))
            case let .string(s): putString(s)
            case let .array(elementType, items):
                put(elementType)
                put(UInt64(items.count))
                items.forEach(putValue)
            case let .u64(x): put(x)
            case let .i64(x): put(x)
            case let .f64(x): put(x.bitPattern)
            }
        }
        put(UInt32(0x4655_4747))
        put(version)
        put(UInt64(tensors.count))
        put(UInt64(metadata.count))
        for (key, value) in metadata {
            putString(key)
            put(value.typeID)
            putValue(value)
        }
        var offsets: [Int] = []
        var offset = 0
        for tensor in tensors {
            offsets.append(offset)
            offset += (tensor.data.count + alignment - 1) / alignment * alignment
        }
        for (tensor, offset) in zip(tensors, offsets) {
            putString(tensor.name)
            put(UInt32(tensor.shape.count))
            tensor.shape.forEach { put($0) }
            put(tensor.type)
            put(UInt64(offset))
        }
        while out.count % alignment != 0 { out.append(0) }
        for (i, tensor) in tensors.enumerated() {
            out += tensor.data
            // No padding after the last tensor, so that cutting any byte cuts into data.
            while i < tensors.count - 1 && out.count % alignment != 0 { out.append(0) }
        }
        return out
    }

    /// Writes the file to a fresh temporary path and returns it.
    func write(_ bytes: [UInt8]? = nil) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kangaroo-test-\(UUID().uuidString).gguf").path
        try Data(bytes ?? self.bytes()).write(to: URL(fileURLWithPath: path))
        return path
    }
}
