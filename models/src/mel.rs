//! The mel filter bank whisper.cpp stores in its model header.
//!
//! OpenAI's Whisper uses `librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)` (Slaney scale and
//! Slaney area normalisation). We reproduce librosa's arithmetic, including that it stores the
//! triangles as f32 before multiplying by the normalisation, which is what makes the result
//! bit-identical to the filters in OpenAI's `mel_filters.npz`.

/// Hz -> mel on the Slaney scale (librosa `hz_to_mel(htk=False)`).
fn hz_to_mel(hz: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= min_log_hz {
        min_log_mel + (hz / min_log_hz).ln() / logstep
    } else {
        hz / f_sp
    }
}

/// Mel -> Hz on the Slaney scale (librosa `mel_to_hz(htk=False)`).
fn mel_to_hz(mel: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        min_log_hz * (logstep * (mel - min_log_mel)).exp()
    } else {
        f_sp * mel
    }
}

/// numpy's `linspace(start, stop, n)` (endpoint included, last value exact).
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| i as f64 * step + start).collect();
    if let Some(last) = v.last_mut() {
        *last = stop;
    }
    v
}

/// `librosa.filters.mel(sr, n_fft, n_mels)` as `n_mels` rows of `n_fft / 2 + 1` f32 weights.
pub fn librosa_slaney(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<Vec<f32>> {
    let n_freqs = n_fft / 2 + 1;
    let d = 1.0 / f64::from(sample_rate);
    let val = 1.0 / (n_fft as f64 * d);
    let fft_freqs: Vec<f64> = (0..n_freqs).map(|k| k as f64 * val).collect();
    let mel_f: Vec<f64> = linspace(
        hz_to_mel(0.0),
        hz_to_mel(f64::from(sample_rate) / 2.0),
        n_mels + 2,
    )
    .into_iter()
    .map(mel_to_hz)
    .collect();
    let fdiff: Vec<f64> = mel_f.windows(2).map(|w| w[1] - w[0]).collect();
    (0..n_mels)
        .map(|i| {
            let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
            fft_freqs
                .iter()
                .map(|f| {
                    let lower = -(mel_f[i] - f) / fdiff[i];
                    let upper = (mel_f[i + 2] - f) / fdiff[i + 1];
                    let tri = 0f64.max(lower.min(upper)) as f32;
                    (f64::from(tri) * enorm) as f32
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_have_whisper_shape_and_values() {
        let m = librosa_slaney(16000, 400, 80);
        assert_eq!(m.len(), 80);
        assert!(m.iter().all(|row| row.len() == 201));
        // mel[0][1] as librosa computes it; the top bin lies beyond the last filter.
        assert!((m[0][1] - 0.024_862_594).abs() < 1e-6, "{}", m[0][1]);
        assert!(m[79][200].abs() < 1e-9);
        // Every filter has some weight, and no weight is negative.
        assert!(
            m.iter()
                .all(|row| row.iter().any(|w| *w > 0.0) && row.iter().all(|w| *w >= 0.0))
        );
    }
}
