"""Writes the Smart Turn reference fixture the Rust tests compare against.

Runs pipecat's own feature extractor and ONNX analyzer (pipecat-ai 1.14.0, the same wheel the
model comes from) on a WAV file and stores the [80, 800] features as little-endian f32 plus
the model's probability. Re-run only when the reference changes:

    .cache/venv/bin/python scripts/reference/smart_turn_fixture.py IN.wav OUT_PREFIX
"""

import json
import sys
import wave

import numpy as np
from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3


def main() -> None:
    src, prefix = sys.argv[1], sys.argv[2]
    with wave.open(src) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
    analyzer = LocalSmartTurnAnalyzerV3(cpu_count=1)
    result = analyzer._predict_endpoint(audio)
    # The same truncation/padding the analyzer applies before computing features.
    n = 8 * 16000
    window = audio[-n:] if len(audio) > n else np.pad(audio, (n - len(audio), 0))
    features = compute_whisper_log_mel_features(window, do_normalize=True)
    assert features.shape == (80, 800)
    features.astype("<f4").tofile(prefix + ".features.f32")
    with open(prefix + ".json", "w") as f:
        json.dump({"probability": float(result["probability"]), "shape": [80, 800], "source": src}, f, indent=2)
        f.write("\n")
    print(prefix, result)


if __name__ == "__main__":
    main()
