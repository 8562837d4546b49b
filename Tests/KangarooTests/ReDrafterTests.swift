import Adapter
import Decoding
import Foundation
import Llama
import ModelFormats
import Testing

/// ReDrafter's drafter: beams merged into a tree and verified by the core; its head's files.
@Suite("ReDrafter")
struct ReDrafterTests {
    @Test("greedy ReDrafter gives plain decoding's tokens on the golden prompts for several beam shapes, and wide beams make trees")
    func greedyIsLossless() throws {
        let real = try RealModel.get(), golden = try Golden.load()
        let generator = Generator(tokenizer: real.tokenizer)
        let options = GenerationOptions(maxTokens: 32, ignoreEOS: true)
        let head = RecurrentDraftHead.random(for: real.model, seed: 3)
        for (index, prompt) in golden.prompts.prefix(3).enumerated() {
            let plain = try generator.generate(prompt: prompt.ids, decoder: SpeculativeDecoder.plain(model: real.model, contextCapacity: 256),
                                               options: options)
            for (width, length) in [(1, 1), (1, 4), (3, 3), (4, 4)] {
                let drafter = try ReDrafter(head: head, model: real.model, beamWidth: width, beamLength: length)
                let decoder = SpeculativeDecoder(model: real.model, drafter: drafter, name: "redrafter \(width)×\(length)", contextCapacity: 256)
                let result = try generator.generate(prompt: prompt.ids, decoder: decoder, options: options)
                #expect(result.tokens == plain.tokens, "\(decoder.name) on golden prompt \(index)")
                let stats = try #require(result.speculative)
                // Every round but the last (which may have no room) drafts; beams of width w and length l
                // give at most w·l nodes and, when wider than one, more nodes than levels.
                #expect(stats.draftedNodes >= stats.rounds - 1 && stats.draftedNodes <= stats.rounds * width * length, "\(stats)")
                if width > 1 { #expect(stats.draftedNodes > stats.rounds * length, "\(decoder.name): \(stats)") }
            }
        }
    }

    @Test("a head round-trips through its files, drafts the same after loading, and is refused for another model or with bad tensors")
    func files() throws {
        let real = try RealModel.get()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("redrafter-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let head = RecurrentDraftHead.random(for: real.model, blocks: 2, seed: 9, draftVocabulary: Array(0..<4096))
        try head.save(to: directory)
        let loaded = try RecurrentDraftHead.load(from: directory, for: real.model)
        #expect(loaded.config == head.config && loaded.input == head.input && loaded.blockWeights == head.blockWeights
                && loaded.projection == head.projection && loaded.draftVocabulary == head.draftVocabulary)
        let tiny = try TinyModel.make()
        #expect(throws: AdapterError.self) { try RecurrentDraftHead.load(from: directory, for: tiny) }
        // A projection of the wrong shape, then one that is not finite, then no weights at all.
        let weights = directory + "/" + RecurrentDraftHead.weightsFile
        var file = try SafeTensors.read(path: weights)
        file.tensors["proj.weight"] = .init(floats: Array(head.projection.prefix(10)), shape: [10])
        try SafeTensors.write(file, to: weights)
        #expect(throws: AdapterError.self) { try RecurrentDraftHead.load(from: directory, for: real.model) }
        var infinite = head.projection
        infinite[5] = .infinity
        file.tensors["proj.weight"] = .init(floats: infinite, shape: [576, 1152])
        try SafeTensors.write(file, to: weights)
        #expect(throws: AdapterError.self) { try RecurrentDraftHead.load(from: directory, for: real.model) }
        try FileManager.default.removeItem(atPath: weights)
        #expect(throws: AdapterError.self) { try RecurrentDraftHead.load(from: directory, for: real.model) }
    }

    @Test("beam settings outside their ranges are refused")
    func settings() throws {
        let model = try TinyModel.make()
        let head = RecurrentDraftHead.random(for: model, seed: 1)
        #expect(throws: SpeculativeError.self) { try ReDrafter(head: head, model: model, beamWidth: 0, beamLength: 3) }
        #expect(throws: SpeculativeError.self) { try ReDrafter(head: head, model: model, beamWidth: 2, beamLength: 17) }
    }
}
