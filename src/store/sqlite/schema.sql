-- The embedded store's schema. Ids are UUID text, times are microseconds
-- since the Unix epoch (UTC); category and subcategory keys are the
-- case-folded names errors are counted under.

CREATE TABLE IF NOT EXISTS users (
    user_id     TEXT PRIMARY KEY,
    username    TEXT NOT NULL,
    email       TEXT NOT NULL,
    email_key   TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    -- The IANA time zone the learner's days are counted in (NULL: UTC).
    timezone    TEXT
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS conversations (
    conversation_id TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    started_at      INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS utterances (
    utterance_id    TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    content         TEXT,
    created_at      INTEGER NOT NULL
) WITHOUT ROWID;

-- Append-only log of every recorded error point: the source of truth.
CREATE TABLE IF NOT EXISTS error_events (
    event_id        INTEGER PRIMARY KEY,
    user_id         TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    utterance_id    TEXT NOT NULL,
    category_key    TEXT NOT NULL,
    subcategory_key TEXT NOT NULL,
    category        TEXT NOT NULL,
    subcategory     TEXT NOT NULL,
    occurred_at     INTEGER NOT NULL,
    -- What the AI proposed for the point (NULL when it did not say).
    correction      TEXT,
    explanation     TEXT
);
-- A learner's latest events, covered: reading them touches only the few
-- index pages that hold this learner's entries, not one table page per event.
CREATE INDEX IF NOT EXISTS error_events_recent ON error_events
    (user_id, event_id, category_key, subcategory_key, category, subcategory,
     conversation_id, utterance_id, occurred_at);
-- Superseded by error_events_recent (which starts with the same columns).
DROP INDEX IF EXISTS error_events_by_user;

-- Frequencies, updated in the same transaction as the events they count.
CREATE TABLE IF NOT EXISTS error_counts (
    user_id         TEXT NOT NULL,
    category_key    TEXT NOT NULL,
    subcategory_key TEXT NOT NULL,
    category        TEXT NOT NULL,
    subcategory     TEXT NOT NULL,
    frequency       INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL,
    PRIMARY KEY (user_id, category_key, subcategory_key)
) WITHOUT ROWID;

-- Frequencies per ISO week (week_start: the Monday, UTC, as YYYY-MM-DD),
-- updated in the same transaction as the events: progress and recency
-- ranking read them, never the event log.
CREATE TABLE IF NOT EXISTS error_counts_by_week (
    user_id         TEXT NOT NULL,
    week_start      TEXT NOT NULL,
    category_key    TEXT NOT NULL,
    subcategory_key TEXT NOT NULL,
    frequency       INTEGER NOT NULL,
    PRIMARY KEY (user_id, week_start, category_key, subcategory_key)
) WITHOUT ROWID;

-- Fingerprints of recorded error reports, so that a retry counts once.
CREATE TABLE IF NOT EXISTS ingest_requests (
    user_id     TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, fingerprint)
) WITHOUT ROWID;

-- A learner's conversations and utterances, for their export and erasure.
CREATE INDEX IF NOT EXISTS conversations_by_user ON conversations (user_id, conversation_id);
CREATE INDEX IF NOT EXISTS utterances_by_user ON utterances (user_id, utterance_id);

-- The memory model's review log, its source of truth: every graded answer
-- (kind 'answer') and every day the learner's speech showed an error
-- (kind 'lapse', one row per error and day: its id says which, and the row
-- keeps the earliest time). grade is FSRS's rating, 1 (again) to 4 (easy).
CREATE TABLE IF NOT EXISTS answers (
    answer_id       TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    exercise_id     TEXT,
    category_key    TEXT NOT NULL,
    subcategory_key TEXT NOT NULL,
    category        TEXT NOT NULL,
    subcategory     TEXT NOT NULL,
    grade           INTEGER NOT NULL,
    correct         INTEGER,
    answered_at     INTEGER NOT NULL
) WITHOUT ROWID;
-- One error's reviews, for its fold; a learner's answers, newest first.
CREATE INDEX IF NOT EXISTS answers_by_item ON answers
    (user_id, category_key, subcategory_key, answered_at);
CREATE INDEX IF NOT EXISTS answers_by_time ON answers (user_id, answered_at);

-- Each error's memory state: the fold of its reviews, rewritten in the
-- same transaction as every change to them.
CREATE TABLE IF NOT EXISTS memory (
    user_id         TEXT NOT NULL,
    category_key    TEXT NOT NULL,
    subcategory_key TEXT NOT NULL,
    category        TEXT NOT NULL,
    subcategory     TEXT NOT NULL,
    stability       REAL NOT NULL,
    difficulty      REAL NOT NULL,
    last_review     INTEGER NOT NULL,
    due             INTEGER NOT NULL,
    reviews         INTEGER NOT NULL,
    lapses          INTEGER NOT NULL,
    PRIMARY KEY (user_id, category_key, subcategory_key)
) WITHOUT ROWID;
