// Package config loads trackerd's configuration: the Flask-SQLAlchemy keys
// (DATABASE_URI, BINDS, TRACK_MODIFICATIONS, ECHO, RECORD_QUERIES,
// NATIVE_UNICODE, POOL_*, MAX_OVERFLOW, ENGINE_OPTIONS, NAMING_CONVENTION)
// and trackerd's own, from command-line flags, the environment
// (TRACKER_<KEY>, then SQLALCHEMY_<KEY>), a TOML file and defaults, strongest
// first. Every bad value is refused with the key, the value (secrets hidden)
// and what is allowed.
package config
