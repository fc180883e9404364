// Package migrations embeds the SQL schema migrations, applied at start by
// internal/postgres with goose.
package migrations

import "embed"

// FS holds the migration files, named NNNNN_description.sql.
//
//go:embed *.sql
var FS embed.FS
