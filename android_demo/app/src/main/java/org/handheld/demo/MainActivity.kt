package org.handheld.demo

import android.graphics.Bitmap
import android.graphics.ImageDecoder
import android.net.Uri
import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.compose.setContent
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.compose.foundation.Image
import androidx.compose.foundation.gestures.detectTapGestures
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Box
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.FilterChip
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Tab
import androidx.compose.material3.TabRow
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableIntStateOf
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.rememberCoroutineScope
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.asImageBitmap
import androidx.compose.ui.input.pointer.pointerInput
import androidx.compose.ui.layout.ContentScale
import androidx.compose.ui.layout.onSizeChanged
import androidx.compose.ui.platform.LocalContext
import androidx.compose.ui.unit.IntSize
import androidx.compose.ui.unit.dp
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import java.io.File

/** Three screens over one bundle: chat (4-bit LLM), photo segmentation, video question answering. */
class MainActivity : ComponentActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val root = File(getExternalFilesDir(null), Names.BUNDLE_DIR)
        val bundle = runCatching { HandheldBundle(root) }
        setContent {
            MaterialTheme {
                bundle.fold(
                    onSuccess = { Screens(it) },
                    onFailure = { Text("No usable bundle in $root:\n${it.message}\n\nSee android_demo/README.md (adb push).", Modifier.padding(16.dp)) },
                )
            }
        }
    }
}

@Composable
fun Screens(bundle: HandheldBundle) {
    var tab by remember { mutableIntStateOf(0) }
    val titles = listOf("Chat", "Segment", "Video QA")
    Column(Modifier.fillMaxSize()) {
        TabRow(selectedTabIndex = tab) {
            titles.forEachIndexed { i, title -> Tab(selected = tab == i, onClick = { tab = i }, text = { Text(title) }) }
        }
        val missing = @Composable { kind: String -> Text("This bundle has no $kind model (executorch).", Modifier.padding(16.dp)) }
        when (tab) {
            0 -> bundle.entry("llm")?.let { ChatScreen(LlmSpec(bundle, it)) } ?: missing("llm")
            1 -> bundle.entry("sam")?.let { SegmentScreen(SamSpec(bundle, it)) } ?: missing("sam")
            else -> bundle.entry("longvu")?.let { VideoScreen(LongVuSpec(bundle, it)) } ?: missing("longvu")
        }
    }
}

@Composable
fun ChatScreen(spec: LlmSpec) {
    val scope = rememberCoroutineScope()
    val chat = remember { lazy { LlmChat(spec) } }
    var input by remember { mutableStateOf("") }
    var transcript by remember { mutableStateOf(if (spec.chatFormat.known) "" else "(unknown chat template: sending raw text)\n") }
    var busy by remember { mutableStateOf(false) }
    Column(Modifier.padding(12.dp).fillMaxSize()) {
        Text(transcript, Modifier.weight(1f).verticalScroll(rememberScrollState()))
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            OutlinedTextField(input, { input = it }, Modifier.weight(1f), label = { Text("Message") })
            Button(enabled = !busy && input.isNotBlank(), onClick = {
                val message = input
                input = ""
                busy = true
                transcript += "\nYou: $message\nModel: "
                scope.launch(Dispatchers.Default) {
                    val status = try {
                        val stats = chat.value.reply(message) { token -> scope.launch(Dispatchers.Main) { transcript += token } }
                        val m = LlmChat.metrics(stats)
                        val w = chat.value.window
                        "[prefill %.0f tok/s, decode %.1f tok/s; context %d/%d, %d eviction(s)]".format(
                            m["prefill_tok_s"], m["decode_tok_s"], w.used, spec.maxSeqLen, w.evictions,
                        )
                    } catch (e: BundleException) {
                        "[${e.message}]" // the conversation goes on
                    }
                    withContext(Dispatchers.Main) {
                        transcript += "\n$status\n"
                        busy = false
                    }
                }
            }) { Text("Send") }
        }
    }
}

@Composable
fun SegmentScreen(spec: SamSpec) {
    val context = LocalContext.current
    val scope = rememberCoroutineScope()
    val segmenter = remember { lazy { Segmenter(spec) } }
    var photo by remember { mutableStateOf<Bitmap?>(null) }
    var image by remember { mutableStateOf<PreparedImage?>(null) }
    var mask by remember { mutableStateOf<Mask?>(null) }
    var clicks by remember { mutableStateOf(listOf<Click>()) }
    var positive by remember { mutableStateOf(true) }
    var viewSize by remember { mutableStateOf(IntSize.Zero) }
    var status by remember { mutableStateOf("Pick a photo: the salient object is selected automatically, then tap to add or remove.") }

    fun run(newClicks: List<Click>) = scope.launch(Dispatchers.Default) {
        val img = image ?: return@launch
        val start = System.nanoTime()
        val result = if (newClicks.isEmpty()) segmenter.value.auto(img) else segmenter.value.segment(img, newClicks, mask) to newClicks
        val ms = (System.nanoTime() - start) / 1e6
        withContext(Dispatchers.Main) {
            mask = result.first
            clicks = result.second
            status = "${clicks.size} click(s), %.0f ms".format(ms)
        }
    }

    val picker = rememberLauncherForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri: Uri? ->
        if (uri != null) {
            val bitmap = ImageDecoder.decodeBitmap(ImageDecoder.createSource(context.contentResolver, uri)) { decoder, _, _ ->
                decoder.allocator = ImageDecoder.ALLOCATOR_SOFTWARE // getPixels needs a software bitmap
            }.copy(Bitmap.Config.ARGB_8888, false)
            photo = bitmap
            image = ImagePrep.forSegmenter(bitmap, spec)
            mask = null
            run(emptyList())
        }
    }
    Column(Modifier.padding(12.dp).fillMaxSize()) {
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            Button(onClick = { picker.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly)) }) { Text("Photo") }
            FilterChip(selected = positive, onClick = { positive = true }, label = { Text("Add") })
            FilterChip(selected = !positive, onClick = { positive = false }, label = { Text("Remove") })
            Button(enabled = clicks.size > 1, onClick = { run(clicks.dropLast(1)) }) { Text("Undo") }
        }
        Text(status, Modifier.padding(vertical = 8.dp))
        val current = photo
        if (current != null) {
            Box(
                Modifier.fillMaxWidth().weight(1f).onSizeChanged { viewSize = it }.pointerInput(current, positive, clicks) {
                    detectTapGestures { offset ->
                        // ContentScale.Fit: map the tap back to photo pixels
                        val fit = minOf(viewSize.width.toFloat() / current.width, viewSize.height.toFloat() / current.height)
                        val x = (offset.x - (viewSize.width - current.width * fit) / 2) / fit
                        val y = (offset.y - (viewSize.height - current.height * fit) / 2) / fit
                        if (x in 0f..current.width.toFloat() && y in 0f..current.height.toFloat() && clicks.size < spec.maxClicks) run(clicks + Click(x, y, positive))
                    }
                },
            ) {
                Image(current.asImageBitmap(), "photo", Modifier.fillMaxSize(), contentScale = ContentScale.Fit)
                mask?.let { Image(it.overlay().asImageBitmap(), "mask", Modifier.fillMaxSize(), contentScale = ContentScale.Fit) }
            }
        }
    }
}

@Composable
fun VideoScreen(spec: LongVuSpec) {
    val context = LocalContext.current
    val scope = rememberCoroutineScope()
    val qa = remember { lazy { VideoQa(spec) } }
    var video by remember { mutableStateOf<Uri?>(null) }
    var question by remember { mutableStateOf("What happens in this video?") }
    var output by remember { mutableStateOf("Pick a video, ask a question.") }
    var busy by remember { mutableStateOf(false) }
    val picker = rememberLauncherForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri: Uri? -> video = uri }
    Column(Modifier.padding(12.dp).fillMaxSize(), verticalArrangement = Arrangement.spacedBy(8.dp)) {
        Button(onClick = { picker.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.VideoOnly)) }) {
            Text(if (video == null) "Video" else "Video selected")
        }
        OutlinedTextField(question, { question = it }, Modifier.fillMaxWidth(), label = { Text("Question") })
        Button(enabled = video != null && !busy, onClick = {
            busy = true
            output = "Sampling frames..."
            scope.launch(Dispatchers.Default) {
                val text = runCatching {
                    val frames = qa.value.sampleFrames(context, video!!)
                    val answer = qa.value.answer(frames, question)
                    "${answer.text}\n\nframes ${answer.framesSampled} -> ${answer.framesKept} after dedup, ${answer.tokens} video tokens\n" +
                        answer.timingsMs.entries.joinToString("\n") { (k, v) -> "$k: $v" }
                }.getOrElse { "Failed: ${it.message}" }
                withContext(Dispatchers.Main) { output = text; busy = false }
            }
        }) { Text("Ask") }
        Text(output, Modifier.verticalScroll(rememberScrollState()))
    }
}
