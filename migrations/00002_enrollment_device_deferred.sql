-- Completing an enrollment claims it (one conditional UPDATE, naming the new
-- device) before the device row is inserted in the same transaction, so the
-- reference to the device is checked at commit.

-- +goose Up
ALTER TABLE enrollments ALTER CONSTRAINT enrollments_tenant_id_user_id_device_id_fkey DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX enrollments_user ON enrollments (tenant_id, user_id, created_at);

-- +goose Down
DROP INDEX enrollments_user;
ALTER TABLE enrollments ALTER CONSTRAINT enrollments_tenant_id_user_id_device_id_fkey NOT DEFERRABLE;
