-- The whole data model of DESIGN.md. Invariants are enforced here as well as
-- in code: every foreign key between tenant-owned rows includes tenant_id, so
-- a row can never point into another tenant; states are CHECKed; terminal
-- challenge states and sealed audit events cannot change.
--
-- Sealed columns (AES-256-GCM, see internal/seal) are a bytea holding
-- nonce||ciphertext plus a *_key_id naming the master key that sealed them.

-- +goose Up

CREATE TABLE tenants (
    id         uuid PRIMARY KEY,
    slug       text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    name       text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Bounds and defaults mirror internal/policy (a test checks they agree).
CREATE TABLE policies (
    tenant_id                   uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    challenge_ttl_seconds       integer NOT NULL DEFAULT 60 CHECK (challenge_ttl_seconds BETWEEN 10 AND 600),
    enrollment_ttl_seconds      integer NOT NULL DEFAULT 600 CHECK (enrollment_ttl_seconds BETWEEN 60 AND 604800),
    number_matching             boolean NOT NULL DEFAULT true,
    push_enabled                boolean NOT NULL DEFAULT true,
    require_user_verification   boolean NOT NULL DEFAULT false,
    challenges_per_window       integer NOT NULL DEFAULT 10 CHECK (challenges_per_window BETWEEN 1 AND 1000000),
    challenge_window_seconds    integer NOT NULL DEFAULT 300 CHECK (challenge_window_seconds BETWEEN 1 AND 86400),
    max_pending_challenges      integer NOT NULL DEFAULT 3 CHECK (max_pending_challenges BETWEEN 1 AND 1000),
    denial_backoff_after        integer NOT NULL DEFAULT 3 CHECK (denial_backoff_after BETWEEN 1 AND 1000),
    fraud_lockout_after         integer NOT NULL DEFAULT 1 CHECK (fraud_lockout_after BETWEEN 1 AND 100),
    totp_enabled                boolean NOT NULL DEFAULT true,
    totp_digits                 integer NOT NULL DEFAULT 6 CHECK (totp_digits IN (6, 8)),
    totp_max_attempts           integer NOT NULL DEFAULT 5 CHECK (totp_max_attempts BETWEEN 1 AND 100),
    totp_attempt_window_seconds integer NOT NULL DEFAULT 300 CHECK (totp_attempt_window_seconds BETWEEN 30 AND 86400),
    max_devices                 integer NOT NULL DEFAULT 5 CHECK (max_devices BETWEEN 1 AND 100),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE applications (
    id                    uuid PRIMARY KEY,
    tenant_id             uuid NOT NULL REFERENCES tenants (id),
    name                  text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    -- SHA-256 of the application secret; erased when the application is deleted.
    secret_digest         bytea UNIQUE CHECK (octet_length(secret_digest) = 32),
    number_matching       text NOT NULL DEFAULT 'required'
                          CHECK (number_matching IN ('required', 'when_supported', 'off')),
    webhook_url           text CHECK (char_length(webhook_url) BETWEEN 1 AND 2048),
    webhook_secret        bytea,
    webhook_secret_key_id text,
    duo_ikey              text UNIQUE CHECK (duo_ikey ~ '^DI[A-Z0-9]{18}$'),
    duo_skey              bytea,
    duo_skey_key_id       text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    secret_rotated_at     timestamptz,
    deleted_at            timestamptz,
    UNIQUE (tenant_id, id),
    CHECK ((deleted_at IS NULL) = (secret_digest IS NOT NULL)),
    CHECK ((webhook_secret IS NULL) = (webhook_secret_key_id IS NULL)),
    CHECK ((duo_skey IS NULL) = (duo_skey_key_id IS NULL)),
    CHECK (deleted_at IS NOT NULL OR (webhook_url IS NULL) = (webhook_secret IS NULL)),
    CHECK (deleted_at IS NOT NULL OR (duo_ikey IS NULL) = (duo_skey IS NULL)),
    -- A deleted application keeps no recoverable secret.
    CHECK (deleted_at IS NULL OR (webhook_secret IS NULL AND duo_skey IS NULL))
);
CREATE UNIQUE INDEX applications_live_name ON applications (tenant_id, lower(name)) WHERE deleted_at IS NULL;

CREATE TABLE users (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    name                text NOT NULL CHECK (octet_length(name) BETWEEN 1 AND 256),
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- Locked by an admin or by fraud reports: no push challenges.
    locked_at           timestamptz,
    lock_reason         text CHECK (lock_reason IN ('admin', 'fraud')),
    locked_by           text,
    fraud_reports       integer NOT NULL DEFAULT 0 CHECK (fraud_reports >= 0),
    -- Push-bombing guard state: consecutive denials and the backoff they earn.
    consecutive_denials integer NOT NULL DEFAULT 0 CHECK (consecutive_denials >= 0),
    push_blocked_until  timestamptz,
    UNIQUE (tenant_id, name),
    UNIQUE (tenant_id, id),
    CHECK ((locked_at IS NULL) = (lock_reason IS NULL)),
    CHECK ((locked_at IS NULL) = (locked_by IS NULL))
);

CREATE TABLE devices (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL,
    user_id           uuid NOT NULL,
    platform          text NOT NULL CHECK (platform ~ '^[a-z0-9_.-]{1,32}$'),
    push_provider     text NOT NULL CHECK (push_provider IN ('apns', 'fcm', 'none')),
    push_token        bytea,
    push_token_key_id text,
    -- Set when the provider reported the token invalid: the app is told to
    -- register a new one on its next call.
    push_token_invalid_at timestamptz,
    -- Uncompressed P-256 point (0x04 || X || Y) of the device's ES256 key.
    public_key        bytea NOT NULL UNIQUE CHECK (octet_length(public_key) = 65 AND get_byte(public_key, 0) = 4),
    name              text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    app_version       text CHECK (char_length(app_version) <= 64),
    os_version        text CHECK (char_length(os_version) <= 64),
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_seen_at      timestamptz,
    state             text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'revoked')),
    revoked_at        timestamptz,
    revoked_by        text,
    revoke_reason     text CHECK (revoke_reason IN ('lost', 'replaced', 'removed_by_user', 'removed_by_admin')),
    totp_secret       bytea,
    totp_key_id       text,
    totp_digits       integer CHECK (totp_digits IN (6, 8)),
    totp_period       integer CHECK (totp_period BETWEEN 15 AND 120),
    -- The last TOTP time step accepted, so each code is accepted once.
    totp_last_step    bigint,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id),
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, user_id, id),
    CHECK ((push_token IS NULL) = (push_token_key_id IS NULL)),
    CHECK ((totp_secret IS NULL) = (totp_key_id IS NULL)),
    CHECK (totp_secret IS NULL OR (totp_digits IS NOT NULL AND totp_period IS NOT NULL)),
    CHECK ((state = 'revoked') = (revoked_at IS NOT NULL)),
    CHECK ((state = 'revoked') = (revoke_reason IS NOT NULL)),
    CHECK ((state = 'revoked') = (revoked_by IS NOT NULL)),
    -- A revoked device keeps no push token; a poll-only device has none.
    CHECK (state = 'active' OR push_token IS NULL),
    CHECK (push_provider <> 'none' OR push_token IS NULL)
);
CREATE INDEX devices_user_active ON devices (user_id) WHERE state = 'active';

CREATE TABLE enrollments (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    user_id         uuid NOT NULL,
    -- SHA-256 of the activation code, for lookup.
    code_digest     bytea NOT NULL UNIQUE CHECK (octet_length(code_digest) = 32),
    -- Sealed copy of the code for drawing the QR; erased once used or expired.
    code            bytea,
    code_key_id     text,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'completed', 'expired')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    completed_at    timestamptz,
    device_id       uuid,
    created_by_type text NOT NULL CHECK (created_by_type IN ('admin', 'application')),
    created_by_id   text NOT NULL,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id, device_id) REFERENCES devices (tenant_id, user_id, id),
    UNIQUE (tenant_id, id),
    CHECK (expires_at > created_at),
    CHECK ((code IS NULL) = (code_key_id IS NULL)),
    CHECK (state = 'pending' OR code IS NULL),
    CHECK ((state = 'completed') = (device_id IS NOT NULL)),
    CHECK ((state = 'completed') = (completed_at IS NOT NULL))
);
CREATE INDEX enrollments_pending_expiry ON enrollments (expires_at) WHERE state = 'pending';

CREATE TABLE challenges (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL,
    application_id     uuid NOT NULL,
    user_id            uuid NOT NULL,
    state              text NOT NULL DEFAULT 'pending'
                       CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'cancelled')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    resolved_at        timestamptz,
    -- Exactly what the device displays, and base64url(SHA-256(RFC 8785 of it)).
    context            jsonb NOT NULL CHECK (jsonb_typeof(context) = 'object'),
    context_digest     bytea NOT NULL CHECK (octet_length(context_digest) = 32),
    nonce              bytea NOT NULL CHECK (octet_length(nonce) >= 16),
    number             smallint CHECK (number BETWEEN 10 AND 99),
    -- How it was resolved: the device's decision, or the system's.
    resolution         text CHECK (resolution IN ('approve', 'deny', 'fraud', 'number_mismatch', 'expired', 'cancelled')),
    fraud              boolean NOT NULL DEFAULT false,
    resolved_by_device uuid,
    user_verified      boolean,
    idempotency_key    text CHECK (char_length(idempotency_key) BETWEEN 1 AND 255),
    request_digest     bytea,
    source             text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'duo')),
    FOREIGN KEY (tenant_id, application_id) REFERENCES applications (tenant_id, id),
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id),
    -- Only a device of the challenge's own user can resolve it.
    FOREIGN KEY (tenant_id, user_id, resolved_by_device) REFERENCES devices (tenant_id, user_id, id),
    UNIQUE (tenant_id, id),
    UNIQUE (application_id, idempotency_key),
    CHECK (expires_at > created_at),
    CHECK ((state = 'pending') = (resolved_at IS NULL)),
    CHECK ((state = 'pending') = (resolution IS NULL)),
    CHECK (state <> 'approved' OR (resolution = 'approve' AND resolved_by_device IS NOT NULL)),
    CHECK (state <> 'denied' OR resolution IN ('deny', 'fraud', 'number_mismatch')),
    CHECK (state <> 'expired' OR resolution = 'expired'),
    CHECK (state <> 'cancelled' OR resolution = 'cancelled'),
    CHECK (fraud = (resolution IS NOT DISTINCT FROM 'fraud')),
    CHECK ((idempotency_key IS NULL) = (request_digest IS NULL))
);
CREATE INDEX challenges_user_created ON challenges (user_id, created_at);
CREATE INDEX challenges_pending_expiry ON challenges (expires_at) WHERE state = 'pending';
CREATE INDEX challenges_tenant_created ON challenges (tenant_id, created_at);

-- +goose StatementBegin
-- Terminal states never change: a resolved challenge is frozen.
CREATE FUNCTION challenges_freeze_terminal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state <> 'pending' AND (NEW.state, NEW.resolution, NEW.resolved_at, NEW.fraud, NEW.resolved_by_device)
            IS DISTINCT FROM (OLD.state, OLD.resolution, OLD.resolved_at, OLD.fraud, OLD.resolved_by_device) THEN
        RAISE EXCEPTION 'challenge % is already %', OLD.id, OLD.state USING ERRCODE = 'check_violation';
    END IF;
    IF (NEW.id, NEW.tenant_id, NEW.application_id, NEW.user_id, NEW.created_at, NEW.context, NEW.context_digest, NEW.nonce, NEW.number)
            IS DISTINCT FROM (OLD.id, OLD.tenant_id, OLD.application_id, OLD.user_id, OLD.created_at, OLD.context, OLD.context_digest, OLD.nonce, OLD.number) THEN
        RAISE EXCEPTION 'challenge % identity and context are immutable', OLD.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
-- +goose StatementEnd
CREATE TRIGGER challenges_freeze_terminal BEFORE UPDATE ON challenges
    FOR EACH ROW EXECUTE FUNCTION challenges_freeze_terminal();

-- When each device fetched a challenge (part of its timeline).
CREATE TABLE challenge_fetches (
    challenge_id uuid NOT NULL,
    device_id    uuid NOT NULL,
    tenant_id    uuid NOT NULL,
    fetched_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (challenge_id, device_id),
    FOREIGN KEY (tenant_id, challenge_id) REFERENCES challenges (tenant_id, id),
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id)
);

-- One row per push (of a challenge or an activity notification) to one device.
CREATE TABLE deliveries (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL,
    device_id           uuid NOT NULL,
    challenge_id        uuid,
    kind                text NOT NULL CHECK (kind IN ('challenge', 'notification')),
    notification        text CHECK (char_length(notification) <= 64),
    provider            text NOT NULL CHECK (provider IN ('apns', 'fcm', 'none', 'log')),
    provider_message_id text CHECK (char_length(provider_message_id) <= 256),
    outcome             text NOT NULL DEFAULT 'pending'
                        CHECK (outcome IN ('pending', 'sent', 'retrying', 'failed', 'token_invalid', 'skipped')),
    reason              text CHECK (char_length(reason) <= 512),
    attempts            integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id),
    FOREIGN KEY (tenant_id, challenge_id) REFERENCES challenges (tenant_id, id),
    CHECK ((kind = 'challenge') = (challenge_id IS NOT NULL AND notification IS NULL)),
    CHECK (kind = 'challenge' OR notification IS NOT NULL),
    CHECK ((outcome = 'sent') = (sent_at IS NOT NULL))
);
CREATE UNIQUE INDEX deliveries_challenge_device ON deliveries (challenge_id, device_id) WHERE kind = 'challenge';
CREATE INDEX deliveries_device ON deliveries (device_id, created_at);

-- Webhook calls to an application when its challenges resolve.
CREATE TABLE webhook_deliveries (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL,
    application_id uuid NOT NULL,
    challenge_id   uuid NOT NULL,
    outcome        text NOT NULL DEFAULT 'pending' CHECK (outcome IN ('pending', 'delivered', 'retrying', 'failed')),
    attempts       integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_status    integer,
    last_error     text CHECK (char_length(last_error) <= 512),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    delivered_at   timestamptz,
    FOREIGN KEY (tenant_id, application_id) REFERENCES applications (tenant_id, id),
    FOREIGN KEY (tenant_id, challenge_id) REFERENCES challenges (tenant_id, id),
    CHECK ((outcome = 'delivered') = (delivered_at IS NOT NULL))
);
CREATE INDEX webhook_deliveries_app ON webhook_deliveries (application_id, created_at);

-- JWT ids seen, per issuer (a device id, or the key thumbprint of an
-- enrolling device), kept until every token carrying them has expired.
CREATE TABLE used_jtis (
    issuer     text NOT NULL CHECK (char_length(issuer) BETWEEN 1 AND 128),
    jti        text NOT NULL CHECK (char_length(jti) BETWEEN 1 AND 128),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX used_jtis_expiry ON used_jtis (expires_at);

CREATE TABLE admin_tokens (
    id           uuid PRIMARY KEY,
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    -- NULL: a global admin; else an admin of that tenant only.
    tenant_id    uuid REFERENCES tenants (id),
    token_digest bytea NOT NULL UNIQUE CHECK (octet_length(token_digest) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- Append-only audit log, hash-chained per tenant by the sealer.
CREATE TABLE audit_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    occurred_at timestamptz NOT NULL DEFAULT now(),
    type        text NOT NULL CHECK (type ~ '^[a-z_]+\.[a-z_]+$'),
    actor_type  text NOT NULL CHECK (actor_type IN ('admin', 'application', 'device', 'system')),
    actor_id    text NOT NULL CHECK (char_length(actor_id) BETWEEN 1 AND 128),
    user_id     uuid,
    data        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(data) = 'object'),
    seq         bigint CHECK (seq > 0),
    prev_hash   bytea CHECK (octet_length(prev_hash) = 32),
    hash        bytea CHECK (octet_length(hash) = 32),
    sealed_at   timestamptz,
    -- The user an event concerns is of the event's own tenant.
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id),
    UNIQUE (tenant_id, seq),
    CHECK ((seq IS NULL) = (hash IS NULL)),
    CHECK ((seq IS NULL) = (prev_hash IS NULL)),
    CHECK ((seq IS NULL) = (sealed_at IS NULL))
);
CREATE INDEX audit_events_unsealed ON audit_events (tenant_id, id) WHERE seq IS NULL;
CREATE INDEX audit_events_tenant ON audit_events (tenant_id, id);
CREATE INDEX audit_events_user ON audit_events (tenant_id, user_id, id) WHERE user_id IS NOT NULL;

-- +goose StatementBegin
-- Audit events are append-only: the only update allowed is sealing an
-- unsealed event once, without touching its content.
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit events are append-only' USING ERRCODE = 'check_violation';
    END IF;
    IF OLD.seq IS NOT NULL OR NEW.seq IS NULL
       OR (NEW.id, NEW.tenant_id, NEW.occurred_at, NEW.type, NEW.actor_type, NEW.actor_id, NEW.user_id, NEW.data)
          IS DISTINCT FROM (OLD.id, OLD.tenant_id, OLD.occurred_at, OLD.type, OLD.actor_type, OLD.actor_id, OLD.user_id, OLD.data) THEN
        RAISE EXCEPTION 'audit event % is append-only', OLD.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
-- +goose StatementEnd
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

-- A fresh install has the tenant "default".
INSERT INTO tenants (id, slug, name) VALUES (gen_random_uuid(), 'default', 'Default');
INSERT INTO policies (tenant_id) SELECT id FROM tenants WHERE slug = 'default';

-- +goose Down
DROP TABLE audit_events, admin_tokens, used_jtis, webhook_deliveries, deliveries, challenge_fetches,
    challenges, enrollments, devices, users, applications, policies, tenants;
DROP FUNCTION audit_events_append_only, challenges_freeze_terminal;
