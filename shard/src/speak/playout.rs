//! The audio queue between speech synthesis and the voice connection: 20 ms frames out, and
//! on barge-in an immediate stop that knows which words were actually heard.

use std::collections::VecDeque;

/// What was spoken before a stop.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spoken {
    /// The text the listeners heard: whole sentences, then the heard share of the one cut off.
    pub text: String,
    /// Whether anything was cut off.
    pub interrupted: bool,
}

#[derive(Debug)]
struct Segment {
    text: String,
    /// Stream sample range of its audio.
    start: u64,
    end: u64,
}

/// A queue of sentence audio, played out in fixed frames.
#[derive(Debug)]
pub struct Playout {
    frame: usize,
    queue: VecDeque<f32>,
    segments: VecDeque<Segment>,
    /// Samples queued so far (stream position of the queue's end).
    queued: u64,
    /// Samples played so far.
    played: u64,
    spoken: String,
}

impl Playout {
    /// A queue handing out frames of `frame` samples (960 = 20 ms at 48 kHz).
    pub fn new(frame: usize) -> Self {
        Self {
            frame: frame.max(1),
            queue: VecDeque::new(),
            segments: VecDeque::new(),
            queued: 0,
            played: 0,
            spoken: String::new(),
        }
    }

    /// Queues a sentence's audio (already at the output rate).
    pub fn push(&mut self, text: &str, audio: &[f32]) {
        let start = self.queued;
        self.queue.extend(audio);
        self.queued += audio.len() as u64;
        self.segments.push_back(Segment {
            text: text.to_string(),
            start,
            end: self.queued,
        });
    }

    /// Whether audio is waiting.
    pub fn is_playing(&self) -> bool {
        !self.queue.is_empty()
    }

    /// The next frame (zero-padded at the end of the queue); `None` when idle.
    pub fn next_frame(&mut self) -> Option<Vec<f32>> {
        if self.queue.is_empty() {
            return None;
        }
        let n = self.frame.min(self.queue.len());
        let mut frame: Vec<f32> = self.queue.drain(..n).collect();
        frame.resize(self.frame, 0.0);
        self.played += n as u64;
        while self.segments.front().is_some_and(|s| s.end <= self.played) {
            if let Some(s) = self.segments.pop_front() {
                self.append_spoken(&s.text);
            }
        }
        Some(frame)
    }

    fn append_spoken(&mut self, text: &str) {
        if !text.is_empty() {
            if !self.spoken.is_empty() {
                self.spoken.push(' ');
            }
            self.spoken.push_str(text);
        }
    }

    /// Stops at once (barge-in): drops everything queued and reports what was heard, the
    /// sentence being played cut at the share of its audio that went out.
    pub fn stop(&mut self) -> Spoken {
        let interrupted = !self.queue.is_empty();
        if let Some(current) = self.segments.pop_front() {
            let len = (current.end - current.start).max(1);
            let heard = self.played.saturating_sub(current.start).min(len);
            let words: Vec<&str> = current.text.split_whitespace().collect();
            let n = (words.len() as u64 * heard / len) as usize;
            if n > 0 {
                let partial = format!("{}…", words[..n].join(" "));
                self.append_spoken(&partial);
            }
        }
        self.segments.clear();
        self.queue.clear();
        self.queued = self.played;
        Spoken {
            text: std::mem::take(&mut self.spoken),
            interrupted,
        }
    }

    /// Ends a reply that played out completely: what was heard.
    pub fn take_spoken(&mut self) -> String {
        std::mem::take(&mut self.spoken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_whole_and_sentences_are_marked_heard() {
        let mut p = Playout::new(10);
        p.push("One two.", &[0.1; 25]);
        p.push("Three four five six.", &[0.2; 40]);
        let f = p.next_frame().unwrap();
        assert_eq!(f.len(), 10);
        p.next_frame();
        p.next_frame(); // 30 samples: the first sentence (25) is done
        assert!(p.is_playing());
        // Barge-in halfway through the second sentence (played 30 of 65; 5 of its 40).
        p.next_frame();
        p.next_frame(); // played 50: 25 of 40 of the second sentence
        let spoken = p.stop();
        assert!(spoken.interrupted);
        assert_eq!(spoken.text, "One two. Three four…");
        assert!(
            !p.is_playing() && p.next_frame().is_none(),
            "nothing plays after the stop"
        );
    }

    #[test]
    fn a_reply_played_to_the_end_is_all_heard() {
        let mut p = Playout::new(4);
        p.push("Sure.", &[0.5; 6]);
        while p.next_frame().is_some() {}
        assert_eq!(p.take_spoken(), "Sure.");
        assert_eq!(p.stop(), Spoken::default());
    }
}
