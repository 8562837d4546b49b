import ArgumentParser
import Foundation
import ModelStore

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the models --model NAME fetches, and which are downloaded.",
        discussion: "Files live in $KANGAROO_HOME, else ~/.cache/kangaroo; pip fetches a model the first time a command names it.")

    func run() throws {
        for model in KnownModel.all {
            let size = String(format: "%.0f MB", Double(model.bytes) / 1e6)
            let state = model.file.isDownloaded ? model.file.path.path : "not downloaded"
            writeOut("\(model.name.padding(toLength: 20, withPad: " ", startingAt: 0)) \(size.padding(toLength: 8, withPad: " ", startingAt: 0)) \(model.summary)\n")
            writeOut("\(String(repeating: " ", count: 30))\(state)\n")
        }
    }
}
