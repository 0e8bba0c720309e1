//! The sentence-picking rule: which of a learner's own sentences go with
//! each of their top errors. Fed the learner's latest error events, newest
//! first, it gives each error the first `per_error` distinct utterances
//! that carried it, have text, and whose event has a correction (only a
//! sentence whose correction is known can be graded).
//!
//! It takes one event at a time, so that a backend reading events from its
//! database can stop as soon as every error has its sentences, and look up
//! an utterance's text only for an event that may add it.

use uuid::Uuid;

use super::PracticeInputs;
use crate::domain::{Correction, ErrorFrequency, OwnSentence};

pub struct SentencePicker {
    top: Vec<ErrorFrequency>,
    /// For each of `top`, in the same order.
    sentences: Vec<Vec<OwnSentence>>,
    per_error: usize,
    /// How many of `top` still want sentences.
    wanting: usize,
}

impl SentencePicker {
    pub fn new(top: Vec<ErrorFrequency>, per_error: usize) -> Self {
        Self {
            sentences: vec![Vec::new(); top.len()],
            wanting: if per_error == 0 { 0 } else { top.len() },
            top,
            per_error,
        }
    }

    /// The top error (its index) that an event with these keys could add
    /// a sentence to: `None` when the error is not a top one or has all its
    /// sentences.
    pub fn wants(&self, category_key: &str, subcategory_key: &str) -> Option<usize> {
        let i = self
            .top
            .iter()
            .position(|e| e.key.category == category_key && e.key.subcategory == subcategory_key)?;
        (self.sentences[i].len() < self.per_error).then_some(i)
    }

    /// Offers the top error `i` (from [`Self::wants`]) an event's
    /// utterance: it is taken unless it has no text to show, its event no
    /// correction, or it is already one of that error's sentences.
    pub fn offer(
        &mut self,
        i: usize,
        utterance_id: Uuid,
        text: Option<&str>,
        correction: &Correction,
    ) {
        let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
            return;
        };
        let Some(corrected) = &correction.text else {
            return;
        };
        let own = &mut self.sentences[i];
        if own.len() >= self.per_error || own.iter().any(|s| s.utterance_id == utterance_id) {
            return;
        }
        own.push(OwnSentence {
            utterance_id,
            text: text.to_owned(),
            correction: corrected.clone(),
            explanation: correction.explanation.clone(),
        });
        if own.len() == self.per_error {
            self.wanting -= 1;
        }
    }

    /// Every top error has all its sentences: later events change nothing.
    pub fn is_done(&self) -> bool {
        self.wanting == 0
    }

    pub fn finish(self) -> PracticeInputs {
        PracticeInputs {
            top: self.top,
            sentences: self.sentences,
            scores: Vec::new(),
        }
    }
}
