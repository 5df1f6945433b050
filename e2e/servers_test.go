package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/moby/moby/client"
	natsgo "github.com/nats-io/nats.go"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Where the e2e tests' servers come from is one switch (README,
// "Development"): the TRACKERD_TEST_*_URL variables name running servers (what
// scripts/test.sh and CI use); for each one that is unset, and when a
// Docker engine answers, startFallbackServers starts the server in a
// container for the whole run, with the images of scripts/test-images.sh,
// and sets the variable. Otherwise the tests that need it skip, naming the
// variable (or fail under CI=true).

// fallback is a server started in a container for the whole test run.
type fallback struct {
	env   string
	image string
	port  string
	cmd   []string
	envs  map[string]string
	files []testcontainers.ContainerFile
	url   func(host, port string) string
	setup func(ctx context.Context, url string) error
}

func fallbacks() []fallback {
	return []fallback{
		{
			env: "TRACKERD_TEST_POSTGRES_URL", image: imageOr("TRACKERD_TEST_PG_IMAGE", defaultPGImage), port: "5432/tcp",
			cmd:   []string{"-c", "wal_level=logical", "-c", "max_wal_senders=40", "-c", "max_replication_slots=40", "-c", "fsync=off", "-c", "hba_file=/tmp/trackerd_hba.conf"},
			envs:  map[string]string{"POSTGRES_PASSWORD": "postgres"},
			files: []testcontainers.ContainerFile{{Reader: strings.NewReader(pgHBA), ContainerFilePath: "/tmp/trackerd_hba.conf", FileMode: 0o644}},
			url: func(h, p string) string {
				return fmt.Sprintf("postgres://postgres:postgres@%s:%s/test?sslmode=disable", h, p)
			},
			setup: func(ctx context.Context, url string) error {
				// What scripts/setup-servers.sh gives the host's server.
				c, err := pgx.Connect(ctx, strings.Replace(url, "/test?", "/postgres?", 1))
				if err != nil {
					return err
				}
				defer c.Close(ctx)
				for _, q := range []string{"CREATE DATABASE test", "CREATE ROLE trackerd_pwauth NOLOGIN"} {
					if _, err := c.Exec(ctx, q); err != nil && !strings.Contains(err.Error(), "already exists") {
						return err
					}
				}
				return nil
			},
		},
		{
			env: "TRACKERD_TEST_MYSQL_URL", image: imageOr("TRACKERD_TEST_MARIADB_IMAGE", defaultMariaDBImage), port: "3306/tcp",
			cmd:  []string{"--server-id=1", "--log-bin=mysql-bin", "--binlog-format=ROW", "--binlog-row-image=FULL", "--binlog-row-metadata=FULL", "--max-allowed-packet=64M"},
			envs: map[string]string{"MARIADB_ROOT_PASSWORD": "root", "MARIADB_DATABASE": "test"},
			url:  func(h, p string) string { return fmt.Sprintf("mysql://root:root@%s:%s/test", h, p) },
			setup: func(ctx context.Context, url string) error {
				db, err := sql.Open("mysql", "root:root@tcp("+strings.TrimSuffix(strings.TrimPrefix(url, "mysql://root:root@"), "/test")+")/")
				if err != nil {
					return err
				}
				defer db.Close()
				_, err = db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS test")
				return err
			},
		},
		{
			env: "TRACKERD_TEST_NATS_URL", image: imageOr("TRACKERD_TEST_NATS_IMAGE", defaultNATSImage()), port: "4222/tcp",
			cmd: []string{"-js", "-sd", "/data"},
			url: func(h, p string) string { return fmt.Sprintf("nats://%s:%s", h, p) },
			setup: func(ctx context.Context, url string) error {
				nc, err := natsgo.Connect(url)
				if err == nil {
					nc.Close()
				}
				return err
			},
		},
	}
}

func imageOr(env, def string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

// startFallbackServers starts a container for each server whose variable
// is unset, when Docker answers, and returns a function that removes them.
func startFallbackServers() (cleanup func()) {
	var missing []fallback
	for _, f := range fallbacks() {
		if os.Getenv(f.env) == "" {
			missing = append(missing, f)
		}
	}
	if len(missing) == 0 {
		return func() {}
	}
	for k, v := range map[string]string{"TESTCONTAINERS_RYUK_DISABLED": "true", "TESTCONTAINERS_HOST_OVERRIDE": "localhost"} {
		if os.Getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err == nil {
		_, err = cli.Ping(ctx, client.PingOptions{})
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: no %s set and no Docker engine answers (%v): the tests that need them skip\n", envNames(missing), err)
		return func() {}
	}
	defer cli.Close()
	var started []testcontainers.Container
	cleanup = func() {
		for _, c := range started {
			c.Terminate(context.Background())
		}
	}
	for _, f := range missing {
		if _, err := cli.ImageInspect(ctx, f.image); err != nil && strings.HasPrefix(f.image, "tc-local/") {
			fmt.Fprintf(os.Stderr, "e2e: %s unset and image %s missing: run %s\n", f.env, f.image, buildImagesHint)
			continue
		}
		c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
			ContainerRequest: testcontainers.ContainerRequest{
				Image: f.image, ExposedPorts: []string{f.port}, Cmd: f.cmd, Env: f.envs, Files: f.files,
				Labels:     map[string]string{"org.trackerd.e2e": "servers"},
				WaitingFor: wait.ForListeningPort(f.port).WithStartupTimeout(2 * time.Minute),
			},
			Started: true,
		})
		if c != nil {
			started = append(started, c)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: start a container for %s (%s): %v\n", f.env, f.image, err)
			continue
		}
		host, _ := c.Host(ctx)
		port, err := c.MappedPort(ctx, f.port)
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s container: %v\n", f.env, err)
			continue
		}
		url := f.url(host, port.Port())
		// The port answers before the server does: retry the set-up.
		for deadline := time.Now().Add(time.Minute); ; {
			err = f.setup(ctx, url)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: set up the %s container: %v\n", f.env, err)
			continue
		}
		os.Setenv(f.env, url)
		fmt.Fprintf(os.Stderr, "e2e: %s unset: using a %s container at %s\n", f.env, f.image, url)
	}
	return cleanup
}

func envNames(fs []fallback) string {
	var names []string
	for _, f := range fs {
		names = append(names, f.env)
	}
	return strings.Join(names, ", ")
}
