import Adapter
import Foundation
@testable import KangarooServer
import Llama
import ModelFormats
import Testing

/// Seeded mutation fuzzing of what reads untrusted bytes: the GGUF reader and model loader, the
/// adapter (safetensors) loader, and the server's request parser. Every case must end in a result
/// or a clear error: a crash ends the test run, a hang its time limit. CI runs a few hundred cases;
/// `KANGAROO_FUZZ_CASES=20000 swift test --filter Fuzz` runs longer.
@Suite("Fuzzing")
struct FuzzTests {
    static let cases = ProcessInfo.processInfo.environment["KANGAROO_FUZZ_CASES"].flatMap(Int.init) ?? 300

    /// `bytes` with a few random mutations: flipped bits, overwritten bytes, extreme integers written
    /// over 4 or 8 bytes (where counts, sizes and offsets live), a truncation or an insertion.
    static func mutate(_ bytes: [UInt8], random: inout SeededRandom) -> [UInt8] {
        var out = bytes
        for _ in 0..<Int.random(in: 1...4, using: &random) where !out.isEmpty {
            let at = Int.random(in: 0..<out.count, using: &random)
            switch Int.random(in: 0..<6, using: &random) {
            case 0: out[at] ^= UInt8(1) << UInt8.random(in: 0...7, using: &random)
            case 1: out[at] = UInt8.random(in: 0...255, using: &random)
            case 2, 3:
                let width = Bool.random(using: &random) ? 4 : 8
                let value: UInt64 = [0, 1, .max, UInt64(Int64.max), 1 << 31, 1 << 62, UInt64.random(in: 0...UInt64.max, using: &random)]
                    .randomElement(using: &random)!
                for i in 0..<width where at + i < out.count { out[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
            case 4: out.removeLast(Int.random(in: 0...min(out.count, 64), using: &random))
            default: out.insert(contentsOf: (0..<Int.random(in: 1...16, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }, at: at)
            }
        }
        return out
    }

    @Test("mutated GGUF model files load or fail with an error, never crash")
    func gguf() throws {
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try TinyModel.write())))
        var random = SeededRandom(21)
        var loaded = 0, errors = 0
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("kangaroo-fuzz-\(getpid()).gguf").path
        defer { unlink(path) }
        for _ in 0..<Self.cases {
            try Data(Self.mutate(original, random: &random)).write(to: URL(fileURLWithPath: path))
            do {
                _ = try LlamaModel(path: path)
                loaded += 1
            } catch {
                errors += 1
            }
        }
        print("GGUF fuzzing: \(Self.cases) cases, \(errors) clean errors, \(loaded) loaded, 0 crashes")
        #expect(errors > Self.cases / 4, "the mutations should mostly break the file: \(errors) errors")
    }

    @Test("mutated adapter files load or fail with an error, never crash")
    func adapters() throws {
        let model = try TinyModel.make()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("kangaroo-fuzz-adapter-\(getpid())").path
        try KangarooAdapter.random(for: model, exitLayer: 2, seed: 1, deepState: true).save(to: folder)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let weights = folder + "/adapter.safetensors", config = folder + "/adapter.json"
        let originalWeights = [UInt8](try Data(contentsOf: URL(fileURLWithPath: weights)))
        let originalConfig = [UInt8](try Data(contentsOf: URL(fileURLWithPath: config)))
        var random = SeededRandom(22)
        var loaded = 0, errors = 0
        for i in 0..<Self.cases {
            let mutatesConfig = i % 4 == 0
            try Data(mutatesConfig ? originalWeights : Self.mutate(originalWeights, random: &random)).write(to: URL(fileURLWithPath: weights))
            try Data(mutatesConfig ? Self.mutate(originalConfig, random: &random) : originalConfig).write(to: URL(fileURLWithPath: config))
            do {
                _ = try KangarooAdapter.load(from: folder, for: model)
                loaded += 1
            } catch {
                errors += 1
            }
        }
        print("adapter fuzzing: \(Self.cases) cases, \(errors) clean errors, \(loaded) loaded, 0 crashes")
        #expect(errors > 0)
    }

    @Test("mutated API requests parse or fail with a 400-class error, never crash")
    func requests() throws {
        let seeds = [
            #"{"model": "m", "prompt": "Hello", "max_tokens": 16, "temperature": 0.7, "top_p": 0.9, "stop": ["\n"], "seed": 3}"#,
            #"{"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "stream": true, "logprobs": 2, "kangaroo": {"decoder": "lookup", "max_draft": 4, "copy_ngram": 2, "threshold": 0.5}}"#,
        ]
        var random = SeededRandom(23)
        var parsed = 0, errors = 0
        for i in 0..<Self.cases {
            let body = Data(Self.mutate(Array(seeds[i % seeds.count].utf8), random: &random))
            do {
                _ = try OpenAIRequest.parse(body, chat: i % 2 == 1, maxTokensLimit: 4096)
                parsed += 1
            } catch let error as APIError {
                #expect(error.status.code < 500, "a bad request got \(error.status.code): \(error)")
                errors += 1
            }
        }
        print("request fuzzing: \(Self.cases) cases, \(errors) clean errors, \(parsed) parsed, 0 crashes")
        #expect(errors > 0)
    }
}
