//! The cell in which `error_labels` keeps a sentence for practice.

use chrono::{DateTime, Utc};
use scylla::deserialize::value::DeserializeValue;
use scylla::deserialize::{DeserializationError, FrameSlice, TypeCheckError};
use scylla::frame::response::result::ColumnType;
use scylla::serialize::value::SerializeValue;
use scylla::serialize::writers::{CellWriter, WrittenCellProof};
use scylla::serialize::SerializationError;
use scylla::value::CqlTimestamp;
use uuid::Uuid;

use crate::domain::{Correction, ErrorKey};
use crate::store::cql::session::{from_timestamp, timestamp};
use crate::store::policy::MAX_PRACTISED_CORRECTION;
use crate::store::RecentError;

/// An error's sentence in `error_labels.sentences`, a CQL
/// `tuple<timestamp, uuid, uuid, text, text, text>`: when it was said, the
/// conversation and utterance, the utterance's snippet, the correction and
/// its explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceCell {
    pub said_at: CqlTimestamp,
    pub conversation_id: Uuid,
    pub utterance_id: Uuid,
    pub snippet: Option<String>,
    pub correction: Option<String>,
    pub explanation: Option<String>,
}

/// The cell's CQL form.
type SentenceTuple = (
    CqlTimestamp,
    Uuid,
    Uuid,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl SerializeValue for SentenceCell {
    fn serialize<'b>(
        &self,
        typ: &ColumnType,
        writer: CellWriter<'b>,
    ) -> Result<WrittenCellProof<'b>, SerializationError> {
        (
            &self.said_at,
            &self.conversation_id,
            &self.utterance_id,
            &self.snippet,
            &self.correction,
            &self.explanation,
        )
            .serialize(typ, writer)
    }
}

impl<'frame, 'metadata> DeserializeValue<'frame, 'metadata> for SentenceCell {
    fn type_check(typ: &ColumnType) -> Result<(), TypeCheckError> {
        <SentenceTuple as DeserializeValue>::type_check(typ)
    }

    fn deserialize(
        typ: &'metadata ColumnType<'metadata>,
        v: Option<FrameSlice<'frame>>,
    ) -> Result<Self, DeserializationError> {
        let (said_at, conversation_id, utterance_id, snippet, correction, explanation) =
            <SentenceTuple as DeserializeValue>::deserialize(typ, v)?;
        Ok(Self {
            said_at,
            conversation_id,
            utterance_id,
            snippet,
            correction,
            explanation,
        })
    }
}

impl SentenceCell {
    /// The cell that keeps a sentence for practice, said at `at` in this
    /// utterance (whose snippet is `snippet`) and corrected as
    /// `correction`; `None` when it cannot be practised: no text to show,
    /// or no correction, or one longer than [`MAX_PRACTISED_CORRECTION`]
    /// characters. The one rule for the ingest and for repair's refill.
    pub fn practised(
        at: DateTime<Utc>,
        conversation_id: Uuid,
        utterance_id: Uuid,
        snippet: Option<&str>,
        correction: &Correction,
    ) -> Option<Self> {
        let text = snippet.filter(|t| !t.trim().is_empty())?;
        let fix = correction.text.as_deref()?;
        if fix.chars().count() > MAX_PRACTISED_CORRECTION {
            return None;
        }
        Some(Self {
            said_at: timestamp(at),
            conversation_id,
            utterance_id,
            snippet: Some(text.to_owned()),
            correction: Some(fix.to_owned()),
            explanation: correction.explanation.clone(),
        })
    }

    /// The text bytes the cell carries.
    pub fn text_bytes(&self) -> usize {
        [&self.snippet, &self.correction, &self.explanation]
            .into_iter()
            .map(|s| s.as_ref().map_or(0, String::len))
            .sum()
    }

    /// The kept sentence as the event it came from, in the spelling the
    /// learner's label shows.
    pub fn into_recent(self, key: &ErrorKey, category: &str, subcategory: &str) -> RecentError {
        RecentError {
            key: key.clone(),
            category: category.to_owned(),
            subcategory: subcategory.to_owned(),
            conversation_id: self.conversation_id,
            utterance_id: self.utterance_id,
            utterance: self.snippet,
            correction: Correction {
                text: self.correction,
                explanation: self.explanation,
            },
            occurred_at: from_timestamp(self.said_at),
        }
    }
}
