/// A metadata value of a GGUF file. Arrays may nest.
public indirect enum GGUFValue: Sendable, Equatable, CustomStringConvertible {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool)
    case string(String)
    case array([GGUFValue])

    /// The value as an integer, if it is one of the integer types.
    public var intValue: Int? {
        switch self {
        case let .uint8(v): Int(v)
        case let .int8(v): Int(v)
        case let .uint16(v): Int(v)
        case let .int16(v): Int(v)
        case let .uint32(v): Int(v)
        case let .int32(v): Int(v)
        case let .uint64(v): Int(exactly: v)
        case let .int64(v): Int(exactly: v)
        default: nil
        }
    }

    /// The value as a float, if it is numeric.
    public var floatValue: Float? {
        switch self {
        case let .float32(v): v
        case let .float64(v): Float(v)
        default: intValue.map(Float.init)
        }
    }

    public var stringValue: String? {
        if case let .string(s) = self { return s }
        return nil
    }

    public var boolValue: Bool? {
        if case let .bool(b) = self { return b }
        return nil
    }

    public var arrayValue: [GGUFValue]? {
        if case let .array(a) = self { return a }
        return nil
    }

    public var description: String {
        switch self {
        case let .string(s): return "\"\(s)\""
        case let .bool(b): return String(b)
        case let .float32(v): return String(v)
        case let .float64(v): return String(v)
        case let .array(a):
            let shown = a.prefix(6).map(\.description).joined(separator: ", ")
            return a.count > 6 ? "[\(shown), … (\(a.count) items)]" : "[\(shown)]"
        default: return intValue.map(String.init) ?? "?"
        }
    }
}
