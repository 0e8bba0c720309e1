//! `errata seed`: many learners written straight into a fresh data
//! directory, for load tests of large populations (a million learners take
//! seconds this way, hours through the API).

use std::io::Write;
use std::path::Path;

use r2d2_sqlite::rusqlite::params;
use uuid::Uuid;

use super::columns::micros;
use super::connection::{self, internal, DATABASE_FILE};
use super::rows::{conversation_columns, user_columns, utterance_columns};
use super::WalLimits;
use crate::store::StoreError;
use crate::store::SEEDED_SAID as SAID;

/// Writes `learners` learners, each with one conversation and `utterances`
/// utterances, into the database in `data_dir` (which no errata process may
/// be using), in one transaction. Prints one line per learner to `out`: its
/// user id, conversation id and utterance ids, separated by spaces.
pub fn seed(
    data_dir: &Path,
    learners: usize,
    utterances: usize,
    out: &mut impl Write,
) -> Result<(), StoreError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| StoreError::internal(format!("creating {}", data_dir.display()), e))?;
    let _lock = connection::lock_data_dir(data_dir)?;
    let mut conn = connection::open_writer(&data_dir.join(DATABASE_FILE), WalLimits::default())?;
    let tx = conn.transaction().map_err(internal)?;
    {
        let mut user = tx
            .prepare(concat!(
                "INSERT INTO users (",
                user_columns!(),
                ", email_key) VALUES (?1, ?2, ?3, ?4, NULL, ?3)"
            ))
            .map_err(internal)?;
        let mut conversation = tx
            .prepare(concat!(
                "INSERT INTO conversations (",
                conversation_columns!(),
                ") VALUES (?1, ?2, ?3)"
            ))
            .map_err(internal)?;
        let mut utterance = tx
            .prepare(concat!(
                "INSERT INTO utterances (",
                utterance_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5)"
            ))
            .map_err(internal)?;
        let now = micros(crate::store::now());
        let mut line = String::new();
        for i in 0..learners {
            let (u, c) = (Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
            let (name, email) = (format!("learner{i}"), format!("learner{i}@seed.test"));
            user.execute(params![u, name, email, now])
                .map_err(internal)?;
            conversation.execute(params![c, u, now]).map_err(internal)?;
            line.clear();
            line.push_str(&u);
            line.push(' ');
            line.push_str(&c);
            for n in 0..utterances {
                let id = Uuid::now_v7().to_string();
                let text = SAID[(i + n) % SAID.len()];
                utterance
                    .execute(params![id, c, u, text, now])
                    .map_err(internal)?;
                line.push(' ');
                line.push_str(&id);
            }
            writeln!(out, "{line}").map_err(internal)?;
        }
    }
    tx.commit().map_err(internal)?;
    // Folded in, so the server starts on a small WAL.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(internal)?;
    out.flush().map_err(internal)
}
