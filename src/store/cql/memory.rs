//! `Memory`: the memory model in the cql store — answers and lapses in the
//! review log (`answers`, by learner and month), each error's state in
//! `memory`.
//!
//! Replicas write reviews concurrently and in any order, so no replica's
//! view of the state is trusted: every read folds the learner's review log
//! (`domain::MemoryModel::fold`, a pure function of the set of reviews),
//! and a `memory` row that differs from the fold is rewritten on the way
//! (and by `errata repair`). The rows are a cache; the log decides. The
//! log holds a few reviews per error and day, so a learner's whole log is
//! a few thousand small rows even after years.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::Utc;
use futures_util::stream::{self, StreamExt};
use scylla::client::session::Session;
use scylla::statement::batch::BatchType;
use uuid::Uuid;

use super::accounts::Accounts;
use super::rows::{bucket, MemoryRow, ReviewRow, INSERT_REVIEW};
use super::session::{cql_error, for_each_row, from_timestamp, select, timestamp};
use super::statements::{self, statements};
use crate::domain::{ErrorKey, ReviewKind, Timezone};
use crate::store::policy::ERASURE;
use crate::store::{
    fold_items, AnswerOutcome, ExportPage, ExportPages, ItemMemory, NewAnswer, StoreError,
    StoredReview, User, EXPORT_PAGE,
};

statements! {
    /// The statements of the memory model.
    pub struct MemoryStatements {
        insert_review: IDEMPOTENT => INSERT_REVIEW,
        insert_bucket: IDEMPOTENT =>
            "INSERT INTO answer_buckets (user_id, bucket) VALUES (?, ?)",
        insert_answer_id: IDEMPOTENT =>
            "INSERT INTO answers_by_id (user_id, answer_id, answered_at) VALUES (?, ?, ?)",
        select_answer_times: IDEMPOTENT =>
            "SELECT answered_at FROM answers_by_id WHERE user_id = ? AND answer_id = ?",
        select_buckets: IDEMPOTENT =>
            "SELECT bucket FROM answer_buckets WHERE user_id = ?",
        select_bucket_reviews: IDEMPOTENT =>
            "SELECT user_id, bucket, answered_at, answer_id, kind, exercise_id, category_key, \
             subcategory_key, category, subcategory, grade, correct \
             FROM answers WHERE user_id = ? AND bucket = ?",
        delete_review: IDEMPOTENT =>
            "DELETE FROM answers WHERE user_id = ? AND bucket = ? AND answered_at = ? \
             AND answer_id = ?",
        delete_answer_id: IDEMPOTENT =>
            "DELETE FROM answers_by_id WHERE user_id = ? AND answer_id = ?",
        select_memory: IDEMPOTENT =>
            "SELECT user_id, category_key, subcategory_key, category, subcategory, stability, \
             difficulty, last_review, due, reviews, lapses FROM memory WHERE user_id = ?",
        upsert_memory: IDEMPOTENT =>
            "INSERT INTO memory (user_id, category_key, subcategory_key, category, subcategory, \
             stability, difficulty, last_review, due, reviews, lapses) \
             VALUES (:user_id, :category_key, :subcategory_key, :category, :subcategory, \
             :stability, :difficulty, :last_review, :due, :reviews, :lapses)",
        delete_memory: IDEMPOTENT =>
            "DELETE FROM memory WHERE user_id = ? AND category_key = ? AND subcategory_key = ?",
        /// A lightweight transaction, so an erased learner stays erased.
        set_timezone: ONCE =>
            "UPDATE users SET timezone = ? WHERE user_id = ? IF EXISTS",
        erase_bucket: IDEMPOTENT =>
            "DELETE FROM answers USING TIMESTAMP ? WHERE user_id = ? AND bucket = ?",
        erase_buckets: IDEMPOTENT =>
            "DELETE FROM answer_buckets USING TIMESTAMP ? WHERE user_id = ?",
        erase_ids: IDEMPOTENT =>
            "DELETE FROM answers_by_id USING TIMESTAMP ? WHERE user_id = ?",
        erase_memory: IDEMPOTENT =>
            "DELETE FROM memory USING TIMESTAMP ? WHERE user_id = ?",
        select_learners: IDEMPOTENT =>
            "SELECT DISTINCT user_id FROM memory",
        select_logged_learners: IDEMPOTENT =>
            "SELECT DISTINCT user_id FROM answer_buckets",
    }
}

/// Answers, lapses and memory states of learners.
pub struct Memory {
    session: Arc<Session>,
    statements: MemoryStatements,
    accounts: Arc<Accounts>,
}

impl Memory {
    pub async fn new(session: Arc<Session>, accounts: Arc<Accounts>) -> Result<Self, StoreError> {
        Ok(Self {
            statements: MemoryStatements::prepare(&session).await?,
            session,
            accounts,
        })
    }

    async fn learner(&self, user_id: Uuid) -> Result<User, StoreError> {
        self.accounts
            .user(user_id)
            .await?
            .ok_or(StoreError::UserNotFound)
    }

    /// Stores the answer unless its id is stored already (a retry).
    pub async fn record_answer(&self, answer: NewAnswer) -> Result<AnswerOutcome, StoreError> {
        let learner = self.learner(answer.user_id).await?;
        let user_id = answer.user_id;
        let stored = StoredReview::from(&answer);
        let first = self.find(user_id, answer.answer_id).await?;
        let duplicate = first.is_some();
        if !duplicate {
            // One logged batch: the review, its bucket and its id land
            // together or not at all.
            let s = &self.statements;
            let mut batch = statements::batch("answer_batch", BatchType::Logged, true);
            batch.append_statement(s.insert_review.clone());
            batch.append_statement(s.insert_bucket.clone());
            batch.append_statement(s.insert_answer_id.clone());
            let row = ReviewRow::new(user_id, &stored);
            let values = (
                row.clone(),
                (user_id, row.bucket),
                (user_id, row.answer_id, row.answered_at),
            );
            self.session
                .batch(&batch, values)
                .await
                .map_err(cql_error)?;
        }
        let answer = first.unwrap_or(stored);
        let items = self.memory_of(user_id, learner.tz()).await?;
        let state = items
            .into_iter()
            .find(|i| i.key == answer.key)
            .map(|i| i.state);
        Ok(AnswerOutcome {
            answer,
            duplicate,
            state,
        })
    }

    /// The learner's stored answer `answer_id`, at its earliest time.
    async fn find(
        &self,
        user_id: Uuid,
        answer_id: Uuid,
    ) -> Result<Option<StoredReview>, StoreError> {
        let times = self.answer_times(user_id, answer_id).await?;
        let mut found: Option<StoredReview> = None;
        for at in times {
            let rows = select(
                &self.session,
                &self.statements.select_bucket_reviews,
                (user_id, bucket(at)),
            )
            .await?;
            for row in rows.rows::<ReviewRow>().map_err(super::session::internal)? {
                let row = row.map_err(super::session::internal)?;
                if row.answer_id == answer_id && from_timestamp(row.answered_at) == at {
                    if let Some(review) = row.into_review() {
                        if found.as_ref().is_none_or(|f| review.at < f.at) {
                            found = Some(review);
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    async fn answer_times(
        &self,
        user_id: Uuid,
        answer_id: Uuid,
    ) -> Result<Vec<chrono::DateTime<Utc>>, StoreError> {
        let rows = select(
            &self.session,
            &self.statements.select_answer_times,
            (user_id, answer_id),
        )
        .await?;
        rows.rows::<(scylla::value::CqlTimestamp,)>()
            .map_err(super::session::internal)?
            .map(|r| {
                r.map(|(t,)| from_timestamp(t))
                    .map_err(super::session::internal)
            })
            .collect()
    }

    /// Removes the learner's answer (every copy a retry stored).
    pub async fn undo_answer(&self, user_id: Uuid, answer_id: Uuid) -> Result<bool, StoreError> {
        let learner = self.learner(user_id).await?;
        let times = self.answer_times(user_id, answer_id).await?;
        if times.is_empty() {
            return Ok(false);
        }
        let s = &self.statements;
        for at in times {
            self.run(
                &s.delete_review,
                (user_id, bucket(at), timestamp(at), answer_id),
            )
            .await?;
        }
        self.run(&s.delete_answer_id, (user_id, answer_id)).await?;
        self.memory_of(user_id, learner.tz()).await?;
        Ok(true)
    }

    /// Sets the learner's time zone; their states are refolded in it.
    pub async fn set_timezone(&self, user_id: Uuid, tz: Timezone) -> Result<User, StoreError> {
        let applied = self
            .session
            .execute_unpaged(&self.statements.set_timezone, (tz.name(), user_id))
            .await
            .map_err(cql_error)?
            .into_rows_result()
            .map_err(super::session::internal)?
            .maybe_first_row::<scylla::value::Row>()
            .map_err(super::session::internal)?;
        if !super::session::first_column_true(applied) {
            return Err(StoreError::UserNotFound);
        }
        let learner = self.learner(user_id).await?;
        self.memory_of(user_id, learner.tz()).await?;
        Ok(learner)
    }

    /// Every error's state, folded from the learner's review log.
    pub async fn memory(&self, user_id: Uuid) -> Result<Vec<ItemMemory>, StoreError> {
        let learner = self.learner(user_id).await?;
        self.memory_of(user_id, learner.tz()).await
    }

    /// The learner's answers (not lapses), newest first.
    pub async fn answers(
        &self,
        user_id: Uuid,
        limit: usize,
    ) -> Result<Vec<StoredReview>, StoreError> {
        self.learner(user_id).await?;
        let mut answers = Vec::new();
        for b in self.buckets(user_id).await? {
            let mut page: Vec<StoredReview> = self
                .bucket_reviews(user_id, b)
                .await?
                .into_iter()
                .filter(|r| r.kind == ReviewKind::Answer)
                .collect();
            page.sort_by(|a, b| b.at.cmp(&a.at).then(b.review_id.cmp(&a.review_id)));
            for review in page {
                // A retry may have stored an answer twice: listed once.
                if !answers
                    .iter()
                    .any(|a: &StoredReview| a.review_id == review.review_id)
                {
                    answers.push(review);
                }
            }
            if answers.len() >= limit {
                break;
            }
        }
        answers.truncate(limit);
        Ok(answers)
    }

    /// Folds the whole log and rewrites the `memory` rows that differ.
    async fn memory_of(&self, user_id: Uuid, tz: Timezone) -> Result<Vec<ItemMemory>, StoreError> {
        let log = self.log(user_id).await?;
        let folded = fold_items(log, tz);
        self.write_back(user_id, &folded).await?;
        Ok(folded)
    }

    /// Makes the learner's `memory` rows those of `folded`; returns how
    /// many it changed.
    async fn write_back(&self, user_id: Uuid, folded: &[ItemMemory]) -> Result<usize, StoreError> {
        let mut cached: HashMap<ErrorKey, MemoryRow> = HashMap::new();
        for_each_row(
            &self.session,
            &self.statements.select_memory,
            (user_id,),
            |row: MemoryRow| {
                cached.insert(
                    ErrorKey {
                        category: row.category_key.clone(),
                        subcategory: row.subcategory_key.clone(),
                    },
                    row,
                );
            },
        )
        .await?;
        let mut changed = 0;
        for item in folded {
            let row = MemoryRow::new(user_id, item);
            if cached.remove(&item.key).as_ref() != Some(&row) {
                self.run(&self.statements.upsert_memory, row).await?;
                changed += 1;
            }
        }
        for (key, _) in cached {
            self.run(
                &self.statements.delete_memory,
                (user_id, key.category, key.subcategory),
            )
            .await?;
            changed += 1;
        }
        Ok(changed)
    }

    async fn buckets(&self, user_id: Uuid) -> Result<Vec<i32>, StoreError> {
        let rows = select(&self.session, &self.statements.select_buckets, (user_id,)).await?;
        rows.rows::<(i32,)>()
            .map_err(super::session::internal)?
            .map(|r| r.map(|(b,)| b).map_err(super::session::internal))
            .collect()
    }

    async fn bucket_reviews(&self, user_id: Uuid, b: i32) -> Result<Vec<StoredReview>, StoreError> {
        let mut reviews = Vec::new();
        for_each_row(
            &self.session,
            &self.statements.select_bucket_reviews,
            (user_id, b),
            |row: ReviewRow| reviews.extend(row.into_review()),
        )
        .await?;
        Ok(reviews)
    }

    /// The learner's whole review log.
    async fn log(&self, user_id: Uuid) -> Result<Vec<StoredReview>, StoreError> {
        let mut log = Vec::new();
        for b in self.buckets(user_id).await? {
            log.extend(self.bucket_reviews(user_id, b).await?);
        }
        Ok(log)
    }

    /// The learner's reviews for the export, a bucket per page.
    pub fn export_pages(self: Arc<Self>, user_id: Uuid) -> ExportPages {
        stream::once(async move { self.log(user_id).await })
            .flat_map(|log| match log {
                Ok(log) => {
                    let pages: Vec<Result<ExportPage, StoreError>> = log
                        .chunks(EXPORT_PAGE)
                        .map(|c| Ok(ExportPage::Reviews(c.to_vec())))
                        .collect();
                    stream::iter(pages)
                }
                Err(e) => stream::iter(vec![Err(e)]),
            })
            .boxed()
    }

    /// Erases the learner's reviews and states, under the same marker as
    /// the rest of their data: a write racing the erasure lands beneath
    /// its tombstones. `months` are buckets to erase besides the learner's
    /// known ones and the current one: those of their open requests, whose
    /// lapses may land in a month the bucket list does not name yet.
    pub async fn erase(&self, user_id: Uuid, months: &BTreeSet<i32>) -> Result<(), StoreError> {
        let shadow = (Utc::now() + ERASURE).timestamp_micros();
        let mut buckets: BTreeSet<i32> = self.buckets(user_id).await?.into_iter().collect();
        buckets.insert(bucket(Utc::now()));
        buckets.extend(months);
        let s = &self.statements;
        for b in buckets {
            self.run(&s.erase_bucket, (shadow, user_id, b)).await?;
        }
        for statement in [&s.erase_ids, &s.erase_memory, &s.erase_buckets] {
            self.run(statement, (shadow, user_id)).await?;
        }
        Ok(())
    }

    /// Rewrites the states of one learner, or of every learner with a
    /// review log or a state, from their logs; returns how many rows it
    /// corrected.
    pub async fn repair(&self, user_id: Option<Uuid>) -> Result<usize, StoreError> {
        let learners: BTreeSet<Uuid> = match user_id {
            Some(user_id) => [user_id].into(),
            None => {
                let mut all = BTreeSet::new();
                for statement in [
                    &self.statements.select_learners,
                    &self.statements.select_logged_learners,
                ] {
                    for_each_row(&self.session, statement, (), |(id,): (Uuid,)| {
                        all.insert(id);
                    })
                    .await?;
                }
                all
            }
        };
        let mut corrected = 0;
        for user_id in learners {
            let tz = match self.accounts.user(user_id).await? {
                Some(learner) => learner.tz(),
                None => continue,
            };
            let folded = fold_items(self.log(user_id).await?, tz);
            corrected += self.write_back(user_id, &folded).await?;
        }
        Ok(corrected)
    }

    async fn run(
        &self,
        statement: &scylla::statement::prepared::PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<(), StoreError> {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map(drop)
            .map_err(cql_error)
    }
}
