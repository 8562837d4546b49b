import Adapter
import Decoding
import Foundation
import Llama
import Tensor
import Testing
import ModelStore
import Tokenizer
import Training

@Suite("Adapter training: gradients and optimiser")
struct TrainingTests {
    static func shape(feedForward: Int = 0, deepState: Bool = false, previousState: Bool = false) -> AdapterShape {
        AdapterShape(hidden: 8, heads: 2, kvHeads: 1, headSize: 4, ropeBase: 10000, eps: 1e-5, feedForward: feedForward,
                     deepState: deepState, previousState: previousState)
    }
    static let vocabulary = 11, count = 5

    struct Problem {
        var weights: AdapterTensors<Double>
        var states: [Double]
        var targets: [Double]
        var head: [Double]
        var deepStates: [Double]?
    }

    static func problem(seed: UInt64, feedForward f: Int = 0, deepState: Bool = false, previousState: Bool = false) -> Problem {
        var random = SeededRandom(seed)
        func values(_ n: Int, _ scale: Double = 1) -> [Double] { (0..<n).map { _ in Double(random.float()) * scale } }
        let s = shape(feedForward: f), d = s.hidden
        let weights = AdapterTensors<Double>(
            inputNorm: values(d).map { 1 + 0.3 * $0 }, query: values(s.querySize * d, 0.6), key: values(s.kvSize * d, 0.6),
            value: values(s.kvSize * d, 0.6), output: values(d * s.querySize, 0.6), norm: values(d).map { 1 + 0.3 * $0 },
            feedForwardNorm: values(f > 0 ? d : 0).map { 1 + 0.3 * $0 }, gate: values(f * d, 0.8), up: values(f * d, 0.8),
            down: values(d * f, 0.6), deepProjection: values(deepState ? d * d : 0, 0.6),
            previousProjection: values(previousState ? d * d : 0, 0.4))
        var targets = values(count * vocabulary).map { exp(2 * $0) }
        for t in 0..<count {
            let sum = targets[(t * vocabulary)..<((t + 1) * vocabulary)].reduce(0, +)
            for v in 0..<vocabulary { targets[t * vocabulary + v] /= sum }
        }
        let states = values(count * d, 2)
        // Row 0 has no predecessor; row 2 is withheld, as training's dropout does.
        let deepStates = deepState ? (0..<(count * d)).map { $0 < d || $0 / d == 2 ? 0 : states[$0 - d] * 0.7 + 0.2 } : nil
        return Problem(weights: weights, states: states, targets: targets, head: values(vocabulary * d), deepStates: deepStates)
    }

    @Test("every backward agrees with central finite differences (float64), also with context-only positions, a feed-forward block and a deep state",
          arguments: [(false, 0, false), (true, 0, false), (false, 6, false), (true, 6, false), (false, 0, true), (true, 6, true)])
    func gradientCheck(contextOnlyPrefix: Bool, feedForward: Int, deepState: Bool) {
        let loss = AdapterLoss<Double>(shape: Self.shape(feedForward: feedForward, deepState: deepState))
        var p = Self.problem(seed: 3, feedForward: feedForward, deepState: deepState)
        if contextOnlyPrefix {  // the first two positions have no target (a prompt before an answer)
            for i in 0..<(2 * Self.vocabulary) { p.targets[i] = 0 }
            // They still feed the later positions' attention: changing their states changes the loss.
            var moved = p.states
            for i in 0..<loss.shape.hidden { moved[i] += 0.5 }
            let before = loss.evaluate(p.weights, states: p.states, start: 7, targets: p.targets, head: p.head, vocabulary: Self.vocabulary, deepStates: p.deepStates).loss
            let after = loss.evaluate(p.weights, states: moved, start: 7, targets: p.targets, head: p.head, vocabulary: Self.vocabulary, deepStates: p.deepStates).loss
            #expect(abs(before - after) > 1e-6)
        }
        let (_, analytic, _) = loss.evaluate(p.weights, states: p.states, start: 7, targets: p.targets, head: p.head, vocabulary: Self.vocabulary, deepStates: p.deepStates)
        let names = AdapterTensors<Double>.tensorNames
        #expect(p.weights.tensors.filter { !$0.isEmpty }.count == (feedForward > 0 ? 10 : 6) + (deepState ? 1 : 0))
        let h = 1e-6
        for tensor in names.indices {
            for index in stride(from: 0, to: p.weights.tensors[tensor].count, by: max(1, p.weights.tensors[tensor].count / 13)) {
                var plus = p.weights, minus = p.weights
                plus.tensors[tensor][index] += h
                minus.tensors[tensor][index] -= h
                let lp = loss.evaluate(plus, states: p.states, start: 7, targets: p.targets, head: p.head, vocabulary: Self.vocabulary, deepStates: p.deepStates).loss
                let lm = loss.evaluate(minus, states: p.states, start: 7, targets: p.targets, head: p.head, vocabulary: Self.vocabulary, deepStates: p.deepStates).loss
                let numeric = (lp - lm) / (2 * h)
                let exact = analytic.tensors[tensor][index]
                #expect(abs(numeric - exact) <= 1e-6 + 1e-5 * abs(numeric), "\(names[tensor])[\(index)]: \(exact) vs \(numeric)")
            }
        }
    }

    @Test("the previous-state projection's gradient (and the others' through it) agrees with central finite differences, with RoPE over head halves (Qwen)")
    func gradientCheckPreviousState() {
        var shape = Self.shape(feedForward: 6, deepState: true, previousState: true)
        shape.ropePairsAdjacent = false
        let loss = AdapterLoss<Double>(shape: shape)
        let p = Self.problem(seed: 4, feedForward: 6, deepState: true, previousState: true)
        func value(_ w: AdapterTensors<Double>) -> Double {
            loss.evaluate(w, states: p.states, start: 3, targets: p.targets, head: p.head, vocabulary: Self.vocabulary, deepStates: p.deepStates).loss
        }
        let analytic = loss.evaluate(p.weights, states: p.states, start: 3, targets: p.targets, head: p.head,
                                     vocabulary: Self.vocabulary, deepStates: p.deepStates).gradients
        #expect(p.weights.tensors.filter { !$0.isEmpty }.count == 12)
        let h = 1e-6, names = AdapterTensors<Double>.tensorNames
        for tensor in names.indices {
            for index in stride(from: 0, to: p.weights.tensors[tensor].count, by: max(1, p.weights.tensors[tensor].count / 13)) {
                var plus = p.weights, minus = p.weights
                plus.tensors[tensor][index] += h
                minus.tensors[tensor][index] -= h
                let numeric = (value(plus) - value(minus)) / (2 * h), exact = analytic.tensors[tensor][index]
                #expect(abs(numeric - exact) <= 1e-6 + 1e-5 * abs(numeric), "\(names[tensor])[\(index)]: \(exact) vs \(numeric)")
            }
        }
    }

    @Test("SpecDec's block queries and their feed-forward block: gradients (and the others' through the blocks) agree with central finite differences, with and without the sequence's own rows in the loss",
          arguments: [(0, true), (5, true), (5, false)])
    func gradientCheckBlockQueries(blockFeedForward: Int, contextLoss: Bool) {
        var shape = Self.shape(feedForward: 6, deepState: true, previousState: true)
        shape.blockSize = 2
        shape.blockFeedForward = blockFeedForward
        let loss = AdapterLoss<Double>(shape: shape)
        var p = Self.problem(seed: 6, feedForward: 6, deepState: true, previousState: true)
        var random = SeededRandom(7)
        let d = shape.hidden, f = blockFeedForward
        func values(_ n: Int, _ scale: Double) -> [Double] { (0..<n).map { _ in Double(random.float()) * scale } }
        p.weights.blockQueries = values(2 * d, 2)
        p.weights.blockFeedForwardNorm = values(f > 0 ? d : 0, 0.3).map { 1 + $0 }
        (p.weights.blockGate, p.weights.blockUp, p.weights.blockDown) = (values(f * d, 0.8), values(f * d, 0.8), values(d * f, 0.6))
        for i in 0..<Self.vocabulary { p.targets[i] = 0 }  // position 0 is context only
        let anchors = [0, 2, 1]
        let anchorDeep = values(anchors.count * d, 1.5)
        func value(_ w: AdapterTensors<Double>) -> Double {
            loss.evaluate(w, states: p.states, start: 3, targets: p.targets, head: p.head, vocabulary: Self.vocabulary,
                          deepStates: p.deepStates, anchors: anchors, anchorDeepStates: anchorDeep, contextLoss: contextLoss).loss
        }
        let result = loss.evaluate(p.weights, states: p.states, start: 3, targets: p.targets, head: p.head,
                                   vocabulary: Self.vocabulary, deepStates: p.deepStates, anchors: anchors, anchorDeepStates: anchorDeep,
                                   contextLoss: contextLoss)
        #expect(result.logits.count == (Self.count + 2 * anchors.count) * Self.vocabulary)
        // The blocks change the loss: it is not the sequence's alone.
        #expect(abs(result.loss - loss.evaluate(p.weights, states: p.states, start: 3, targets: p.targets, head: p.head,
                                                vocabulary: Self.vocabulary, deepStates: p.deepStates).loss) > 1e-6)
        let h = 1e-6, names = AdapterTensors<Double>.tensorNames
        #expect(p.weights.tensors.filter { !$0.isEmpty }.count == (f > 0 ? 17 : 13))
        for tensor in names.indices {
            for index in stride(from: 0, to: p.weights.tensors[tensor].count, by: max(1, p.weights.tensors[tensor].count / 13)) {
                var plus = p.weights, minus = p.weights
                plus.tensors[tensor][index] += h
                minus.tensors[tensor][index] -= h
                let numeric = (value(plus) - value(minus)) / (2 * h), exact = result.gradients.tensors[tensor][index]
                #expect(abs(numeric - exact) <= 1e-6 + 1e-5 * abs(numeric), "\(names[tensor])[\(index)]: \(exact) vs \(numeric)")
            }
        }
    }

    @Test("a few AdamW steps on a tiny problem reduce the loss")
    func trainingReducesLoss() {
        let loss = AdapterLoss<Double>(shape: Self.shape())
        var p = Self.problem(seed: 5)
        var optimiser = AdamW<Double>()
        let schedule = LearningRateSchedule(peak: 3e-2, warmup: 5, total: 60)
        let initial = loss.evaluate(p.weights, states: p.states, start: 0, targets: p.targets, head: p.head, vocabulary: Self.vocabulary).loss
        var last = initial
        for step in 0..<60 {
            let (value, gradients, _) = loss.evaluate(p.weights, states: p.states, start: 0, targets: p.targets, head: p.head,
                                                      vocabulary: Self.vocabulary)
            last = value
            optimiser.update(&p.weights, gradients: gradients, rate: schedule.rate(at: step))
        }
        // The floor is the targets' entropy; the loss must move well towards it.
        var entropy = 0.0
        for t in p.targets where t > 0 { entropy -= t * log(t) }
        entropy /= Double(Self.count)
        #expect(last < initial - 0.5 * (initial - entropy), "loss \(initial) → \(last), entropy \(entropy)")
    }

    @Test("the training forward computes the logits the inference adapter drafts from, with and without a feed-forward block or a deep state, on Llama and Qwen2 (RoPE over head halves)",
          arguments: [(false, false, "llama"), (true, false, "llama"), (false, true, "llama"), (false, true, "qwen2")])
    func trainingMatchesInference(feedForward: Bool, deepState: Bool, architecture: String) throws {
        let model = try TinyModel.make(seed: 2, architecture: architecture)
        let c = model.config
        let adapter = feedForward ? KangarooAdapter.copyingLayer(of: model, exitLayer: 2, feedForward: true)
                                  : KangarooAdapter.random(for: model, exitLayer: 2, seed: 9, deepState: deepState)
        let tokens: [Int32] = [1, 4, 2, 7, 3, 0]
        // Exit-layer states from the engine.
        let cache = KVCache(config: c, capacity: 16)
        let scratch = ForwardScratch(config: c, contextCapacity: 16)
        let hidden = FloatMatrix(capacity: 16, columns: c.hiddenSize)
        model.embed(tokens, into: hidden)
        try model.forward(layers: 0..<2, hidden: hidden, cache: cache, scratch: scratch)
        // Deep states: any vectors will do; position 0 and 3 go without one.
        var random = SeededRandom(4)
        let deep = (0..<(tokens.count * c.hiddenSize)).map { _ in random.float() }
        let withheld: Set<Int> = [0, 3]
        // Inference: the adapter runner, position by position.
        let runner = AdapterRunner(adapter: adapter, model: model, contextCapacity: 16, chunk: 8)
        var inference: [[Float]] = []
        for t in 0..<tokens.count {
            deep.withUnsafeBufferPointer { d in
                runner.evaluate(hidden, rows: t..<(t + 1), deepState: withheld.contains(t) ? nil : d.baseAddress! + t * c.hiddenSize,
                                scratch: scratch)
            }
            inference.append(runner.head.logits.rowArray(0))
        }
        // Training forward on the same states, with the model's head dequantised.
        var head = [Float](repeating: 0, count: c.vocabularySize * c.hiddenSize)
        head.withUnsafeMutableBufferPointer { buffer in
            for r in 0..<c.vocabularySize { model.output.dequantizeRow(r, into: buffer.baseAddress! + r * c.hiddenSize) }
        }
        var shape = AdapterShape(hidden: c.hiddenSize, heads: c.headCount, kvHeads: c.kvHeadCount, headSize: c.headSize,
                                 ropeBase: Double(c.ropeBase), eps: Double(c.rmsNormEpsilon), feedForward: adapter.feedForward?.size ?? 0,
                                 deepState: deepState)
        shape.ropePairsAdjacent = c.architecture.ropeStyle == .adjacentPairs
        // The runner holds its matrices in Q8_0: the training forward gets the same weights.
        func asRun(_ values: [Float], columns: Int) -> [Float] {
            let bytes = quantizeQ8_0(values, columns: columns)
            var out = [Float](repeating: 0, count: values.count)
            bytes.withUnsafeBytes { dequantize(.q8_0, $0.baseAddress!, into: &out, count: values.count) }
            return out
        }
        let d = c.hiddenSize
        let weights = AdapterTensors<Float>(inputNorm: adapter.inputNorm, query: asRun(adapter.query, columns: d),
                                            key: asRun(adapter.key, columns: d), value: asRun(adapter.value, columns: d),
                                            output: asRun(adapter.output, columns: c.querySize), norm: adapter.norm,
                                            feedForwardNorm: adapter.feedForward?.norm ?? [],
                                            gate: adapter.feedForward.map { asRun($0.gate, columns: d) } ?? [],
                                            up: adapter.feedForward.map { asRun($0.up, columns: d) } ?? [],
                                            down: adapter.feedForward.map { asRun($0.down, columns: $0.size) } ?? [],
                                            deepProjection: adapter.deepProjection.map { asRun($0, columns: d) } ?? [])
        let states = (0..<tokens.count).flatMap { hidden.rowArray($0) }
        let deepStates = deepState ? (0..<(tokens.count * d)).map { withheld.contains($0 / d) ? 0 : deep[$0] } : nil
        let uniform = [Float](repeating: 1 / Float(c.vocabularySize), count: tokens.count * c.vocabularySize)
        let (_, _, logits) = AdapterLoss<Float>(shape: shape).evaluate(weights, states: states, start: 0, targets: uniform, head: head,
                                                                       vocabulary: c.vocabularySize, deepStates: deepStates)
        // What remains is the runner's int8 activations (per block of 32): at most 2.5e-3 here without
        // the feed-forward block and 5.7e-2 with it (two more quantised inputs, one of them SwiGLU's
        // output summed over the block's width), on logits up to about 9.
        let tolerance: Float = feedForward ? 0.1 : 1e-2
        var largest: Float = 0
        for t in 0..<tokens.count {
            for v in 0..<c.vocabularySize { largest = max(largest, abs(logits[t * c.vocabularySize + v] - inference[t][v])) }
        }
        #expect(largest <= tolerance)
        if feedForward {
            // The bound is tight enough to notice a missing block: without it the logits move far more.
            var attentionOnly = weights
            (attentionOnly.feedForwardNorm, attentionOnly.gate, attentionOnly.up, attentionOnly.down) = ([], [], [], [])
            var withoutShape = shape
            withoutShape.feedForward = 0
            let (_, _, without) = AdapterLoss<Float>(shape: withoutShape).evaluate(attentionOnly, states: states, start: 0, targets: uniform,
                                                                                  head: head, vocabulary: c.vocabularySize)
            let moved = zip(without, logits).map { abs($0 - $1) }.max() ?? 0
            #expect(moved > 10 * tolerance, "the feed-forward block moves the logits by \(moved) only")
        }
        if deepState {
            // Likewise the deep state: without it the logits of the positions that have one move far more.
            let (_, _, without) = AdapterLoss<Float>(shape: shape).evaluate(weights, states: states, start: 0, targets: uniform, head: head,
                                                                            vocabulary: c.vocabularySize,
                                                                            deepStates: [Float](repeating: 0, count: tokens.count * d))
            let moved = zip(without, logits).map { abs($0 - $1) }.max() ?? 0
            #expect(moved > 10 * tolerance, "the deep state moves the logits by \(moved) only")
        }
    }
}

@Suite("Training data and adapter evaluation")
struct TrainingDataTests {
    @Test("ShareGPT records are read one by one; a record cut off at the end is dropped, roles are mapped")
    func shareGPTParsing() throws {
        let text = """
        [
          {"id": "a_0", "conversations": [{"from": "human", "value": "Hi \\"there\\" {"}, {"from": "gpt", "value": "Hello]"}]},
          {"id": "b_0", "conversations": [{"from": "human", "value": "only a question"}]},
          {"id": "c_0", "conversations": [{"from": "system", "value": "Be brief."}, {"from": "user", "value": "2+2?"}, {"from": "chatgpt", "value": "4"}]},
          {"id": "d_0", "conversations": [{"from": "human", "value": "cut off her
        """
        let conversations = try ShareGPT.parse(Data(text.utf8))
        #expect(conversations.map(\.id) == ["a_0", "c_0"])
        #expect(conversations[0].messages == [ChatMessage(role: .user, content: "Hi \"there\" {"), ChatMessage(role: .assistant, content: "Hello]")])
        #expect(conversations[1].messages.map(\.role) == [.system, .user, .assistant])
        #expect(throws: ShareGPTError.self) { try ShareGPT.parse(Data("{}".utf8)) }
    }

    @Test("task prompts rotate through the tasks, carry the first answer's opening cut at a word, skip short answers")
    func taskPrompts() throws {
        let answer = (0..<300).map { "word\($0)" }.joined(separator: " ")
        let conversation = Conversation(id: "x", messages: [ChatMessage(role: .user, content: "What are the words?"),
                                                            ChatMessage(role: .assistant, content: answer)])
        let tasks = (0..<(2 * TaskPrompt.allCases.count)).compactMap { TaskPrompt.message(index: $0, for: conversation) }
        #expect(tasks.map(\.task) == TaskPrompt.allCases + TaskPrompt.allCases)
        for (task, text) in tasks {
            let passage = TaskPrompt.opening(of: answer, characters: TaskPrompt.passageCharacters)
            #expect(text.contains(passage), "\(task)")
            #expect(!text.contains(answer), "\(task): the whole answer")
        }
        // Cut at the last whole word within the limit.
        #expect(TaskPrompt.opening(of: "  alpha beta gamma  ", characters: 12) == "alpha beta")
        #expect(TaskPrompt.opening(of: "alpha", characters: 12) == "alpha")
        #expect(tasks.last(where: { $0.task == .answerFromText })?.text.contains("Question: What are the words?") == true)
        let short = Conversation(id: "y", messages: [ChatMessage(role: .user, content: "Hi"), ChatMessage(role: .assistant, content: "Hello!")])
        #expect(TaskPrompt.message(index: 0, for: short) == nil)
    }

    @Test("the real ShareGPT file yields thousands of conversations and a ~2% validation split")
    func realShareGPT() throws {
        let path = try ShareGPTFile.file.ensure().path
        let conversations = try ShareGPT.read(path: path, limit: 5000)
        #expect(conversations.count == 5000)
        let validation = conversations.filter(\.isValidation).count
        #expect((40...160).contains(validation), "\(validation) validation conversations")
    }

    @Test("self-distilled answers, decoded several at a time, are the model's greedy answers decoded one by one")
    func batchedSelfDistillation() throws {
        let real = try RealModel.get()
        let template = try #require(try ChatTemplate(template: real.gguf.optionalString("tokenizer.chat_template")))
        // Three slots for five prompts of different lengths: slots are reused, sequences end apart.
        let distillation = SelfDistillation(model: real.model, tokenizer: real.tokenizer, template: template,
                                            maxNewTokens: 40, maxTokens: 160, sequencesAtOnce: 3)
        let questions = ["Why is the sky blue?", "Name three rivers.", "Write a haiku about rain.",
                         "What is 17 times 3? Explain each step of the multiplication carefully.", "Hi"]
        let prompts = try questions.map { question in
            try #require(distillation.prompt(for: Conversation(id: question, messages: [ChatMessage(role: .user, content: question)])))
        }
        var heard: [Int] = []
        let batched = try distillation.sequences(prompts: prompts) { index, _ in heard.append(index) }
        #expect(heard.sorted() == Array(prompts.indices))
        let generator = Generator(tokenizer: real.tokenizer)
        for (prompt, sequence) in zip(prompts, batched) {
            let decoder = SpeculativeDecoder.plain(model: real.model, contextCapacity: 160)
            let alone = try generator.generate(prompt: prompt, decoder: decoder, options: GenerationOptions(maxTokens: 40))
            #expect(sequence == prompt + alone.tokens)
        }
        // An error from the caller stops the work and comes back.
        struct Stop: Error {}
        #expect(throws: Stop.self) { try distillation.sequences(prompts: prompts) { _, _ in throw Stop() } }
    }

    @Test("an adapter that drafts exactly the full model agrees everywhere; a random one rarely")
    func evaluatorExtremes() throws {
        let model = try TinyModel.make(seed: 4)
        let sequences: [[Int32]] = [[1, 2, 3, 4, 5, 6, 7, 0, 1], [3, 3, 2]]
        let perfect = try AdapterEvaluator(model: model, adapter: .identity(for: model, exitLayer: model.config.layerCount))
            .agreement(on: sequences)
        #expect(perfect.positions == 10)
        #expect(perfect.top1Agreement == 1)
        #expect(abs(perfect.expectedAcceptance - 1) < 1e-4)
        // Every position lands in one confidence bin; the bins' agreements add up to the total.
        #expect(perfect.byConfidence.reduce(0) { $0 + $1.positions } == 10)
        #expect(perfect.atConfidence(atLeast: 0) == (share: 1, agreement: 1))
        let random = try AdapterEvaluator(model: model, adapter: .random(for: model, exitLayer: 1, seed: 3)).agreement(on: sequences)
        #expect(random.expectedAcceptance < 0.95)
        #expect(random.byConfidence.reduce(0) { $0 + $1.positions } == random.positions)
        #expect(abs(random.atConfidence(atLeast: 0).agreement - random.top1Agreement) < 1e-12)
    }
}

@Suite("Teacher forcing")
struct TeacherForcingTests {
    @Test("without deep states teacher forcing keeps none and writes nothing past its buffers; with them, the rest is unchanged")
    func deepStatesOnlyWhenAsked() throws {
        let real = try RealModel.get()
        let tokens = (0..<400).map { Int32(($0 * 7919) % 40000 + 10) }
        // Several runs, so that writes through an empty array's storage would have hit memory in use.
        var without: [TeacherForcedSequence] = []
        for _ in 0..<3 { without.append(try TeacherForcing(model: real.model, exitLayer: 2, k: 4).run(tokens)) }
        let with = try TeacherForcing(model: real.model, exitLayer: 2, k: 4, keepsDeepStates: true).run(tokens)
        for run in without {
            #expect(run.deepStates.isEmpty)
            #expect(run.states == with.states && run.topIDs == with.topIDs && run.topProbabilities == with.topProbabilities)
        }
        #expect(with.deepStates.count == with.count * real.model.config.hiddenSize)
        // An empty array still reads as empty (its shared storage untouched).
        #expect([Float]().isEmpty && [Float]().count == 0 && Array([Float]().prefix(4)).isEmpty)
    }
}
