// Package binds turns configured database URIs into Binds: it parses
// SQLAlchemy-style URLs (dialect[+driver]://user:password@host:port/db?opts)
// without net/url, which rejects valid SQLAlchemy schemes, hides passwords in
// every rendering, and resolves each bind's options and pool defaults.
package binds
