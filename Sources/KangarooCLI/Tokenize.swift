import ArgumentParser
import Foundation

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the token ids of a text.")

    @OptionGroup var modelOptions: ModelOptions

    @Argument(help: "The text to tokenize.")
    var text: String

    @Flag(help: "Add the model's beginning-of-sequence token if it asks for one.")
    var bos = false

    @Flag(help: "Print {\"ids\": [...]}.")
    var json = false

    func run() throws {
        let (_, tokenizer) = try modelOptions.load()
        let ids = tokenizer.encode(text, addBOS: bos)
        if json {
            struct Report: Encodable { var ids: [Int32] }
            try printJSON(Report(ids: ids))
        } else {
            writeOut(ids.map(String.init).joined(separator: " ") + "\n")
        }
    }
}
