package org.handheld.demo

import android.os.Build
import org.json.JSONArray
import org.json.JSONObject

/**
 * A benchmark record in export/bundle/schema/bench.schema.json's shape, the same one the host
 * writes, so `handheld report` compares phone and host runs. tests/test_app_contract.py checks
 * that every key written here is in the schema and every required one is written.
 */
object BenchKeys {
    const val SCHEMA_VERSION = "bench_schema_version"
    const val KIND = "kind"
    const val BACKEND = "backend"
    const val MODEL = "model"
    const val DEVICE = "device"
    const val TYPE = "type"
    const val ID = "id"
    const val NAME = "name"
    const val OS = "os"
    const val ABI = "abi"
    const val RUNNER = "runner"
    const val SIZE_BYTES = "size_bytes"
    const val WARMUP = "warmup"
    const val ITERATIONS = "iterations"
    const val METRICS = "metrics"
    const val VALUE = "value"
    const val UNIT = "unit"
    const val SAMPLES = "samples"
    const val PARITY = "parity"
    const val ETDUMP = "etdump"
    const val CREATED_UNIX = "created_unix"
}

/** Metrics carry no thread count: the AAR's Java API runs ExecuTorch's default thread pool. */
class BenchmarkRecord(private val entry: JSONObject, private val warmup: Int, private val iterations: Int) {
    private val metrics = JSONArray()

    /** Median of the measured samples; the unit follows the name's suffix as on the host. */
    fun add(name: String, samples: List<Double>) {
        val sorted = samples.sorted()
        val median = if (sorted.size % 2 == 1) sorted[sorted.size / 2] else (sorted[sorted.size / 2 - 1] + sorted[sorted.size / 2]) / 2
        val unit = when {
            name.endsWith("_ms") -> "ms"
            name.endsWith("_tok_s") -> "tok/s"
            name.endsWith("_fps") -> "frames/s"
            name.endsWith("_mb") -> "MiB"
            else -> "count"
        }
        metrics.put(
            JSONObject()
                .put(BenchKeys.NAME, name)
                .put(BenchKeys.VALUE, median)
                .put(BenchKeys.UNIT, unit)
                .put(BenchKeys.SAMPLES, JSONArray(samples)),
        )
    }

    fun toJson(etdumpPath: String?): JSONObject {
        val device = JSONObject()
            .put(BenchKeys.TYPE, "android")
            .put(BenchKeys.ID, Build.FINGERPRINT)
            .put(BenchKeys.NAME, Build.MODEL)
            .put(BenchKeys.OS, "Android ${Build.VERSION.RELEASE}")
            .put(BenchKeys.ABI, Build.SUPPORTED_ABIS.firstOrNull() ?: "unknown")
        val record = JSONObject()
            .put(BenchKeys.SCHEMA_VERSION, 1)
            .put(BenchKeys.KIND, entry.getString(Keys.KIND))
            .put(BenchKeys.BACKEND, entry.getString(Keys.BACKEND))
            .put(BenchKeys.MODEL, entry.getString(Keys.DIR))
            .put(BenchKeys.DEVICE, device)
            .put(BenchKeys.RUNNER, "app")
            .put(BenchKeys.SIZE_BYTES, entry.getLong(Keys.SIZE_BYTES))
            .put(BenchKeys.WARMUP, warmup)
            .put(BenchKeys.ITERATIONS, iterations)
            .put(BenchKeys.METRICS, metrics)
            .put(BenchKeys.CREATED_UNIX, System.currentTimeMillis() / 1000)
        entry.optJSONObject(Keys.PARITY)?.let { record.put(BenchKeys.PARITY, it) }
        etdumpPath?.let { record.put(BenchKeys.ETDUMP, it) }
        return record
    }
}
