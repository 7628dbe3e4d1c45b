import SwiftUI

@main
struct HandheldDemoApp: App {
    init() {
        // `--benchmark ...` launch arguments (export/device/ios.py): measure, write the record, exit
        if let flags = BenchmarkMode.requested() {
            DispatchQueue.global(qos: .userInitiated).async { BenchmarkMode.run(flags) }
        }
    }

    var body: some Scene {
        WindowGroup { ContentView() }
    }
}
