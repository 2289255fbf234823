import Foundation

/// What long work (`vtrn demo`, `vtrn bench`) is doing, on standard output as it goes.
///
///     var progress = Progress("bench dma", steps: 8)
///     progress.step("host -> device bandwidth, 64 MiB transfers")   // before the step's work
///     progress.print("a result line")                               // replaces the progress line
///     progress.finish()                                             // before the closing report
///
/// On a terminal the progress is one line, `bench dma [2/8] host -> device bandwidth...`,
/// rewritten in place by each step (`\r` and erase to the end of the line) and erased when a
/// result prints or the work ends, so the screen keeps only results. Anywhere else (a pipe, a
/// file, a CI log) each step is a plain line of its own, so a log shows where a run was and when.
/// Either way every line is flushed at once: a pipe would otherwise hold them until exit.
struct Progress {
    let title: String
    let steps: Int
    private(set) var completed = 0
    /// Whether standard output is a terminal (decided once, when the work starts).
    let onTerminal: Bool
    /// Whether a progress line is on the terminal, unfinished.
    private var lineShown = false

    init(_ title: String, steps: Int, onTerminal: Bool = isatty(STDOUT_FILENO) == 1) {
        self.title = title
        self.steps = steps
        self.onTerminal = onTerminal
    }

    /// Announces the next step, before its work starts.
    mutating func step(_ what: String) {
        completed += 1
        let text = "\(title) [\(min(completed, steps))/\(steps)] \(what)..."
        if onTerminal {
            write("\r\u{1B}[K" + text)
            lineShown = true
        } else {
            write(text + "\n")
        }
    }

    /// Prints a line of results (erasing the progress line on a terminal; it comes back at the next step).
    mutating func print(_ line: String) {
        clear()
        write(line + "\n")
    }

    /// Erases the progress line on a terminal: the work is over and its report follows.
    mutating func finish() {
        clear()
    }

    private mutating func clear() {
        if lineShown {
            write("\r\u{1B}[K")
            lineShown = false
        }
    }

    private func write(_ text: String) {
        Swift.print(text, terminator: "")
        fflush(nil) // every stream: Swift 6 does not let code name C's global `stdout`
    }
}
