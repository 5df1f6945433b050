// Package binds turns configured database URIs into Binds: it parses
// SQLAlchemy-style URLs (dialect[+driver]://user:password@host:port/db?opts)
// without net/url, which rejects valid SQLAlchemy schemes and prints raw
// URLs in its errors, hides passwords in every rendering, and resolves each
// bind's options and pool defaults.
//
// Parse follows SQLAlchemy 2.0's grammar (its tests use SQLAlchemy's own
// pattern as an oracle) and refuses the dialects trackerd cannot follow.
// A URI's password is a Secret, which prints as *** however it is
// formatted, logged or marshalled; URI.Reveal is the only way to the full
// text. URIError messages are built from the redacted text only.
//
// FromConfig resolves every bind of a loaded config.Config: DATABASE_URI as
// the bind "default" (with the options of a BINDS.default that has no URI),
// then BINDS, with derived slot, publication and server_id names and the
// pool precedence bind > global > dialect default. A PostgreSQL URI must
// name its database.
// Configuration errors are *URIError or *config.FieldError, all at once.
package binds
