import Adapter
import ArgumentParser
import Foundation
import Llama
import ModelStore
import Training

/// `kangaroo train-specdec`: trains SpecDec's block drafter (an adapter with block queries) in Swift
/// on the model's own answers.
struct TrainSpecDec: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-specdec",
        abstract: "Train a SpecDec block drafter on the model's own answers (self-distillation).",
        discussion: """
        The block drafter is Kangaroo's adapter with k learned block queries: after the newest position, \
        the queries take the next k positions and draft all of them in one pass (SpecDec's [MASK] \
        queries). Training starts from --start-from (by default the adapter shipped for the model), adds \
        the queries, and trains everything on the model's answers to ShareGPT prompts (kept in \
        --output/self-distill.jsonl and shared with train-adapter and train-redrafter): each step, the \
        sequence's positions learn the next token as the adapter does, and the queries placed after \
        --anchors random positions of the answer learn the k tokens after each. Writes specdec.json and \
        specdec.safetensors (the block) and the adapter it extends (adapter.json, adapter.safetensors) to \
        --output; checkpoints every --checkpoint-every steps, --resume continues.
        """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Folder for the drafter (specdec.json, specdec.safetensors), checkpoints and the answers.")
    var output: String

    @Option(help: "Start from this adapter folder (default: the adapter shipped for the model).")
    var startFrom: String?

    @Option(help: "k: positions the block queries draft in one pass.")
    var block = 4

    @Flag(inversion: .prefixedNo, help: "Give the block queries' rows a feed-forward block of their own after the attention (the exit layer's, with a zero down projection), room to turn what they gathered into later tokens.")
    var feedForward = true

    @Flag(help: "Train the adapter's own tensors too (by default they stay as they are, so that a round's first draft is the adapter's).")
    var trainAdapter = false

    @Option(help: "The block queries' learning rate as a multiple of --learning-rate.")
    var queryRateScale = 10.0

    @Option(help: "Prompts answered.")
    var conversations = 300

    @Option(help: "Longest answer, in tokens.")
    var answerTokens = 256

    @Option(help: "Tokens per sequence (prompt and answer) at most.")
    var tokensPerConversation = 512

    @Option(help: "Optimisation steps (one sequence each).")
    var steps = 1000

    @Option(help: "Positions per step after which the block queries draft.")
    var anchors = 48

    @Option(help: "Peak learning rate.")
    var learningRate = 1e-3

    @Option(help: "Warm-up steps.")
    var warmup = 50

    @Option(help: "Seed of the queries' initial noise and of the data order.")
    var seed: UInt64 = 1

    @Option(help: "Save a checkpoint every N steps.")
    var checkpointEvery = 100

    @Flag(help: "Continue from the checkpoint in --output.")
    var resume = false

    func validate() throws {
        guard (1...16).contains(block), anchors >= 1, steps >= 1, conversations >= 1, answerTokens >= 8,
              tokensPerConversation > answerTokens + 16, learningRate > 0, queryRateScale > 0, warmup >= 0, checkpointEvery >= 1 else {
            throw ValidationError("--block 1…16; --anchors, --steps, --conversations ≥ 1; --answer-tokens ≥ 8; --tokens-per-conversation above the answers; --learning-rate positive")
        }
    }

    func run() throws {
        let began = Date()
        let (model, tokenizer) = try modelOptions.load()
        guard let start = try startFrom.map({ try KangarooAdapter.load(from: $0, for: model) }) ?? KangarooAdapter.shipped(for: model) else {
            throw ValidationError("no adapter ships for this model: pass --start-from with one trained by train-adapter")
        }
        let template = try modelOptions.template(for: model.gguf)
        let data = try ShareGPTFile.file.ensure()
        let candidates = try ShareGPT.read(path: data.path, limit: conversations * 3).filter { !$0.isValidation }
        let sequences = try selfDistilledSequences(candidates, model: model, tokenizer: tokenizer, template: template, folder: output,
                                                   conversations: conversations, maxNewTokens: answerTokens,
                                                   maxTokens: tokensPerConversation, taskPrompts: 0)
        let forcing = TeacherForcing(model: model, exitLayer: start.config.exitLayer, keepsDeepStates: start.deepProjection != nil)
        let examples = try teacherForced(sequences, by: forcing, what: "answers")

        var options = TrainingOptions()
        options.steps = steps
        options.learningRate = learningRate
        options.warmup = warmup
        options.seed = seed
        options.blockAnchors = anchors
        options.blockQueryRateScale = queryRateScale
        options.trainsAdapter = trainAdapter
        let queries = AdapterTrainer.initialBlockQueries(k: block, examples: examples, hidden: model.config.hiddenSize, seed: seed)
        var drafter = start.withBlockQueries(queries)
        if feedForward { drafter = drafter.addingBlockFeedForward(of: model) }
        let trainer = AdapterTrainer(model: model, start: drafter, examples: examples, options: options)
        if resume { try trainer.resume(from: output) }
        let origin = "trained: block of \(block), self-distilled answers (≤\(answerTokens) tokens) to \(examples.count) ShareGPT prompts, \(steps) steps × \(anchors) blocks, lr \(learningRate) (queries ×\(queryRateScale))\(feedForward ? ", block feed-forward" : "")\(trainAdapter ? ", adapter trained too" : ", adapter frozen"), draft vocabulary \(trainer.vocabulary.count), started from \(startFrom ?? "the shipped adapter"), seed \(seed)"
        try runTrainingSteps(from: trainer.optimiser.step, to: steps, checkpointEvery: checkpointEvery, agreement: "block agreement",
                             step: trainer.step) { try trainer.checkpoint(to: output, origin: origin) }
        writeOut(String(format: "wrote %@ (%@) in %.0f s\n", output, origin, Date().timeIntervalSince(began)))
    }
}
