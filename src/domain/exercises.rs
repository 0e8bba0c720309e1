//! Practice items for a learner's top errors: drawn from the exercise bank
//! shipped in `exercises/bank.json`, and built from sentences the learner
//! actually said, rotated so consecutive calls do not repeat themselves.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ErrorFrequency, ErrorKey, ErrorName};

/// The bank shipped with errata.
const BANK_JSON: &str = include_str!("../../exercises/bank.json");

/// Longest part of a learner's sentence quoted back in an exercise.
const MAX_QUOTED_CHARS: usize = 400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExerciseKind {
    MultipleChoice,
    FillInTheBlank,
    CorrectTheSentence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExerciseSource {
    /// From the shipped exercise bank.
    Bank,
    /// Built from a sentence the learner said that carried this error.
    YourUtterance,
}

/// One practice item, as served to the app.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Exercise {
    pub exercise_id: String,
    #[serde(rename = "errorCategory")]
    pub error_category: String,
    #[serde(rename = "errorSubCategory")]
    pub error_sub_category: String,
    pub kind: ExerciseKind,
    pub prompt: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    /// The expected answer, always given: for the learner's own sentence
    /// it is the correction the AI proposed.
    pub answer: String,
    pub explanation: String,
    pub source: ExerciseSource,
}

/// A sentence the learner said that carried a given error, with the
/// correction the AI proposed for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnSentence {
    pub utterance_id: Uuid,
    pub text: String,
    pub correction: String,
    pub explanation: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BankItem {
    id: String,
    kind: ExerciseKind,
    prompt: String,
    #[serde(default)]
    options: Option<Vec<String>>,
    answer: String,
    explanation: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BankGroup {
    category: String,
    subcategory: String,
    #[serde(default)]
    aliases: Vec<String>,
    items: Vec<BankItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BankFile {
    subcategories: Vec<BankGroup>,
    fallback: Vec<BankItem>,
}

/// Why a bank file was refused.
#[derive(Debug, thiserror::Error)]
pub enum BankError {
    #[error("exercise bank is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("exercise bank is inconsistent: {0}")]
    Invalid(String),
}

/// The exercise bank, indexed by error identity.
#[derive(Debug)]
pub struct ExerciseBank {
    groups: Vec<Vec<BankItem>>,
    by_key: HashMap<ErrorKey, usize>,
    by_subcategory: HashMap<String, usize>,
    fallback: Vec<BankItem>,
}

impl ExerciseBank {
    /// The bank shipped in the repository.
    pub fn shipped() -> Result<Self, BankError> {
        Self::from_json(BANK_JSON)
    }

    pub fn from_json(json: &str) -> Result<Self, BankError> {
        let file: BankFile = serde_json::from_str(json)?;
        let invalid = |msg: String| BankError::Invalid(msg);
        if file.fallback.is_empty() {
            return Err(invalid("the fallback list is empty".into()));
        }
        let mut ids = HashSet::new();
        let all_items = file
            .subcategories
            .iter()
            .flat_map(|g| g.items.iter())
            .chain(file.fallback.iter());
        for item in all_items {
            if !ids.insert(item.id.as_str()) {
                return Err(invalid(format!("duplicate exercise id {:?}", item.id)));
            }
            match (&item.kind, &item.options) {
                (ExerciseKind::MultipleChoice, Some(options)) if options.contains(&item.answer) => {
                }
                (ExerciseKind::MultipleChoice, _) => {
                    return Err(invalid(format!(
                        "{}: a multiple-choice answer must be one of its options",
                        item.id
                    )))
                }
                (_, Some(_)) => {
                    return Err(invalid(format!(
                        "{}: only multiple-choice items have options",
                        item.id
                    )))
                }
                (_, None) => {}
            }
        }

        let mut bank = Self {
            groups: Vec::with_capacity(file.subcategories.len()),
            by_key: HashMap::new(),
            by_subcategory: HashMap::new(),
            fallback: file.fallback,
        };
        for (index, group) in file.subcategories.into_iter().enumerate() {
            if group.items.is_empty() {
                return Err(invalid(format!("{} has no items", group.subcategory)));
            }
            let category = parse_name(&group.category)?;
            for name in std::iter::once(&group.subcategory).chain(&group.aliases) {
                let subcategory = parse_name(name)?;
                let key = ErrorKey {
                    category: category.key().to_owned(),
                    subcategory: subcategory.key().to_owned(),
                };
                if bank.by_key.insert(key, index).is_some() {
                    return Err(invalid(format!("{name} is listed twice")));
                }
                bank.by_subcategory
                    .entry(subcategory.key().to_owned())
                    .or_insert(index);
            }
            bank.groups.push(group.items);
        }
        Ok(bank)
    }

    /// How many subcategories have items of their own.
    pub fn subcategory_count(&self) -> usize {
        self.groups.len()
    }

    /// Bank items for an error: its own group when the bank knows it (by
    /// category and subcategory, else by subcategory alone), otherwise the
    /// generic fallback.
    fn group_for(&self, key: &ErrorKey) -> Option<&[BankItem]> {
        self.by_key
            .get(key)
            .or_else(|| self.by_subcategory.get(&key.subcategory))
            .map(|&index| self.groups[index].as_slice())
    }

    /// The answer key of the bank exercise `exercise_id` when it is asked
    /// for the error `error` (a fallback item names the error in its
    /// answer); `None` when the bank has no such exercise.
    pub fn answer_key(&self, exercise_id: &str, error: &ErrorFrequency) -> Option<String> {
        if let Some(item) = self.fallback.iter().find(|i| i.id == exercise_id) {
            return Some(bank_exercise(item, error, Some(error)).answer);
        }
        self.groups
            .iter()
            .flatten()
            .find(|i| i.id == exercise_id)
            .map(|item| item.answer.clone())
    }

    /// `per_error` exercises for one of the learner's errors. The candidates
    /// alternate between the learner's own sentences and bank items; `round`
    /// (one per call, per learner) moves the window along them so that
    /// consecutive calls show different items.
    pub fn exercises_for(
        &self,
        error: &ErrorFrequency,
        own_sentences: &[OwnSentence],
        per_error: usize,
        round: u64,
    ) -> Vec<Exercise> {
        // Candidates are chosen by reference and only the ones shown are
        // built: building an exercise clones and fills several strings.
        let (items, placeholders) = match self.group_for(&error.key) {
            Some(items) => (items, None),
            None => (self.fallback.as_slice(), Some(error)),
        };
        let mut pool: Vec<Candidate<'_>> = Vec::with_capacity(own_sentences.len() + items.len());
        let (mut own, mut bank) = (own_sentences.iter(), items.iter());
        loop {
            match (own.next(), bank.next()) {
                (None, None) => break,
                (a, b) => pool.extend(
                    a.map(Candidate::Own)
                        .into_iter()
                        .chain(b.map(Candidate::Bank)),
                ),
            }
        }

        let take = per_error.min(pool.len());
        if take == 0 {
            return Vec::new();
        }
        let start = (round % pool.len() as u64) as usize * per_error % pool.len();
        pool.iter()
            .cycle()
            .skip(start)
            .take(take)
            .map(|candidate| match candidate {
                Candidate::Own(sentence) => own_exercise(sentence, error),
                Candidate::Bank(item) => bank_exercise(item, error, placeholders),
            })
            .collect()
    }
}

/// An exercise not built yet: the learner's sentence or a bank item.
enum Candidate<'a> {
    Own(&'a OwnSentence),
    Bank(&'a BankItem),
}

fn parse_name(raw: &str) -> Result<ErrorName, BankError> {
    ErrorName::parse(raw).map_err(|e| BankError::Invalid(format!("{raw:?}: {e}")))
}

fn bank_exercise(
    item: &BankItem,
    error: &ErrorFrequency,
    placeholders: Option<&ErrorFrequency>,
) -> Exercise {
    let fill = |text: &str| match placeholders {
        Some(e) => text
            .replace("{category}", &e.category)
            .replace("{subcategory}", &e.subcategory),
        None => text.to_owned(),
    };
    Exercise {
        exercise_id: item.id.clone(),
        error_category: error.category.clone(),
        error_sub_category: error.subcategory.clone(),
        kind: item.kind,
        prompt: fill(&item.prompt),
        options: item.options.clone(),
        answer: fill(&item.answer),
        explanation: fill(&item.explanation),
        source: ExerciseSource::Bank,
    }
}

/// The id of the exercise built from a sentence for one of its errors.
/// One sentence can carry several errors: the id names both, so it is
/// unique within a response and stable across calls.
pub fn own_exercise_id(utterance_id: Uuid, key: &ErrorKey) -> String {
    format!(
        "utterance-{utterance_id}-{}",
        &Uuid::new_v5(&utterance_id, key.encode().as_bytes())
            .simple()
            .to_string()[..8]
    )
}

fn own_exercise(sentence: &OwnSentence, error: &ErrorFrequency) -> Exercise {
    let text = sentence
        .text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let quoted: String = if text.chars().count() > MAX_QUOTED_CHARS {
        text.chars().take(MAX_QUOTED_CHARS).chain(['…']).collect()
    } else {
        text
    };
    Exercise {
        exercise_id: own_exercise_id(sentence.utterance_id, &error.key),
        error_category: error.category.clone(),
        error_sub_category: error.subcategory.clone(),
        kind: ExerciseKind::CorrectTheSentence,
        prompt: format!("Correct this sentence you said: \"{quoted}\""),
        options: None,
        answer: sentence.correction.clone(),
        explanation: sentence.explanation.clone().unwrap_or_else(|| {
            format!(
                "This sentence had a {} / {} error.",
                error.category, error.subcategory
            )
        }),
        source: ExerciseSource::YourUtterance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(category: &str, subcategory: &str) -> ErrorFrequency {
        ErrorFrequency {
            key: ErrorKey {
                category: ErrorName::parse(category).unwrap().key().to_owned(),
                subcategory: ErrorName::parse(subcategory).unwrap().key().to_owned(),
            },
            category: category.into(),
            subcategory: subcategory.into(),
            frequency: 1,
            last_seen: None,
        }
    }

    fn ids(v: &[Exercise]) -> Vec<String> {
        v.iter().map(|e| e.exercise_id.clone()).collect()
    }

    fn sentence(text: &str) -> OwnSentence {
        OwnSentence {
            utterance_id: Uuid::new_v4(),
            text: text.into(),
            correction: format!("{text} (corrected)"),
            explanation: None,
        }
    }

    #[test]
    fn the_shipped_bank_covers_the_four_categories() {
        let bank = ExerciseBank::shipped().unwrap();
        assert!(bank.subcategory_count() >= 20);
        for category in ["Grammar", "Vocabulary", "Pronunciation", "Fluency"] {
            let covered = bank
                .by_key
                .keys()
                .filter(|k| k.category == category.to_lowercase());
            assert!(covered.count() >= 3, "{category} has too few subcategories");
        }
        assert!(bank.groups.iter().all(|g| g.len() >= 3));
    }

    #[test]
    fn known_subcategories_match_case_and_spacing_insensitively() {
        let bank = ExerciseBank::shipped().unwrap();
        let items = bank.exercises_for(&error("grammar", "subject-verb  AGREEMENT"), &[], 3, 0);
        assert_eq!(items.len(), 3);
        assert!(items.iter().all(|e| e.source == ExerciseSource::Bank));
        assert!(items.iter().all(|e| e.exercise_id.starts_with("grammar-")));
        assert!(items
            .iter()
            .all(|e| e.error_sub_category == "subject-verb  AGREEMENT"));
    }

    #[test]
    fn unknown_subcategories_get_the_fallback_with_names_filled_in() {
        let bank = ExerciseBank::shipped().unwrap();
        let items = bank.exercises_for(&error("Style", "Register {x}"), &[], 2, 0);
        assert_eq!(items.len(), 2);
        for item in &items {
            assert!(item.exercise_id.starts_with("fallback"));
            assert!(!item.prompt.contains("{subcategory}") && !item.prompt.contains("{category}"));
            assert!(!item.explanation.contains("{subcategory}"));
        }
    }

    #[test]
    fn consecutive_rounds_rotate_through_every_item() {
        let bank = ExerciseBank::shipped().unwrap();
        let err = error("Grammar", "Subject-Verb Agreement");
        let own = [sentence("He go to school."), sentence("She don't know.")];
        let pool_len = bank.group_for(&err.key).unwrap().len() + own.len();
        let per_error = 2;
        let mut seen = HashSet::new();
        let mut previous = Vec::new();
        for round in 0..pool_len as u64 {
            let items = ids(&bank.exercises_for(&err, &own, per_error, round));
            assert_eq!(items.len(), per_error);
            assert!(
                items.iter().all(|id| !previous.contains(id)),
                "round {round} repeats"
            );
            seen.extend(items.clone());
            previous = items;
        }
        assert_eq!(seen.len(), pool_len, "some items were never shown");
    }

    #[test]
    fn the_learners_own_sentence_is_quoted_in_a_correction_item() {
        let bank = ExerciseBank::shipped().unwrap();
        let err = error("Grammar", "Subject-Verb Agreement");
        let own = [sentence("He   go to\nschool every day.")];
        let items = bank.exercises_for(&err, &own, 2, 0);
        let mine: Vec<_> = items
            .iter()
            .filter(|e| e.source == ExerciseSource::YourUtterance)
            .collect();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].kind, ExerciseKind::CorrectTheSentence);
        assert!(mine[0].prompt.contains("\"He go to school every day.\""));
        assert_eq!(mine[0].answer, own[0].correction);
        assert_eq!(
            mine[0].explanation,
            "This sentence had a Grammar / Subject-Verb Agreement error."
        );
        assert!(mine[0]
            .exercise_id
            .starts_with(&format!("utterance-{}-", own[0].utterance_id)));
        let other = bank.exercises_for(&error("Grammar", "Verb Tense"), &own, 2, 0);
        let other_id = &other
            .iter()
            .find(|e| e.source == ExerciseSource::YourUtterance)
            .unwrap()
            .exercise_id;
        assert_ne!(other_id, &mine[0].exercise_id, "ids must differ per error");
    }

    #[test]
    fn the_ais_explanation_is_the_explanation_of_an_own_sentence() {
        let bank = ExerciseBank::shipped().unwrap();
        let err = error("Grammar", "Verb Tense");
        let mut own = sentence("Yesterday I go home.");
        own.correction = "Yesterday I went home.".into();
        own.explanation = Some("Past events take the past tense.".into());
        let items = bank.exercises_for(&err, std::slice::from_ref(&own), 2, 0);
        let mine = items
            .iter()
            .find(|e| e.source == ExerciseSource::YourUtterance)
            .unwrap();
        assert_eq!(mine.answer, "Yesterday I went home.");
        assert_eq!(mine.explanation, "Past events take the past tense.");
        assert!(items.iter().all(|e| !e.answer.is_empty()));
    }

    #[test]
    fn asking_for_more_than_the_pool_gives_each_item_once() {
        let bank = ExerciseBank::shipped().unwrap();
        let err = error("Grammar", "Subject-Verb Agreement");
        let pool_len = bank.group_for(&err.key).unwrap().len();
        let items = ids(&bank.exercises_for(&err, &[], 50, 7));
        assert_eq!(items.len(), pool_len);
        assert_eq!(items.iter().collect::<HashSet<_>>().len(), pool_len);
    }

    #[test]
    fn inconsistent_banks_are_refused() {
        let no_fallback = r#"{"subcategories": [], "fallback": []}"#;
        assert!(ExerciseBank::from_json(no_fallback).is_err());
        let bad_choice = r#"{"subcategories": [], "fallback": [
            {"id": "f", "kind": "multiple_choice", "prompt": "p", "options": ["a"], "answer": "b", "explanation": "e"}]}"#;
        assert!(ExerciseBank::from_json(bad_choice).is_err());
        let duplicate = r#"{"subcategories": [], "fallback": [
            {"id": "f", "kind": "fill_in_the_blank", "prompt": "p", "answer": "b", "explanation": "e"},
            {"id": "f", "kind": "fill_in_the_blank", "prompt": "p", "answer": "b", "explanation": "e"}]}"#;
        assert!(ExerciseBank::from_json(duplicate).is_err());
    }
}
