import Adapter
import ArgumentParser
import Benchmark
import Decoding
import Foundation
import Llama
import Tokenizer

/// Tries speculative settings on a small sample and prints them by tokens/s: how defaults are chosen.
struct BenchSweep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Sweep exit layer, threshold and γ on a few Spec-Bench questions; print the settings by tokens/s.",
        discussion: """
        Every setting and plain decoding run on the same first turns, interleaved question by question. \
        Kangaroo uses --adapter or the adapter shipped for the model, whose exit layer is fixed; with \
        --untrained (or when no adapter ships) it uses an untrained copy of each --exit-layers layer's attention.
        """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Spec-Bench question file.")
    var suite: String

    @Option(help: "kangaroo or layerskip.")
    var decoder: DecoderKind = .kangaroo

    @Option(help: "Kangaroo adapter folder (fixes the exit layer; default: the adapter shipped for this model).")
    var adapter: String?

    @Flag(help: "Kangaroo: sweep --exit-layers with untrained copies of each layer's attention instead of a trained adapter.")
    var untrained = false

    @Option(help: "Comma-separated exit layers.")
    var exitLayers = "1,2,4"

    @Option(help: "Comma-separated thresholds η.")
    var thresholds = "0.2,0.4,0.6,0.8"

    @Option(help: "Comma-separated γ values.")
    var maxDrafts = "2,4,6"

    @Option(help: "Comma-separated policies for the draft that fell below η: verify (the paper), drop.")
    var uncertainDrafts = "verify"

    @Option(help: "Comma-separated back-off caps: rounds without drafting after failed drafts, at most (0: draft every round, as the paper does).")
    var backoffs = "0"

    @Option(help: "Comma-separated copy-draft n-gram lengths (0: no copy drafts).")
    var copyNgrams = "0"

    @Option(help: "Questions per task group.")
    var limit = 1

    @Option(help: "Comma-separated categories or task groups (default: one of each group).")
    var categories: String?

    @Option(help: "Tokens per turn.")
    var maxTokens = 128

    func run() throws {
        guard decoder != .plain else { throw ValidationError("--decoder must be kangaroo or layerskip") }
        let questions = SpecBench.select(try SpecBench.load(path: suite), limit: limit,
                                         categories: categories.map { $0.split(separator: ",").map(String.init) }
                                             ?? SpecBenchQuestion.taskGroups)
        let (model, tokenizer) = try modelOptions.load()
        let template = try modelOptions.template(for: model.gguf)
        let trained = untrained ? nil
            : try adapter.map { try KangarooAdapter.load(from: $0, for: model) } ?? KangarooAdapter.shipped(for: model)
        let layers = trained.map { [$0.config.exitLayer] } ?? parse(exitLayers, Int.init)
        var settings: [SpeculativeOptions] = []
        for layer in layers {
            for threshold in parse(thresholds, Float.init) {
                for gamma in parse(maxDrafts, Int.init) {
                    for policy in uncertainDrafts.split(separator: ",") {
                        guard policy == "verify" || policy == "drop" else { throw ValidationError("--uncertain-drafts takes verify and/or drop") }
                        for backoff in parse(backoffs, Int.init) {
                            for copyNgram in parse(copyNgrams, Int.init) {
                                settings.append(SpeculativeOptions(exitLayer: layer, threshold: threshold, maxDraft: gamma,
                                                                   dropsUncertainDraft: policy == "drop", maxBackoff: backoff,
                                                                   copyNgram: copyNgram))
                            }
                        }
                    }
                }
            }
        }
        let plain = SpeculativeDecoder.plain(model: model, contextCapacity: 4096)
        let decoders: [SpeculativeDecoder] = try settings.map { options in
            let adapter = decoder == .kangaroo ? trained ?? KangarooAdapter.copyingLayer(of: model, exitLayer: options.exitLayer) : nil
            return try DecoderCatalog.make(decoder, model: model, options: options, adapter: adapter, contextCapacity: 4096)
        }
        let generator = Generator(tokenizer: tokenizer)
        let options = GenerationOptions(maxTokens: maxTokens)
        var plainTime = 0.0, plainTokens = 0
        var times = Array(repeating: 0.0, count: decoders.count), tokens = Array(repeating: 0, count: decoders.count)
        var accepted = Array(repeating: 0.0, count: decoders.count)
        let progress = ProgressBar(total: questions.count)
        for question in questions {
            let prompt = tokenizer.encodePrompt(template.render([ChatMessage(role: .user, content: question.turns[0])]))
            let reference = try generator.generate(prompt: prompt, decoder: plain, options: options)
            plainTime += reference.prefillSeconds + reference.decodeSeconds
            plainTokens += reference.tokens.count
            for (i, d) in decoders.enumerated() {
                let result = try generator.generate(prompt: prompt, decoder: d, options: options)
                guard result.tokens == reference.tokens else {
                    throw ValidationError("LOSSLESSNESS CHECK FAILED for \(settings[i]) on question \(question.questionID)")
                }
                times[i] += result.prefillSeconds + result.decodeSeconds
                tokens[i] += result.tokens.count
                accepted[i] += (result.speculative?.meanAcceptedTokens ?? 0) / Double(questions.count)
            }
            progress.advance()
        }
        progress.finish()
        let plainRate = Double(plainTokens) / plainTime
        let order = decoders.indices.sorted { Double(tokens[$0]) / times[$0] > Double(tokens[$1]) / times[$1] }
        writeOut("plain: \(String(format: "%.1f", plainRate)) tokens/s on \(questions.count) questions\n")
        writeOut("exit layer  threshold  γ  uncertain  back-off  copy  tokens/s  speedup  mean accepted\n")
        for i in order {
            let o = settings[i], rate = Double(tokens[i]) / times[i]
            writeOut(String(format: "%10d  %9.2f  %2d  %-9@  %8d  %4d  %8.1f  %6.2f×  %13.2f\n", o.exitLayer, o.threshold(treeBudget: 0), o.maxDraft,
                            o.dropsUncertainDraft ? "drop" : "verify", o.maxBackoff, o.copyNgram, rate, rate / plainRate, accepted[i]))
        }
        if let best = order.first.map({ settings[$0] }) {
            writeOut("best: --exit-layer \(best.exitLayer) --threshold \(best.threshold(treeBudget: 0)) --max-draft \(best.maxDraft) --max-backoff \(best.maxBackoff) --copy-ngram \(best.copyNgram)\(best.dropsUncertainDraft ? " --drop-uncertain-draft" : "")\n")
        }
    }

    private func parse<T>(_ list: String, _ make: (String) -> T?) -> [T] {
        list.split(separator: ",").compactMap { make($0.trimmingCharacters(in: .whitespaces)) }
    }
}
