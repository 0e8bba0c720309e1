//! What a practice request asks a store for, and what it gets back.

use super::sentences::SentencePicker;
use super::RecentError;
use crate::domain::{ErrorFrequency, OwnSentence, Rank};

/// What a practice request is built from: the learner's top errors and,
/// for each, their own latest sentences that carried it and whose
/// correction is known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PracticeInputs {
    /// In rank order (empty when the learner has no errors yet).
    pub top: Vec<ErrorFrequency>,
    /// For each of `top`, in the same order: the latest distinct sentences
    /// (by utterance) that carried it with a correction, newest first.
    pub sentences: Vec<Vec<OwnSentence>>,
    /// For `Rank::Recent`, each top error's decayed score (else empty).
    pub scores: Vec<f64>,
}

/// How far back, and for how many sentences, a practice request looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PracticeQuery {
    /// How many top errors.
    pub top_n: usize,
    /// At most this many of the learner's own sentences per top error.
    pub sentences_per_error: usize,
    /// Only the latest `window` error events are searched for sentences.
    pub window: usize,
    pub rank: Rank,
}

impl PracticeInputs {
    /// Picks the sentences for `top` from the latest events (newest first):
    /// for each error, its first `per_error` distinct utterances with text.
    pub fn from_recent(top: Vec<ErrorFrequency>, recent: &[RecentError], per_error: usize) -> Self {
        let mut picker = SentencePicker::new(top, per_error);
        for event in recent {
            if let Some(i) = picker.wants(&event.key.category, &event.key.subcategory) {
                picker.offer(
                    i,
                    event.utterance_id,
                    event.utterance.as_deref(),
                    &event.correction,
                );
            }
        }
        picker.finish()
    }
}
