@testable import Adapter
import Decoding
import Foundation
import Llama
import ModelFormats
import Tensor
import Testing
@testable import Training

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

    @Test("the head shipped for the default model is found for its file, gives plain decoding's tokens, and drafts better than a random one")
    func shippedHead() throws {
        let real = try RealModel.get(), golden = try Golden.load()
        let shipped = try #require(try RecurrentDraftHead.shipped(for: real.model))
        let generator = Generator(tokenizer: real.tokenizer)
        let options = GenerationOptions(maxTokens: 48, ignoreEOS: true)
        var accepted: [Double] = []
        for head in [shipped, .random(for: real.model, seed: 5)] {
            var rounds = 0, tokens = 0
            for prompt in golden.prompts.prefix(4) {
                let decoder = try DecoderCatalog.make(.redrafter, model: real.model, redrafterHead: head, contextCapacity: 256)
                let plain = try generator.generate(prompt: prompt.ids, decoder: SpeculativeDecoder.plain(model: real.model, contextCapacity: 256),
                                                   options: options)
                let result = try generator.generate(prompt: prompt.ids, decoder: decoder, options: options)
                #expect(result.tokens == plain.tokens)
                rounds += result.speculative?.rounds ?? 0
                tokens += result.tokens.count - 1
            }
            accepted.append(Double(tokens) / Double(max(rounds, 1)))
        }
        #expect(accepted[0] > accepted[1] + 0.1, "tokens a round: shipped \(accepted[0]), random \(accepted[1])")
        // Without a head, the decoder says what it needs.
        #expect(throws: DecoderCatalogError.redrafterHeadRequired) {
            try DecoderCatalog.make(.redrafter, model: try TinyModel.make())
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

    @Test("the recurrent head's backward (through the recurrence, the blocks, the norm and the head) agrees with central finite differences (float64), also with untargeted steps",
          arguments: [0, 1, 2])
    func gradientCheck(blocks: Int) {
        var random = SeededRandom(UInt64(11 + blocks))
        func values(_ n: Int, _ scale: Double = 1) -> [Double] { (0..<n).map { _ in Double(random.float()) * scale } }
        let d = 8, rows = 3, steps = 3, vocabulary = 7
        let w = RecurrentHeadTensors<Double>(
            input: values(d * d, 0.5), recurrent: values(d * d, 0.5), recurrentBias: values(d, 0.3),
            blockWeights: (0..<blocks).map { _ in values(4 * d * d, 0.4) }, blockBiases: (0..<blocks).map { _ in values(2 * d, 0.3) },
            projection: values(2 * d * d, 0.5), norm: values(d).map { 1 + 0.3 * $0 })
        let finalStates = values(rows * d, 2), head = values(vocabulary * d)
        let embeddings = (0..<steps).map { _ in values(rows * d, 1.5) }
        var targets = (0..<steps).map { _ in values(rows * vocabulary).map { exp(2 * $0) } }
        for j in 0..<steps {
            for t in 0..<rows {
                let sum = targets[j][(t * vocabulary)..<((t + 1) * vocabulary)].reduce(0, +)
                for v in 0..<vocabulary { targets[j][t * vocabulary + v] /= sum }
            }
        }
        // The last step of row 1 has no target (its draft ran past the text).
        for v in 0..<vocabulary { targets[steps - 1][vocabulary + v] = 0 }
        let loss = RecurrentHeadLoss<Double>(hidden: d, eps: 1e-5)
        func value(_ w: RecurrentHeadTensors<Double>) -> Double {
            loss.evaluate(w, finalStates: finalStates, embeddings: embeddings, targets: targets, head: head, vocabulary: vocabulary).loss
        }
        let analytic = loss.evaluate(w, finalStates: finalStates, embeddings: embeddings, targets: targets, head: head, vocabulary: vocabulary).gradients
        #expect(w.tensors.count == 5 + 2 * blocks)
        let h = 1e-6
        for tensor in w.tensors.indices {
            for index in stride(from: 0, to: w.tensors[tensor].count, by: max(1, w.tensors[tensor].count / 17)) {
                var plus = w, minus = w
                plus.tensors[tensor][index] += h
                minus.tensors[tensor][index] -= h
                let numeric = (value(plus) - value(minus)) / (2 * h)
                let exact = analytic.tensors[tensor][index]
                #expect(abs(numeric - exact) <= 1e-6 + 1e-5 * abs(numeric), "tensor \(tensor)[\(index)]: \(exact) vs \(numeric)")
            }
        }
    }

    @Test("the training forward computes the logits the drafter drafts from (its products run on Q8_0 weights: close, same top token)")
    func trainingMatchesInference() throws {
        let real = try RealModel.get()
        let model = real.model, d = model.config.hiddenSize
        let vocabulary = (0..<Int32(2048)).map { $0 * 7 % Int32(model.config.vocabularySize) }.sorted()
        let head = RecurrentDraftHead.random(for: model, blocks: 1, seed: 21, draftVocabulary: vocabulary)
        let runner = RecurrentHeadRunner(head, model: model)
        // h: the normalised final state after a short prompt.
        let prompt: [Int32] = real.tokenizer.encode("The quick brown fox jumps over the lazy dog")
        let hidden = FloatMatrix(capacity: prompt.count, columns: d)
        model.embed(prompt, into: hidden)
        try model.forward(layers: 0..<model.config.layerCount, hidden: hidden, cache: KVCache(config: model.config, capacity: 64),
                          scratch: ForwardScratch(config: model.config, contextCapacity: 64))
        let h = FloatMatrix(capacity: 1, columns: d)
        model.normalizeOutput(hidden.row(prompt.count - 1), into: h.pointer)
        let tokens: [Int32] = [prompt.last!, 1000, 2000]
        var states = [FloatMatrix(capacity: 16, columns: d), FloatMatrix(capacity: 16, columns: d)]
        var inference: [[Float]] = []
        for (j, token) in tokens.enumerated() {
            runner.step(tokens: [token], previous: j == 0 ? nil : states[0], h: h.pointer, into: states[1], pool: .shared)
            states.swapAt(0, 1)
            inference.append(Array(UnsafeBufferPointer(start: runner.head.logits.pointer, count: vocabulary.count)))
        }
        let embedded = FloatMatrix(capacity: 1, columns: d)
        let embeddings = tokens.map { token -> [Float] in
            model.embed([token], into: embedded)
            return Array(UnsafeBufferPointer(start: embedded.pointer, count: d))
        }
        let weights = RecurrentHeadTensors(head)
        let training = RecurrentHeadLoss<Float>(hidden: d, eps: model.config.rmsNormEpsilon).evaluate(
            weights, finalStates: Array(UnsafeBufferPointer(start: h.pointer, count: d)), embeddings: embeddings,
            targets: tokens.map { _ in [Float](repeating: 0, count: vocabulary.count) },
            head: AdapterTrainer.headRows(of: model, ids: vocabulary), vocabulary: vocabulary.count).logits
        for j in tokens.indices {
            let a = inference[j], b = training[j]
            let difference = zip(a, b).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
            let norm = b.map { $0 * $0 }.reduce(0, +).squareRoot()
            #expect(difference < 0.05 * norm, "step \(j): ‖inference − training‖ = \(difference), ‖training‖ = \(norm)")
            #expect(a.indices.max { a[$0] < a[$1] } == b.indices.max { b[$0] < b[$1] }, "step \(j): top token")
        }
    }

    @Test("a few dozen training steps on the model's own text lower the loss")
    func trainingLowersLoss() throws {
        let real = try RealModel.get(), golden = try Golden.load()
        let generator = Generator(tokenizer: real.tokenizer)
        let plain = SpeculativeDecoder.plain(model: real.model, contextCapacity: 256)
        let sequences = try golden.prompts.prefix(3).map { prompt in
            prompt.ids + (try generator.generate(prompt: prompt.ids, decoder: plain, options: GenerationOptions(maxTokens: 48, ignoreEOS: true)).tokens)
        }
        let forcing = TeacherForcing(model: real.model, exitLayer: 1, keepsDeepStates: true)
        let examples = try sequences.map { try forcing.run($0, firstTarget: $0.count - 48) }
        var options = RecurrentHeadTrainingOptions()
        (options.steps, options.batch, options.depth, options.learningRate, options.warmup, options.draftVocabulary) = (40, 8, 3, 3e-3, 5, 512)
        let trainer = RecurrentHeadTrainer(model: real.model, start: .random(for: real.model, seed: 2), tokens: sequences,
                                           examples: examples, options: options)
        // Drafts start from the prompt's last position (whose next token is the answer's first) to the
        // last one that leaves 3 tokens: 45 per sequence.
        #expect(trainer.startCount == 3 * 45)
        let losses = (0..<40).map { _ in trainer.step().loss }
        let first = losses.prefix(5).reduce(0, +) / 5, last = losses.suffix(5).reduce(0, +) / 5
        #expect(last < 0.8 * first, "loss \(first) → \(last)")
        let head = trainer.draftHead(origin: "test")
        #expect(head.draftVocabulary?.count == 512 && head.config.origin == "test")
    }

    @Test("beam settings outside their ranges are refused")
    func settings() throws {
        let model = try TinyModel.make()
        let head = RecurrentDraftHead.random(for: model, seed: 1)
        #expect(throws: SpeculativeError.self) { try ReDrafter(head: head, model: model, beamWidth: 0, beamLength: 3) }
        #expect(throws: SpeculativeError.self) { try ReDrafter(head: head, model: model, beamWidth: 2, beamLength: 17) }
    }
}
