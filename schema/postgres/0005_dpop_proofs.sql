-- compatible-from: 4
-- DPoP proofs seen, cluster-wide, so a proof replayed at any node is
-- refused. The key is a hash of the proof key's thumbprint and the proof's
-- jti; a row is kept until the proof would be refused as too old anyway.
-- Older binaries ignore the table (they keep no shared replay record).
CREATE TABLE dpop_proofs (
    proof_key  TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX dpop_proofs_expiry ON dpop_proofs (expires_at);
