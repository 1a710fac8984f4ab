//! WAV decoding: any channel count, 8–192 kHz, integer or float samples.

use std::io::{Read, Seek};
use std::path::Path;

use crate::{Error, Result};

/// Interleaved PCM as decoded from a file.
#[derive(Debug, Clone)]
pub struct Pcm {
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Number of interleaved channels.
    pub channels: u16,
    /// Interleaved samples in [-1, 1].
    pub samples: Vec<f32>,
}

impl Pcm {
    /// Duration in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        let frames = self.samples.len() as u64 / u64::from(self.channels.max(1));
        frames * 1000 / u64::from(self.sample_rate.max(1))
    }
}

/// Lowest and highest sample rates we accept.
pub const RATE_RANGE: std::ops::RangeInclusive<u32> = 8_000..=192_000;

/// Reads a WAV file. Errors name the file and say what is wrong with it.
pub fn read_wav(path: &Path) -> Result<Pcm> {
    let err = |reason: String| Error::Audio {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    decode_wav(std::io::BufReader::new(file)).map_err(err)
}

/// Decodes WAV bytes from any reader; the error is a sentence for the user.
pub fn decode_wav<R: Read + Seek>(reader: R) -> std::result::Result<Pcm, String> {
    let wav = hound::WavReader::new(reader).map_err(|e| match e {
        hound::Error::FormatError(msg) => format!("not a WAV file ({msg})"),
        hound::Error::Unsupported => {
            "unsupported WAV encoding (use PCM integer or 32-bit float)".into()
        }
        other => format!("unreadable WAV: {other}"),
    })?;
    let spec = wav.spec();
    if spec.channels == 0 {
        return Err("WAV header declares zero channels".into());
    }
    if !RATE_RANGE.contains(&spec.sample_rate) {
        return Err(format!(
            "sample rate {} Hz is outside the supported {}–{} Hz",
            spec.sample_rate,
            RATE_RANGE.start(),
            RATE_RANGE.end()
        ));
    }
    let samples: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => wav
            .into_samples::<f32>()
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("corrupt float samples: {e}"))?,
        (hound::SampleFormat::Int, bits @ 1..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            wav.into_samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| format!("corrupt integer samples: {e}"))?
        }
        (format, bits) => {
            return Err(format!(
                "unsupported sample format {format:?} with {bits} bits"
            ));
        }
    };
    if samples.is_empty() {
        return Err("the file contains no audio".into());
    }
    let mut pcm = Pcm {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        samples,
    };
    super::sanitize(&mut pcm.samples);
    Ok(pcm)
}

/// Writes mono f32 samples as a 16-bit PCM WAV file.
pub fn write_wav(
    path: &Path,
    samples: &[f32],
    sample_rate: u32,
) -> std::result::Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)?;
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)?;
    }
    w.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav_bytes(
        spec: hound::WavSpec,
        write: impl FnOnce(&mut hound::WavWriter<&mut std::io::Cursor<Vec<u8>>>),
    ) -> Vec<u8> {
        let mut cursor = std::io::Cursor::new(Vec::new());
        {
            let mut w = hound::WavWriter::new(&mut cursor, spec).expect("writer");
            write(&mut w);
            w.finalize().expect("finalize");
        }
        cursor.into_inner()
    }

    #[test]
    fn decodes_i16_stereo_and_f32_mono() {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 48_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let bytes = wav_bytes(spec, |w| {
            for _ in 0..480 {
                w.write_sample(i16::MAX).expect("l");
                w.write_sample(i16::MIN).expect("r");
            }
        });
        let pcm = decode_wav(std::io::Cursor::new(bytes)).expect("decode");
        assert_eq!(
            (pcm.sample_rate, pcm.channels, pcm.samples.len()),
            (48_000, 2, 960)
        );
        assert!((pcm.samples[0] - 1.0).abs() < 1e-4 && (pcm.samples[1] + 1.0).abs() < 1e-6);
        assert_eq!(pcm.duration_ms(), 10);

        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let bytes = wav_bytes(spec, |w| {
            for v in [0.5f32, f32::NAN, f32::INFINITY, -7.0] {
                w.write_sample(v).expect("s");
            }
        });
        let pcm = decode_wav(std::io::Cursor::new(bytes)).expect("decode");
        assert_eq!(
            pcm.samples,
            vec![0.5, 0.0, 0.0, -1.0],
            "non-finite and loud samples are tamed"
        );
    }

    #[test]
    fn bad_input_is_a_sentence_not_a_panic() {
        let err = decode_wav(std::io::Cursor::new(b"hello, I am a text file".to_vec()))
            .expect_err("text");
        assert!(err.contains("not a WAV"), "{err}");
        assert!(decode_wav(std::io::Cursor::new(Vec::new())).is_err());
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let empty = wav_bytes(spec, |_| {});
        assert_eq!(
            decode_wav(std::io::Cursor::new(empty.clone())).expect_err("empty"),
            "the file contains no audio"
        );
        let truncated = &wav_bytes(spec, |w| {
            for i in 0..1000 {
                w.write_sample(i as i16).expect("s");
            }
        })[..30];
        assert!(decode_wav(std::io::Cursor::new(truncated.to_vec())).is_err());
    }
}
