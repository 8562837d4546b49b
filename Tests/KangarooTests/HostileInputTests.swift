import Adapter
import Decoding
import Foundation
import Llama
import ModelFormats
import Testing

/// Crafted files and flags get clear errors: never a crash, a hang or an allocation the machine
/// cannot hold. Each case reproduces one found by trying the program as a hostile user would.
@Suite("Hostile input")
struct HostileInputTests {
    /// Whether loading the tiny model with `overrides` fails with an error naming `key`.
    func rejects(_ overrides: [(String, GGUFBuilder.Value)], naming key: String) throws -> Bool {
        let path = try TinyModel.write(overrides: overrides)
        do {
            _ = try LlamaModel(path: path)
            return false
        } catch {
            return "\(error)".contains(key)
        }
    }

    @Test("absurd or contradictory hyper-parameters are refused, naming the field")
    func hyperParameters() throws {
        #expect(try rejects([("llama.attention.key_length", .u64(1 << 60))], naming: "attention.key_length"))
        #expect(try rejects([("llama.attention.head_count", .u32(1 << 31))], naming: "attention.head_count"))
        #expect(try rejects([("llama.rope.freq_base", .f32(.nan))], naming: "rope.freq_base"))
        #expect(try rejects([("llama.rope.freq_base", .f32(-1))], naming: "rope.freq_base"))
        #expect(try rejects([("llama.rope.freq_base", .f32(.infinity))], naming: "rope.freq_base"))
        #expect(try rejects([("llama.attention.layer_norm_rms_epsilon", .f32(.nan))], naming: "layer_norm_rms_epsilon"))
        #expect(try rejects([("llama.attention.layer_norm_rms_epsilon", .f32(-1e-5))], naming: "layer_norm_rms_epsilon"))
        #expect(try rejects([("llama.vocab_size", .u32(1 << 30))], naming: "vocab_size"))
        // A tokenizer far smaller than the vocabulary: the model's ids could not be turned into text.
        let tokens = GGUFBuilder.Value.array(elementType: 8, [.string("a"), .string("b"), .string("c")])
        #expect(try rejects([("tokenizer.ggml.tokens", tokens)], naming: "vocab_size"))
        // The unmodified file loads.
        _ = try LlamaModel(path: try TinyModel.write())
    }

    @Test("a model whose context is 16,777,216 positions gets a 4,096-position cache unless asked for more, and a clear error when the cache would not fit")
    func hugeContext() throws {
        let path = try TinyModel.write(overrides: [("llama.context_length", .u32(1 << 24))])
        let model = try LlamaModel(path: path)
        let decoder = try DecoderCatalog.make(.plain, model: model)
        #expect(decoder.contextCapacity == LlamaConfig.defaultContext)
        #expect(try DecoderCatalog.make(.plain, model: model, contextCapacity: 10_000).contextCapacity == 10_000)
        // Its whole context for 8 sequences: 48 GiB of caches.
        #expect(throws: DecoderCatalogError.self) {
            try DecoderCatalog.makeBatch(model: model, tokenizer: try RealModel.get().tokenizer, slots: 8, contextCapacity: 1 << 24)
        }
    }

    @Test("a tensor whose byte size is near 2^63, and tensors whose data overlap, are refused")
    func tensorSizes() throws {
        var huge = GGUFBuilder()
        huge.addTensor("token_embd.weight", shape: [2, (1 << 30) - 1, (1 << 30) + 1], type: 0, data: [])
        #expect(throws: ModelFileError.self) { try GGUFFile(path: try huge.write()) }

        var overlapping = GGUFBuilder()
        overlapping.addFloatTensor("a", shape: [32], values: Array(repeating: 1, count: 32))
        overlapping.addFloatTensor("b", shape: [32], values: Array(repeating: 2, count: 32))
        var bytes = overlapping.bytes()
        // Point b's offset at a's data: b's entry is its name (length 1 as u64, "b"), its dimension
        // count (u32), its dimension (u64), its type (u32), then the offset (u64).
        let name: [UInt8] = [1, 0, 0, 0, 0, 0, 0, 0, UInt8(ascii: "b")]
        let entry = try #require((0..<(bytes.count - name.count)).first { Array(bytes[$0..<($0 + name.count)]) == name })
        let offsetOfB = entry + name.count + 4 + 8 + 4
        withUnsafeBytes(of: UInt64(0).littleEndian) { for (i, byte) in $0.enumerated() { bytes[offsetOfB + i] = byte } }
        do {
            _ = try GGUFFile(path: try overlapping.write(bytes))
            Issue.record("accepted overlapping tensors")
        } catch {
            #expect("\(error)".contains("overlaps"))
        }
    }

    @Test("safetensors with impossible shapes or offsets near 2^63 are refused")
    func safeTensors() throws {
        func file(_ header: String, data: Int = 16) throws -> String {
            var out = Data()
            withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { out.append(contentsOf: $0) }
            out.append(contentsOf: Array(header.utf8))
            out.append(Data(count: data))
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("kangaroo-\(UUID().uuidString).safetensors").path
            try out.write(to: URL(fileURLWithPath: path))
            return path
        }
        let shape = #"{"w": {"dtype": "F32", "shape": [2147483647, 2147483647, 4], "data_offsets": [0, 16]}}"#
        let offsets = #"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [9223372036854775800, 9223372036854775807]}}"#
        for header in [shape, offsets] {
            #expect(throws: (any Error).self) { try SafeTensors.read(path: file(header)) }
        }
        // A well-formed file reads.
        let good = #"{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}"#
        #expect(try SafeTensors.read(path: file(good)).tensors["w"]?.shape == [4])
    }

    @Test("a FIFO given as the model is refused at once instead of waiting for a writer")
    func fifo() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kangaroo-fifo-\(getpid())").path
        unlink(path)
        try #require(mkfifo(path, 0o600) == 0)
        defer { unlink(path) }
        #expect(throws: ModelFileError.self) { try GGUFFile(path: path) }
    }

    @Test("kangaroo serve refuses --context 0 and --port 70000 with a message instead of failing later")
    func serveFlags() throws {
        for flags in [["--context", "0"], ["--port", "70000"], ["--port", "-1"], ["--queue", "-1"]] {
            let run = try ServerTests.run(ServerTests.binary, ["serve"] + flags)
            #expect(run.status != 0 && run.output.contains(flags[0]), "\(flags): \(run.output)")
        }
    }
}
