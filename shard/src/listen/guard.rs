//! Hallucination guard: silence and noise must never become text.
//!
//! Whisper, fed noise or silence, invents plausible sentences ("Thank you.", "Thanks for
//! watching!"). Three independent checks stop that: an energy gate before decoding, the
//! model's own no-speech probability with a low-confidence decode, and a list of phrases
//! Whisper is known to produce from nothing.

/// Guard thresholds.
#[derive(Debug, Clone, Copy)]
pub struct GuardConfig {
    /// Audio quieter than this (RMS, dBFS) is not transcribed at all.
    pub min_rms_dbfs: f32,
    /// Reject when no-speech probability exceeds this and the decode is unsure.
    pub max_no_speech_prob: f32,
    /// Average token log-probability below which a decode counts as unsure.
    pub min_avg_logprob: f32,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            min_rms_dbfs: -50.0,
            max_no_speech_prob: 0.6,
            min_avg_logprob: -1.0,
        }
    }
}

/// Why a transcript was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rejection {
    /// Too quiet to be speech.
    Quiet,
    /// Whisper itself thinks there is no speech.
    NoSpeech,
    /// A phrase Whisper invents from silence or noise.
    Phantom,
    /// Nothing left after removing annotations like `[BLANK_AUDIO]`.
    Empty,
    /// No speech-to-text engine came free in time (the pod is overloaded).
    Overloaded,
}

impl Rejection {
    /// Bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Quiet => "quiet",
            Self::NoSpeech => "no_speech",
            Self::Phantom => "phantom",
            Self::Empty => "empty",
            Self::Overloaded => "overloaded",
        }
    }
}

/// Phrases Whisper produces from non-speech, compared after normalisation.
const PHANTOMS: &[&str] = &[
    "thank you",
    "thanks for watching",
    "thank you for watching",
    "thanks for listening",
    "thank you for listening",
    "please subscribe",
    "like and subscribe",
    "subtitles by the amaraorg community",
    "you",
    "bye",
    "so",
    "uh",
    "um",
    "hmm",
    "oh",
    "music",
    "applause",
];

/// Lower-case letters, digits and single spaces only.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        let w: String = word
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        if !w.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&w);
        }
    }
    out
}

/// Removes `[...]`, `(...)`, `*...*` annotations and music notes; trims.
pub fn strip_annotations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    let mut starred = false;
    for c in text.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            '*' => starred = !starred,
            '♪' | '♫' => {}
            _ if depth == 0 && !starred => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Collapses a phrase repeated three or more times in a row (a decoding loop) to one.
fn collapse_loops(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    for n in 1..=6 {
        if words.len() < 3 * n {
            break;
        }
        let mut out: Vec<&str> = Vec::new();
        let mut i = 0;
        let mut changed = false;
        while i < words.len() {
            let mut reps = 1;
            while i + (reps + 1) * n <= words.len()
                && (0..n).all(|k| normalize(words[i + k]) == normalize(words[i + reps * n + k]))
            {
                reps += 1;
            }
            if reps >= 3 && i + n <= words.len() {
                out.extend_from_slice(&words[i..i + n]);
                i += reps * n;
                changed = true;
            } else {
                out.push(words[i]);
                i += 1;
            }
        }
        if changed {
            return out.join(" ");
        }
    }
    text.to_string()
}

/// Drops a trailing echo of the transcript's own beginning ("What time is it? What time
/// is"): a decoding artefact when the encoder window is fitted to a short utterance.
fn trim_echo(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    for (i, w) in words.iter().enumerate().skip(1) {
        let tail = &words[i + 1..];
        if !w.ends_with(['.', '?', '!']) || tail.len() < 2 {
            continue;
        }
        let echoes = tail
            .iter()
            .zip(&words)
            .all(|(a, b)| normalize(a) == normalize(b));
        if echoes && tail.len() <= i + 1 {
            return words[..=i].join(" ");
        }
    }
    text.to_string()
}

/// Checks the audio before decoding.
pub fn check_audio(config: &GuardConfig, audio: &[f32]) -> Result<(), Rejection> {
    if crate::audio::rms_dbfs(audio) < config.min_rms_dbfs {
        Err(Rejection::Quiet)
    } else {
        Ok(())
    }
}

/// Checks (and cleans) a decoded transcript.
pub fn check_text(
    config: &GuardConfig,
    text: &str,
    no_speech_prob: f32,
    avg_logprob: f32,
) -> Result<String, Rejection> {
    if no_speech_prob > config.max_no_speech_prob && avg_logprob < config.min_avg_logprob {
        return Err(Rejection::NoSpeech);
    }
    let cleaned = trim_echo(&collapse_loops(&strip_annotations(text)));
    let norm = normalize(&cleaned);
    if norm.is_empty() {
        return Err(Rejection::Empty);
    }
    if PHANTOMS.contains(&norm.as_str()) {
        return Err(Rejection::Phantom);
    }
    Ok(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phantoms_and_annotations_are_dropped() {
        let g = GuardConfig::default();
        assert_eq!(
            check_text(&g, " Thank you.", 0.1, -0.2),
            Err(Rejection::Phantom)
        );
        assert_eq!(
            check_text(&g, "[BLANK_AUDIO]", 0.1, -0.2),
            Err(Rejection::Empty)
        );
        assert_eq!(
            check_text(&g, " (upbeat music) ♪", 0.1, -0.2),
            Err(Rejection::Empty)
        );
        assert_eq!(
            check_text(&g, "Hello there", 0.9, -1.5),
            Err(Rejection::NoSpeech)
        );
        assert_eq!(
            check_text(&g, " Hey Jarvis, thank you.", 0.1, -0.3).as_deref(),
            Ok("Hey Jarvis, thank you."),
            "a real sentence containing a phantom phrase stays"
        );
    }

    #[test]
    fn decoding_loops_collapse() {
        assert_eq!(collapse_loops("go go go go home"), "go home");
        assert_eq!(collapse_loops("I see. I see. I see. I see."), "I see.");
        assert_eq!(collapse_loops("one two three"), "one two three");
        // Seen from tiny.en on a 1.4 s clip of Piper saying "Two plus two is four.": the
        // loop runs into the token limit mid-phrase; the echo trim takes the rest.
        assert_eq!(
            check_text(
                &GuardConfig::default(),
                "2 plus 2 is 4. 2 plus 2 is 4. 2 plus 2 is 4. 2 plus 2 is 4. 2 plus",
                0.0,
                -0.2
            ),
            Ok("2 plus 2 is 4.".to_string())
        );
    }

    #[test]
    fn echoes_of_the_start_are_trimmed() {
        assert_eq!(
            trim_echo("What time is it in Tokyo? What time is"),
            "What time is it in Tokyo?"
        );
        assert_eq!(
            trim_echo("Stop. Stop it now."),
            "Stop. Stop it now.",
            "a real second sentence stays"
        );
        assert_eq!(trim_echo("Is it? Is it really?"), "Is it? Is it really?");
        assert_eq!(trim_echo("Hello there."), "Hello there.");
    }

    #[test]
    fn quiet_audio_is_gated() {
        let g = GuardConfig::default();
        assert_eq!(check_audio(&g, &[0.0; 1600]), Err(Rejection::Quiet));
        assert_eq!(check_audio(&g, &[]), Err(Rejection::Quiet));
        let loud: Vec<f32> = (0..1600).map(|i| ((i as f32) * 0.1).sin() * 0.3).collect();
        assert_eq!(check_audio(&g, &loud), Ok(()));
    }
}
