//! `errata seed` in cql mode: many learners written straight into a freshly
//! migrated keyspace, for load tests of large populations (a million
//! learners take minutes this way, about an hour through the API).
//!
//! Each learner is two writes: its user, conversation and utterances in
//! one unlogged batch (three tables, one partition key, so one mutation),
//! and its e-mail row. The e-mail row is a plain insert, not the sign-up's
//! lightweight transaction: the addresses are new and unique to this run,
//! so there is nothing to race with, and a later sign-up's `IF NOT EXISTS`
//! reads the row all the same.

use std::io::Write;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use scylla::statement::batch::BatchType;
use uuid::Uuid;

use super::accounts::AccountStatements;
use super::rows::{ConversationRow, UserRow, UtteranceRow};
use super::session::{self, cql_error, internal, timestamp, StoreResult};
use super::statements::{self, IDEMPOTENT};
use crate::config::Config;
use crate::store::{now, StoreError, SEEDED_SAID};

/// Learners written at once.
const IN_FLIGHT: usize = 256;

/// Writes `learners` learners, each with one conversation and `utterances`
/// utterances, into the configured keyspace (migrated, and used by no
/// other seed). Prints one line per learner to `out`: its user id,
/// conversation id and utterance ids, separated by spaces.
pub async fn seed(
    config: &Config,
    learners: usize,
    utterances: usize,
    out: &mut impl Write,
) -> StoreResult<()> {
    let session = session::connect(config, Some(&config.cql_keyspace)).await?;
    let s = AccountStatements::prepare(&session).await?;
    let claim = statements::prepare(
        &session,
        "seed_email",
        "INSERT INTO users_by_email (email_key, user_id) VALUES (?, ?)",
        IDEMPOTENT,
    )
    .await?;
    // Addresses unique to this run, should a keyspace be seeded twice.
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let at = timestamp(now());
    let (session, s, claim, run) = (&session, &s, &claim, run.as_str());
    let mut written = stream::iter(0..learners)
        .map(|i| async move {
            let (user, conversation) = (Uuid::now_v7(), Uuid::now_v7());
            let said: Vec<Uuid> = (0..utterances).map(|_| Uuid::now_v7()).collect();
            let email = format!("learner{i}.{run}@seed.test");
            let mut batch = statements::batch("seed_batch", BatchType::Unlogged, IDEMPOTENT);
            batch.append_statement(s.insert_user.clone());
            batch.append_statement(s.insert_conversation.clone());
            let mut values: Vec<Box<dyn scylla::serialize::row::SerializeRow + Send + Sync>> = vec![
                Box::new(UserRow {
                    user_id: user,
                    username: format!("learner{i}"),
                    email: email.clone(),
                    created_at: Some(at),
                    timezone: None,
                }),
                Box::new(ConversationRow {
                    user_id: user,
                    conversation_id: conversation,
                    started_at: Some(at),
                }),
            ];
            for (n, utterance) in said.iter().enumerate() {
                batch.append_statement(s.insert_utterance.clone());
                let text = SEEDED_SAID[(i + n) % SEEDED_SAID.len()];
                values.push(Box::new(UtteranceRow {
                    user_id: user,
                    conversation_id: conversation,
                    utterance_id: *utterance,
                    content: Some(text.to_owned()),
                    created_at: Some(at),
                }));
            }
            let (rows, claimed) = tokio::join!(
                session.batch(&batch, values),
                session.execute_unpaged(claim, (email, user)),
            );
            rows.map_err(cql_error)?;
            claimed.map_err(cql_error)?;
            Ok::<_, StoreError>((user, conversation, said))
        })
        .buffer_unordered(IN_FLIGHT);
    let mut line = String::new();
    while let Some((user, conversation, said)) = written.try_next().await? {
        line.clear();
        line.push_str(&format!("{user} {conversation}"));
        for utterance in said {
            line.push_str(&format!(" {utterance}"));
        }
        writeln!(out, "{line}").map_err(internal)?;
    }
    out.flush().map_err(internal)
}
