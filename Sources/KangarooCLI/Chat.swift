import ArgumentParser
import Decoding
import Foundation
import Llama
import Synchronization
import Tokenizer

/// `kangaroo chat`: a conversation in the terminal.
struct Chat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Talk with the model in the terminal: each answer streams, the conversation is kept.",
        discussion: """
        Type a message and press Enter. Commands: /reset forgets the conversation, /system TEXT sets the \
        system message (and starts over), /stats shows this session's figures, /quit (or Ctrl-D) ends. \
        Ctrl-C stops the answer being written, not the program. After each answer a dim line gives its \
        speed and the tokens each speculative round committed. With input piped in, nothing is echoed, \
        no colours are used, and the figures go to standard error. When the conversation outgrows the context, its oldest turns are dropped.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var decoderOptions: DecoderOptions

    @Option(help: "System message (default: the template's own, if it has one).")
    var system: String?

    @Option(help: "Maximum number of tokens in one answer.")
    var maxTokens = 512

    @Option(help: "Sampling temperature; 0 is greedy decoding.")
    var temperature: Float = 0

    @Option(help: "Random seed for sampling.")
    var seed: UInt64 = 0

    @Option(help: "Context length in tokens (default: 4096, or the model's if smaller).")
    var context: Int?

    func validate() throws {
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be at least 1") }
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be 0 or more") }
        if let context, context < 16 { throw ValidationError("--context must be at least 16") }
    }

    func run() throws {
        let (model, tokenizer) = try modelOptions.load()
        let template = try modelOptions.template(for: model.gguf)
        let decoder = try decoderOptions.makeDecoder(model: model, context: context)
        let interactive = isatty(STDIN_FILENO) != 0 && isatty(STDOUT_FILENO) != 0
        let stop = ChatInterrupt.install()
        var session = ChatSession(system: system)
        if interactive {
            writeOut("kangaroo chat — \(decoder.name) decoding; /reset, /system TEXT, /stats, /quit; Ctrl-C stops an answer\n")
        }
        while true {
            if interactive { writeOut("\u{1B}[1m> \u{1B}[0m") }
            guard let line = readLine() else { break }
            let input = line.trimmingCharacters(in: .whitespaces)
            if input.isEmpty { continue }
            if input.hasPrefix("/") {
                if try !session.command(input, interactive: interactive) { break }
                continue
            }
            session.messages.append(ChatMessage(role: .user, content: input))
            let prompt = session.fittedPrompt(template: template, tokenizer: tokenizer, context: decoder.contextCapacity,
                                              answerRoom: min(maxTokens, decoder.contextCapacity / 2))
            guard let prompt else {
                session.messages.removeLast()
                writeOut("(that message alone is longer than the context; /reset or a shorter one)\n")
                continue
            }
            stop.clear()
            let options = GenerationOptions(maxTokens: min(maxTokens, decoder.contextCapacity - prompt.count - 1),
                                            sampling: SamplingOptions(temperature: temperature, seed: seed &+ UInt64(session.turns)))
            let result = try Generator(tokenizer: tokenizer).generate(prompt: prompt, decoder: decoder, options: options,
                                                                      shouldStop: { stop.isSet }, onText: { writeOut($0.text) })
            writeOut("\n")
            session.messages.append(ChatMessage(role: .assistant, content: result.text))
            session.record(result)
            let figures = ChatSession.figures(result)
            if interactive {
                writeOut("\u{1B}[2m\(figures)\u{1B}[0m\n")
            } else {
                FileHandle.standardError.write(Data((figures + "\n").utf8))
            }
        }
        if interactive { writeOut("\n") }
    }
}

/// The conversation and this session's figures.
struct ChatSession {
    var system: String?
    var messages: [ChatMessage] = []
    var turns = 0
    var tokens = 0
    var seconds = 0.0
    var rounds = 0
    var committed = 0.0

    init(system: String?) {
        self.system = system
    }

    /// Handles a /command; false when the chat should end.
    mutating func command(_ input: String, interactive: Bool) throws -> Bool {
        let parts = input.split(separator: " ", maxSplits: 1).map(String.init)
        switch parts[0] {
        case "/quit", "/exit": return false
        case "/reset":
            messages.removeAll()
            writeOut("(conversation forgotten)\n")
        case "/system":
            system = parts.count > 1 ? parts[1] : nil
            messages.removeAll()
            writeOut(system.map { "(system message set; conversation started over: \($0))\n" } ?? "(system message cleared)\n")
        case "/stats":
            let rate = seconds > 0 ? Double(tokens) / seconds : 0
            let perRound = rounds > 0 ? String(format: ", %.2f tokens a round", committed / Double(rounds)) : ""
            writeOut(String(format: "%d answers, %d tokens, %.1f tokens/s%@; %d messages kept\n", turns, tokens, rate, perRound,
                            messages.count))
        default:
            writeOut("unknown command \(parts[0]): /reset, /system TEXT, /stats, /quit\n")
        }
        return true
    }

    /// The conversation's prompt, dropping its oldest turns until it leaves `answerRoom` tokens of the
    /// context; nil when even the newest message alone does not fit.
    mutating func fittedPrompt(template: ChatTemplate, tokenizer: Tokenizer, context: Int, answerRoom: Int) -> [Int32]? {
        while true {
            let conversation = (system.map { [ChatMessage(role: .system, content: $0)] } ?? []) + messages
            let prompt = tokenizer.encodePrompt(template.render(conversation))
            if prompt.count + answerRoom < context { return prompt }
            guard messages.count > 1 else { return nil }
            messages.removeFirst(min(2, messages.count - 1))
        }
    }

    mutating func record(_ result: GenerationResult) {
        turns += 1
        tokens += result.tokens.count
        seconds += result.decodeSeconds + result.prefillSeconds
        if let s = result.speculative {
            rounds += s.rounds
            committed += s.meanAcceptedTokens * Double(s.rounds)
        }
    }

    /// One answer's figures: its speed, and the tokens a round for speculative decoders.
    static func figures(_ result: GenerationResult) -> String {
        var line = String(format: "%d tokens, %.1f tokens/s", result.tokens.count, result.decodeTokensPerSecond)
        if let s = result.speculative, s.rounds > 0 { line += String(format: ", %.2f tokens a round", s.meanAcceptedTokens) }
        if result.stopReason == .cancelled { line += ", stopped" }
        return line
    }
}

/// Ctrl-C during an answer: a flag the generation loop checks before each round.
final class ChatInterrupt: Sendable {
    private let flag = Atomic<Bool>(false)
    static let shared = ChatInterrupt()

    static func install() -> ChatInterrupt {
        signal(SIGINT) { _ in ChatInterrupt.shared.flag.store(true, ordering: .relaxed) }
        return shared
    }

    var isSet: Bool { flag.load(ordering: .relaxed) }
    func clear() { flag.store(false, ordering: .relaxed) }
}
