-- Wake-ups without needless NOTIFY: a challenge remembers which server
-- instance created it (that instance knows its state and wakes its own
-- waiters in-process), and whether another instance is long-polling it.
-- A resolution NOTIFYs only when some other instance may be waiting.

-- +goose Up
ALTER TABLE challenges ADD COLUMN created_by_instance uuid;
ALTER TABLE challenges ADD COLUMN remote_waiters boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE challenges DROP COLUMN remote_waiters;
ALTER TABLE challenges DROP COLUMN created_by_instance;
