import Foundation
import ModelFormats
import Tensor
import Testing

@Suite("GGUF reader")
struct GGUFReaderTests {
    static func sample(version: UInt32 = 3) -> GGUFBuilder {
        var b = GGUFBuilder()
        b.version = version
        b.add("general.architecture", .string("llama"))
        b.add("u8", .u8(200))
        b.add("i8", .i8(-5))
        b.add("u16", .u16(65000))
        b.add("i16", .i16(-30000))
        b.add("u32", .u32(4_000_000_000))
        b.add("i32", .i32(-2_000_000_000))
        b.add("f32", .f32(1.5))
        b.add("bool", .bool(true))
        b.add("u64", .u64(1 << 40))
        b.add("i64", .i64(-(1 << 40)))
        b.add("f64", .f64(-2.25))
        b.add("strings", .array(elementType: 8, [.string("a"), .string("ü")]))
        b.add("nested", .array(elementType: 9, [.array(elementType: 4, [.u32(1), .u32(2)]), .array(elementType: 4, [])]))
        b.addFloatTensor("vector", shape: [3], values: [1, 2, 3])
        b.addFloatTensor("matrix", shape: [2, 2], values: [1, 2, 3, 4])
        return b
    }

    @Test("reads every metadata type, nested arrays and the tensor table", arguments: [UInt32(2), 3])
    func readsEverything(version: UInt32) throws {
        let path = try Self.sample(version: version).write()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try GGUFFile(path: path)
        #expect(file.version == version)
        #expect(file.metadata["u8"] == .uint8(200))
        #expect(file.metadata["i8"] == .int8(-5))
        #expect(file.metadata["u16"] == .uint16(65000))
        #expect(file.metadata["i16"] == .int16(-30000))
        #expect(file.metadata["u32"] == .uint32(4_000_000_000))
        #expect(file.metadata["i32"] == .int32(-2_000_000_000))
        #expect(file.metadata["f32"] == .float32(1.5))
        #expect(file.metadata["bool"] == .bool(true))
        #expect(file.metadata["u64"]?.intValue == 1 << 40)
        #expect(file.metadata["i64"]?.intValue == -(1 << 40))
        #expect(file.metadata["f64"] == .float64(-2.25))
        #expect(file.metadata["strings"] == .array([.string("a"), .string("ü")]))
        #expect(file.metadata["nested"] == .array([.array([.uint32(1), .uint32(2)]), .array([])]))
        #expect(file.metadataKeys.first == "general.architecture")
        #expect(try file.vector("vector", count: 3) == [1, 2, 3])
        let matrix = try file.matrix("matrix", rows: 2, columns: 2)
        var row = [Float](repeating: 0, count: 2)
        matrix.dequantizeRow(1, into: &row)
        #expect(row == [3, 4])
        #expect(file.tensor("matrix")!.offset % 32 == 0)
    }

    @Test("every truncation of a valid file is reported as an error, never a crash")
    func truncation() throws {
        let bytes = Self.sample().bytes()
        for length in stride(from: 0, to: bytes.count, by: 7) {
            let path = try GGUFBuilder().write(Array(bytes.prefix(length)))
            defer { try? FileManager.default.removeItem(atPath: path) }
            #expect(throws: ModelFileError.self) { try GGUFFile(path: path) }
        }
    }

    @Test("wrong magic number")
    func wrongMagic() throws {
        var bytes = Self.sample().bytes()
        bytes[0] = UInt8(ascii: "X")
        let path = try GGUFBuilder().write(bytes)
        #expect(throws: ModelFileError.notGGUF(path: path)) { try GGUFFile(path: path) }
    }

    @Test("unsupported version")
    func wrongVersion() throws {
        var b = Self.sample()
        b.version = 1
        let path = try b.write()
        #expect(throws: ModelFileError.unsupportedVersion(path: path, version: 1)) { try GGUFFile(path: path) }
    }

    @Test("an unknown or unsupported tensor type is named in the error")
    func badTensorType() throws {
        var b = GGUFBuilder()
        b.addTensor("weird", shape: [32], type: 13, data: [UInt8](repeating: 0, count: 176))
        let path = try b.write()
        do {
            _ = try GGUFFile(path: path)
            Issue.record("accepted an unsupported type")
        } catch {
            #expect(error.description.contains("Q5_K"))
            #expect(error.description.contains("weird"))
        }
        var c = GGUFBuilder()
        c.addTensor("alien", shape: [32], type: 999, data: [])
        let alienPath = try c.write()
        #expect(throws: ModelFileError.unsupportedTensorType(path: alienPath, tensor: "alien", type: 999)) {
            try GGUFFile(path: alienPath)
        }
    }

    @Test("tensor data past the end of the file")
    func offsetPastEnd() throws {
        let b = Self.sample()
        var bytes = b.bytes()
        bytes.removeLast(16)  // the matrix's data is cut
        let path = try b.write(bytes)
        do {
            _ = try GGUFFile(path: path)
            Issue.record("accepted a truncated tensor")
        } catch {
            #expect(error.description.contains("past the end"))
        }
    }

    @Test("absurd counts are rejected before anything is allocated")
    func absurdCounts() throws {
        var header: [UInt8] = []
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { header += $0 } }
        put(UInt32(0x4655_4747)); put(UInt32(3)); put(UInt64(0)); put(UInt64.max)
        let path = try GGUFBuilder().write(header)
        #expect(throws: ModelFileError.absurdCount(path: path, what: "metadata", count: .max)) { try GGUFFile(path: path) }

        var b = GGUFBuilder()
        b.add("huge", .array(elementType: 4, []))
        var bytes = b.bytes()
        // Patch the array's element count (last 8 bytes of the metadata) to 2^62.
        let countOffset = 24 + 8 + 4 + 4 + 4
        withUnsafeBytes(of: UInt64(1 << 62).littleEndian) { for (i, byte) in $0.enumerated() { bytes[countOffset + i] = byte } }
        let path2 = try b.write(bytes)
        #expect(throws: ModelFileError.self) { try GGUFFile(path: path2) }
    }

    @Test("a missing file or a directory is a clear error")
    func missingFile() {
        #expect(throws: ModelFileError.self) { try GGUFFile(path: "/nonexistent/model.gguf") }
        #expect(throws: ModelFileError.self) { try GGUFFile(path: "/tmp") }
    }
}
