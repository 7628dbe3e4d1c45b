import PhotosUI
import SwiftUI
import UniformTypeIdentifiers

/// Three screens over the bundle in Documents/bundle: chat, photo segmentation, video QA.
struct ContentView: View {
    @State private var bundle: Result<HandheldBundle, Error> = Result { try HandheldBundle.inDocuments() }

    var body: some View {
        switch bundle {
        case .failure(let error):
            Text("No usable bundle: \(error.localizedDescription)\nSee ios_demo/README.md.").padding()
        case .success(let b):
            TabView {
                ChatView(bundle: b).tabItem { Label("Chat", systemImage: "bubble.left.and.bubble.right") }
                SegmentView(bundle: b).tabItem { Label("Segment", systemImage: "person.crop.square") }
                VideoView(bundle: b).tabItem { Label("Video QA", systemImage: "film") }
            }
        }
    }
}

struct ChatView: View {
    let bundle: HandheldBundle
    @State private var chat: LLMChat?
    @State private var input = ""
    @State private var transcript = ""
    @State private var busy = false

    var body: some View {
        VStack {
            ScrollView { Text(transcript).frame(maxWidth: .infinity, alignment: .leading) }
            HStack {
                TextField("Message", text: $input).textFieldStyle(.roundedBorder)
                Button("Send") { send() }.disabled(busy || input.isEmpty)
            }
        }
        .padding()
        .task {
            do {
                guard let e = bundle.entry(kind: "llm", backend: "executorch") else { transcript = "This bundle has no LLM."; return }
                chat = try LLMChat(bundle: bundle, entry: e)
                if chat?.format.known == false { transcript = "(unknown chat template: sending raw text)\n" }
            } catch { transcript = error.localizedDescription }
        }
    }

    private func send() {
        guard let chat else { return }
        let message = input
        input = ""
        busy = true
        transcript += "\nYou: \(message)\nModel: "
        Task.detached {
            var status: String
            do {
                let m = try chat.reply(message) { token in Task { @MainActor in transcript += token } }
                status = String(
                    format: "[prefill %.0f tok/s, decode %.1f tok/s; context %d/%d, %d eviction(s)]",
                    m["prefill_tok_s"] ?? 0, m["decode_tok_s"] ?? 0, chat.window.used, chat.maxSeqLen, chat.window.evictions)
            } catch {
                status = "[\(error.localizedDescription)]"  // the conversation goes on
            }
            let line = status
            await MainActor.run {
                transcript += "\n\(line)\n"
                busy = false
            }
        }
    }
}

struct SegmentView: View {
    let bundle: HandheldBundle
    @State private var segmenter: Segmenter?
    @State private var item: PhotosPickerItem?
    @State private var photo: CGImage?
    @State private var image: PreparedImage?
    @State private var logits: [Float]?
    @State private var clicks: [Click] = []
    @State private var positive = true
    @State private var status = "Pick a photo: the salient object is selected automatically, then tap to add or remove."

    var body: some View {
        VStack {
            HStack {
                PhotosPicker("Photo", selection: $item, matching: .images)
                Picker("", selection: $positive) { Text("Add").tag(true); Text("Remove").tag(false) }.pickerStyle(.segmented)
                Button("Undo") { rerun(Array(clicks.dropLast())) }.disabled(clicks.count < 2)
            }
            Text(status).font(.footnote)
            if let photo {
                GeometryReader { geo in
                    let fit = min(geo.size.width / CGFloat(photo.width), geo.size.height / CGFloat(photo.height))
                    ZStack(alignment: .topLeading) {
                        Image(decorative: photo, scale: 1).resizable().scaledToFit()
                        if let overlay = overlayImage() { Image(decorative: overlay, scale: 1).resizable().scaledToFit() }
                    }
                    .onTapGesture { p in
                        let c = Click(x: Float(p.x / fit), y: Float(p.y / fit), positive: positive)
                        if clicks.count < (segmenter?.clicks.maxClicks ?? 0) { rerun(clicks + [c]) }
                    }
                }
            }
            Spacer()
        }
        .padding()
        .task {
            guard let e = bundle.entry(kind: "sam", backend: "coreml") else { status = "This bundle has no CoreML segmenter."; return }
            do { segmenter = try Segmenter(bundle: bundle, entry: e) } catch { status = error.localizedDescription }
        }
        .onChange(of: item) { _, newItem in
            Task {
                guard let data = try? await newItem?.loadTransferable(type: Data.self), let seg = segmenter,
                      let src = CGImageSourceCreateWithData(data as CFData, nil), let cg = CGImageSourceCreateImageAtIndex(src, 0, nil) else { return }
                photo = cg
                image = ImagePrep.forSegmenter(cg, seg.preprocessing)
                rerun([])
            }
        }
    }

    private func rerun(_ newClicks: [Click]) {
        guard let seg = segmenter, let img = image else { return }
        let start = Date()
        do {
            if newClicks.isEmpty {
                let (mask, auto) = try seg.auto(img)
                logits = mask
                clicks = auto
            } else {
                logits = try seg.segment(img, newClicks, previous: logits)
                clicks = newClicks
            }
            status = "\(clicks.count) click(s), \(Int(Date().timeIntervalSince(start) * 1000)) ms"
        } catch { status = error.localizedDescription }
    }

    /// The mask at photo resolution, foreground tinted.
    private func overlayImage() -> CGImage? {
        guard let logits, let img = image, let seg = segmenter else { return nil }
        let (w, h, s) = (img.width, img.height, img.size)
        guard let ctx = CGContext(data: nil, width: w, height: h, bitsPerComponent: 8, bytesPerRow: w * 4,
                                  space: CGColorSpaceCreateDeviceRGB(), bitmapInfo: CGImageAlphaInfo.premultipliedLast.rawValue),
              let data = ctx.data else { return nil }
        let px = data.assumingMemoryBound(to: UInt8.self)  // zeroed, owned by the context
        for y in 0..<h {
            let my = min(s - 1, Int((Float(y) + 0.5) * img.scale))
            for x in 0..<w where logits[my * s + min(s - 1, Int((Float(x) + 0.5) * img.scale))] > seg.threshold {
                let i = (y * w + x) * 4
                px[i] = 0; px[i + 1] = 80; px[i + 2] = 128; px[i + 3] = 128  // premultiplied
            }
        }
        return ctx.makeImage()
    }
}

struct VideoView: View {
    let bundle: HandheldBundle
    @State private var item: PhotosPickerItem?
    @State private var question = "What happens in this video?"
    @State private var output = "Pick a video, ask a question."
    @State private var busy = false

    struct Movie: Transferable {
        let url: URL
        static var transferRepresentation: some TransferRepresentation {
            FileRepresentation(contentType: .movie) { SentTransferredFile($0.url) } importing: { received in
                let copy = FileManager.default.temporaryDirectory.appendingPathComponent(received.file.lastPathComponent)
                try? FileManager.default.removeItem(at: copy)
                try FileManager.default.copyItem(at: received.file, to: copy)
                return Movie(url: copy)
            }
        }
    }

    var body: some View {
        VStack(alignment: .leading, spacing: 8) {
            PhotosPicker(item == nil ? "Video" : "Video selected", selection: $item, matching: .videos)
            TextField("Question", text: $question).textFieldStyle(.roundedBorder)
            Button("Ask") { ask() }.disabled(item == nil || busy)
            ScrollView { Text(output).frame(maxWidth: .infinity, alignment: .leading) }
        }
        .padding()
    }

    private func ask() {
        busy = true
        output = "Sampling frames..."
        Task.detached {
            let text: String
            do {
                guard let movie = try await item?.loadTransferable(type: Movie.self) else { throw BundleError.invalid("Could not read the video.") }
                let qa = try VideoQA(bundle: bundle)
                let frames = try await qa.sampleFrames(movie.url)
                let a = try qa.answer(frames, question: question)
                text = "\(a.text)\n\nframes \(a.framesSampled) -> \(a.framesKept) after dedup, \(a.tokens) video tokens\n"
                    + a.timingsMs.sorted { $0.key < $1.key }.map { "\($0.key): \(Int($0.value))" }.joined(separator: "\n")
            } catch { text = "Failed: \(error.localizedDescription)" }
            await MainActor.run { output = text; busy = false }
        }
    }
}
