//go:build tools

// Package deps pins the project's dependencies while packages are being
// written in parallel. It is removed once every import is real.
package deps

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/cloudevents/sdk-go/protocol/nats/v2"
	_ "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	_ "github.com/cloudevents/sdk-go/v2"
	_ "github.com/go-mysql-org/go-mysql/canal"
	_ "github.com/go-mysql-org/go-mysql/client"
	_ "github.com/go-mysql-org/go-mysql/replication"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pglogrepl"
	_ "github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/pgtype"
	_ "github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/testcontainers/testcontainers-go"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/text/encoding/charmap"
)
