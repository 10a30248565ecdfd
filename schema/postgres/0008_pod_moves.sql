-- compatible-from: 4
-- A pod on its way between an edge and the centre (`xpod pods migrate`
-- with an edge at one end): the move as JSON (the node that holds the pod
-- until the end, the node that holds it afterwards, the SHA-256 of the
-- move's secret, when it started); NULL when the pod is not moving.
-- Additive: older binaries ignore it.
ALTER TABLE pods ADD COLUMN moving TEXT;
