-- `tokenvault import` (issue 15): each batch commits, with its tokens and their audit
-- events, one journal entry holding the tokens it issued, so a run killed after a commit
-- but before its output file reached the disk writes those tokens out again on resume
-- instead of tokenizing the records a second time. Entries whose output is durable are
-- pruned as the run goes, and a finished run leaves none.
CREATE TABLE import_journal (
    run          TEXT NOT NULL,
    batch        INTEGER NOT NULL,
    first_record INTEGER NOT NULL,
    -- Per input record, newline-separated: its token, `!code` for a refused record, or
    -- empty while it has none yet.
    records      TEXT NOT NULL,
    PRIMARY KEY (run, batch)
);
