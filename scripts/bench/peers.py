"""The Python peers the Rust pipeline is measured against, on the same clips and threads.

- Silero VAD: pipecat's SileroOnnxModel (onnxruntime, 1 intra-op thread), per 512-sample chunk.
- Smart Turn v3.2: pipecat's LocalSmartTurnAnalyzerV3 (features + ONNX), per call.
- STT: faster-whisper on the same CTranslate2 tiny.en weights, greedy, int8 and float32.

Prints one JSON object. Called by `cargo bench -p voicebot-shard --bench pipeline`.
"""

import json
import os
import sys
import time
import wave

import numpy as np

THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def load(path):
    with wave.open(path) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0


def main():
    clip_dir, models = sys.argv[1], sys.argv[2]
    clips = []
    with open(os.path.join(clip_dir, "clips.tsv")) as f:
        for line in f:
            name, text = line.rstrip("\n").split("\t", 1)
            clips.append((load(os.path.join(clip_dir, name)), text))
    out = {}

    from pipecat.audio.vad.silero import SileroOnnxModel

    vad = SileroOnnxModel(os.path.join(models, "silero_vad.onnx"))
    chunks = 0
    t = time.perf_counter()
    for audio, _ in clips:
        vad.reset_states()
        for i in range(0, len(audio) - 511, 512):
            vad(audio[np.newaxis, i : i + 512], 16000)
            chunks += 1
    out["vad_us_per_chunk"] = (time.perf_counter() - t) / chunks * 1e6

    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

    turn = LocalSmartTurnAnalyzerV3(
        smart_turn_model_path=os.path.join(models, "smart-turn-v3.2-cpu.onnx"), cpu_count=THREADS
    )
    turn._predict_endpoint(clips[0][0])  # warm-up
    times = []
    for audio, _ in clips:
        t = time.perf_counter()
        turn._predict_endpoint(audio)
        times.append((time.perf_counter() - t) * 1e3)
    out["turn_ms"] = times

    from faster_whisper import WhisperModel

    for compute_type in ["int8", "float32"]:
        model = WhisperModel(
            os.path.join(models, "ct2/whisper-tiny.en"), device="cpu", compute_type=compute_type, cpu_threads=THREADS
        )
        list(model.transcribe(clips[0][0], beam_size=1, language="en")[0])  # warm-up
        times, texts = [], []
        for audio, _ in clips:
            t = time.perf_counter()
            segments, _ = model.transcribe(
                audio,
                beam_size=1,
                language="en",
                without_timestamps=True,
                condition_on_previous_text=False,
                vad_filter=False,
                temperature=0.0,
            )
            texts.append(" ".join(s.text.strip() for s in segments))
            times.append((time.perf_counter() - t) * 1e3)
        out[f"stt_{compute_type}_ms"] = times
        out[f"stt_{compute_type}_text"] = texts
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
