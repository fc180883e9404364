-- Offline (TOTP) code attempts, counted per user in PostgreSQL so the rate
-- limit holds across replicas.

-- +goose Up
CREATE TABLE totp_attempts (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid NOT NULL,
    user_id   uuid NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    success   boolean NOT NULL,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX totp_attempts_user ON totp_attempts (user_id, at);
CREATE INDEX challenges_application ON challenges (application_id, created_at);
CREATE INDEX webhook_deliveries_challenge ON webhook_deliveries (challenge_id, created_at);

-- +goose Down
DROP INDEX webhook_deliveries_challenge;
DROP INDEX challenges_application;
DROP TABLE totp_attempts;
