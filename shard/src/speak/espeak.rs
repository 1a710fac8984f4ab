//! Phonemes from Debian's espeak-ng library (`libespeak-ng`), as Piper voices were trained on.
//!
//! The library keeps global state and is not thread-safe: every call goes through one mutex.
//! `espeak_TextToPhonemes` handles one clause per call and drops its punctuation, so clauses
//! are cut here and their punctuation put back between them (Piper's voices have ids for it).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::sync::Mutex;

#[link(name = "espeak-ng")]
unsafe extern "C" {
    fn espeak_Initialize(
        output: c_int,
        buflength: c_int,
        path: *const c_char,
        options: c_int,
    ) -> c_int;
    fn espeak_SetVoiceByName(name: *const c_char) -> c_int;
    fn espeak_TextToPhonemes(
        textptr: *mut *const c_void,
        textmode: c_int,
        phonememode: c_int,
    ) -> *const c_char;
    fn espeak_SetSynthCallback(cb: SynthCallback);
    fn espeak_Synth(
        text: *const c_void,
        size: usize,
        position: u32,
        position_type: c_int,
        end_position: u32,
        flags: u32,
        unique_identifier: *mut u32,
        user_data: *mut c_void,
    ) -> c_int;
}

/// `int (*)(short *wav, int numsamples, espeak_EVENT *events)`; events are not read.
type SynthCallback = unsafe extern "C" fn(*mut i16, c_int, *mut c_void) -> c_int;

const POS_CHARACTER: c_int = 1;

const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
const ESPEAK_CHARS_UTF8: c_int = 1;
const PHONEMES_IPA: c_int = 0x02;
const INITIALIZE_DONT_EXIT: c_int = 0x8000;

struct State {
    voice: Option<String>,
    /// The synthesiser's output rate (from `espeak_Initialize`).
    rate: u32,
}

thread_local! {
    /// Samples of the synthesis in progress on this thread (the callback runs on the caller's
    /// thread in synchronous mode, inside the mutex).
    static SYNTH: std::cell::RefCell<Vec<i16>> = const { std::cell::RefCell::new(Vec::new()) };
}

unsafe extern "C" fn collect(wav: *mut i16, n: c_int, _events: *mut c_void) -> c_int {
    if !wav.is_null() && n > 0 {
        // SAFETY: espeak passes `n` valid samples at `wav` for the duration of the call.
        let samples = unsafe { std::slice::from_raw_parts(wav, n as usize) };
        SYNTH.with(|b| b.borrow_mut().extend_from_slice(samples));
    }
    0 // continue
}

static ESPEAK: Mutex<Option<State>> = Mutex::new(None);

/// Why phonemisation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EspeakError {
    /// The library could not start (no data files?).
    #[error("espeak-ng could not initialise (is the espeak-ng-data package installed?)")]
    Init,
    /// The voice is unknown.
    #[error("espeak-ng has no voice {0:?}")]
    Voice(String),
    /// Synthesis failed (espeak's status code).
    #[error("espeak-ng synthesis failed ({0})")]
    Synth(i32),
}

/// Clauses of `text` with the punctuation that ended each (if any).
fn clauses(text: &str) -> Vec<(String, Option<char>)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if matches!(c, ',' | '.' | ';' | ':' | '!' | '?') {
            out.push((std::mem::take(&mut cur), Some(c)));
        } else {
            cur.push(c);
        }
    }
    out.push((cur, None));
    out.retain(|(t, p)| !t.trim().is_empty() || p.is_some());
    out
}

/// Starts the library on first use and selects `voice`; the output rate.
fn select(guard: &mut Option<State>, voice: &str) -> Result<u32, EspeakError> {
    if guard.is_none() {
        // SAFETY: a null path means the default data directory; the call has no other
        // preconditions and is serialised by the mutex.
        let rate = unsafe {
            espeak_Initialize(
                AUDIO_OUTPUT_SYNCHRONOUS,
                0,
                std::ptr::null(),
                INITIALIZE_DONT_EXIT,
            )
        };
        if rate <= 0 {
            return Err(EspeakError::Init);
        }
        // SAFETY: `collect` has the signature espeak expects and outlives the library.
        unsafe { espeak_SetSynthCallback(collect) };
        *guard = Some(State {
            voice: None,
            rate: rate as u32,
        });
    }
    let state = guard.as_mut().ok_or(EspeakError::Init)?;
    if state.voice.as_deref() != Some(voice) {
        let name = CString::new(voice).map_err(|_| EspeakError::Voice(voice.to_string()))?;
        // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
        if unsafe { espeak_SetVoiceByName(name.as_ptr()) } != 0 {
            return Err(EspeakError::Voice(voice.to_string()));
        }
        state.voice = Some(voice.to_string());
    }
    Ok(state.rate)
}

/// Checks that `voice` exists (e.g. `en-us+f3`: a language and a variant); its output rate.
pub fn check_voice(voice: &str) -> Result<u32, EspeakError> {
    let mut guard = ESPEAK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    select(&mut guard, voice)
}

/// Speech for `text` in espeak-ng's own (formant) voice `voice`: mono samples in -1..1 at the
/// returned rate. A second local voice beside Piper's, from the same library.
pub fn synthesize(text: &str, voice: &str) -> Result<(Vec<f32>, u32), EspeakError> {
    let mut guard = ESPEAK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rate = select(&mut guard, voice)?;
    let c = CString::new(text.replace('\0', " ")).unwrap_or_default();
    let bytes = c.as_bytes_with_nul();
    SYNTH.with(|b| b.borrow_mut().clear());
    // SAFETY: `c` is a NUL-terminated UTF-8 string alive for the call; synchronous mode
    // returns when the text is spoken, having called `collect` on this thread.
    let status = unsafe {
        espeak_Synth(
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            POS_CHARACTER,
            0,
            ESPEAK_CHARS_UTF8 as u32,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    let samples = SYNTH.with(|b| std::mem::take(&mut *b.borrow_mut()));
    if status != 0 {
        return Err(EspeakError::Synth(status));
    }
    Ok((
        samples
            .into_iter()
            .map(|s| f32::from(s) / 32768.0)
            .collect(),
        rate,
    ))
}

/// IPA phonemes of `text` for `voice` (e.g. `en-us`), with clause punctuation kept.
pub fn phonemize(text: &str, voice: &str) -> Result<String, EspeakError> {
    let mut guard = ESPEAK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    select(&mut guard, voice)?;
    let mut out = String::new();
    for (clause, punct) in clauses(text) {
        let words = clause.trim();
        if !words.is_empty() {
            // Interior NULs cannot be passed; they carry no speech anyway.
            let c = CString::new(words.replace('\0', " ")).unwrap_or_default();
            let mut ptr: *const c_void = c.as_ptr().cast();
            while !ptr.is_null() {
                // SAFETY: `ptr` points into `c` (alive for the loop) or is advanced by espeak
                // within it, and is null when the text is consumed; the returned string is
                // owned by espeak and copied before the next call.
                let phonemes =
                    unsafe { espeak_TextToPhonemes(&mut ptr, ESPEAK_CHARS_UTF8, PHONEMES_IPA) };
                if phonemes.is_null() {
                    break;
                }
                // SAFETY: espeak returns a NUL-terminated string.
                let p = unsafe { CStr::from_ptr(phonemes) }.to_string_lossy();
                let p = p.trim();
                if !p.is_empty() {
                    if !out.is_empty() && !out.ends_with(' ') {
                        out.push(' ');
                    }
                    out.push_str(p);
                }
            }
        }
        if let Some(p) = punct {
            out.push(p);
            out.push(' ');
        }
    }
    // The CLI's ties (U+200D) never appear in IPA mode without the tie flag; strip them anyway.
    Ok(out.replace('\u{200d}', "").trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_keep_their_punctuation() {
        assert_eq!(
            clauses("Hello, world. Bye"),
            vec![
                ("Hello".into(), Some(',')),
                (" world".into(), Some('.')),
                (" Bye".into(), None)
            ]
        );
    }

    #[test]
    fn phonemes_are_ipa_with_punctuation() {
        let p =
            phonemize("Hello, world.", "en-us").expect("espeak-ng (scripts/setup.sh installs it)");
        assert!(p.contains("həl") || p.contains("hɛl"), "{p}");
        assert!(p.contains(',') && p.ends_with('.'), "{p}");
        assert!(phonemize("x", "no-such-voice-xx").is_err());
    }

    #[test]
    fn espeak_speaks_in_its_own_voices_and_still_phonemizes() {
        let (audio, rate) = synthesize("Hello there, how are you?", "en-us+f3").unwrap();
        let secs = audio.len() as f32 / rate as f32;
        assert!((0.8..4.0).contains(&secs), "{secs} s at {rate} Hz");
        let peak = audio.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!(peak > 0.05, "silent: peak {peak}");
        // Switching voices back and forth leaves the phonemes as they were.
        let p = phonemize("Hello, world.", "en-us").unwrap();
        assert!(p.contains("həl") || p.contains("hɛl"), "{p}");
        assert!(synthesize("x", "no-such-voice-xx").is_err());
        assert!(check_voice("en-us+f3").is_ok());
        let (empty, _) = synthesize("", "en-us+f3").unwrap();
        assert!(empty.len() < rate as usize / 2);
    }
}
