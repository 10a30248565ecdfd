-- compatible-from: 4
-- The identity provider's records (accounts, password logins, account
-- sessions, linked WebIDs, pods' owners, client credentials, signing keys):
-- typed in the code, stored as JSON, one table with two indexes. A record
-- is found by its id, by a unique key (an email, a WebID), or as one of an
-- account's records of a kind. Expired records are invisible and pruned.
CREATE TABLE idp_records (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    account_id TEXT,
    unique_key TEXT,
    data       TEXT NOT NULL,
    expires_at INTEGER,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE UNIQUE INDEX idp_records_unique ON idp_records (kind, unique_key)
    WHERE unique_key IS NOT NULL;
CREATE INDEX idp_records_account ON idp_records (kind, account_id);
