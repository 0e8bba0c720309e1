-- Run after schema.sql, once the columns it needs exist (`migrate.rs` adds
-- them to a database made before they did).

-- The learner's latest events that carry a correction: the only ones a
-- practice request can build an exercise from. Partial, so it holds
-- nothing for clients that send no corrections.
CREATE INDEX IF NOT EXISTS error_events_corrected ON error_events
    (user_id, event_id, category_key, subcategory_key, utterance_id)
    WHERE correction IS NOT NULL;
