-- A notification may concern a challenge: "it is over" names the challenge,
-- so the app clears that prompt, and the challenge's timeline shows it.

-- +goose Up
ALTER TABLE deliveries DROP CONSTRAINT deliveries_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_challenge_push
    CHECK (kind = 'notification' OR (challenge_id IS NOT NULL AND notification IS NULL));
CREATE INDEX deliveries_challenge ON deliveries (challenge_id, created_at) WHERE challenge_id IS NOT NULL;

-- +goose Down
DROP INDEX deliveries_challenge;
UPDATE deliveries SET challenge_id = NULL WHERE kind = 'notification';
ALTER TABLE deliveries DROP CONSTRAINT deliveries_challenge_push;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_check
    CHECK ((kind = 'challenge') = (challenge_id IS NOT NULL AND notification IS NULL));
