package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/trackerd/trackerd/config"
)

// The control service: requests to a running trackerd over NATS, so that
// they reach it from any host that reaches NATS and reach every instance
// of a group (the README, "Operating trackerd"). It is a NATS micro service
// named "trackerd" (`nats micro ls`, `nats micro info trackerd`), whose
// endpoints are subjects under
//
//	$TRACKERD.<STREAM_NAME>.<endpoint>
//
// outside the stream's subjects, whatever SUBJECT_PREFIX is (a prefix
// cannot begin with "$"): a request on a subject the stream captures would
// get JetStream's publish acknowledgement as its reply. STREAM_NAME tells
// deployments sharing a NATS apart. Endpoints:
//
//	status     every instance answers with its status document (no queue
//	           group): the asker gathers the answers.
//	backfill   starts a backfill of a bind (snapctl.go); the instance that
//	           runs the bind answers with the snapshot.
//	snapshots  every instance answers with its binds' snapshots.
//	cancel     cancels a snapshot; the instance that runs it answers.
//
// New endpoints are added in controlEndpoints.

// controlService is the micro service's name.
const controlService = "trackerd"

// controlSubject returns the subject of a deployment's endpoint.
func controlSubject(cfg *config.Config, endpoint string) string {
	return controlGroup(cfg) + "." + endpoint
}

func controlGroup(cfg *config.Config) string { return "$TRACKERD." + cfg.StreamName }

// controlEndpoint is one endpoint of the control service.
type controlEndpoint struct {
	name    string
	handler micro.HandlerFunc
	// everyInstance makes every instance answer (no queue group), for
	// requests whose asker gathers the answers.
	everyInstance bool
	about         string
}

// controlEndpoints lists the endpoints a daemon serves.
func controlEndpoints(d *daemon) []controlEndpoint {
	eps := []controlEndpoint{
		{name: "status", everyInstance: true, about: "this instance's status document (every instance answers)",
			handler: func(r micro.Request) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				r.RespondJSON(d.status(ctx, time.Now()))
			}},
	}
	return append(eps, snapshotEndpoints(trackerSnapshots{d.tr})...)
}

// startControl registers the control service on nc and returns a function
// that stops it.
func startControl(nc *natsgo.Conn, cfg *config.Config, d *daemon, log *slog.Logger) (func(), error) {
	svc, err := micro.AddService(nc, micro.Config{
		Name:        controlService,
		Version:     semver(d.build.Version),
		Description: "trackerd: requests to a running daemon",
		Metadata: map[string]string{
			"owner": d.tr.Owner(), "pid": strconv.Itoa(d.pid), "stream": cfg.StreamName,
			"subject_prefix": cfg.SubjectPrefix, "version": d.build.Version,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("NATS control service: %w", err)
	}
	g := svc.AddGroup(controlGroup(cfg))
	var subjects []string
	for _, e := range controlEndpoints(d) {
		opts := []micro.EndpointOpt{micro.WithEndpointMetadata(map[string]string{"about": e.about})}
		if e.everyInstance {
			opts = append(opts, micro.WithEndpointQueueGroupDisabled())
		}
		if err := g.AddEndpoint(e.name, e.handler, opts...); err != nil {
			svc.Stop()
			return nil, fmt.Errorf("NATS control service: endpoint %s: %w", e.name, err)
		}
		subjects = append(subjects, controlSubject(cfg, e.name))
	}
	log.Info("NATS control service listening", slog.String("service", controlService), slog.String("subjects", strings.Join(subjects, " ")))
	return func() { svc.Stop() }, nil
}

var semverRE = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// semver returns v as the semantic version micro requires: without its
// leading v, "0.0.0-devel" for a development build.
func semver(v string) string {
	s := strings.TrimPrefix(v, "v")
	if semverRE.MatchString(s) {
		return s
	}
	return "0.0.0-devel"
}

// askStatus sends a status request on subject and gathers the answers:
// it waits up to wait for the first, then until no other comes for
// settle. No answer is not an error: it returns none.
func askStatus(ctx context.Context, nc *natsgo.Conn, subject string, wait, settle time.Duration) ([]statusDoc, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(subject, inbox, nil); err != nil {
		return nil, err
	}
	var docs []statusDoc
	deadline := time.Now().Add(wait)
	for {
		timeout := time.Until(deadline)
		if len(docs) > 0 {
			timeout = settle
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
			timeout = time.Until(dl)
		}
		if timeout <= 0 {
			return docs, nil
		}
		m, err := sub.NextMsg(timeout)
		switch {
		case errors.Is(err, natsgo.ErrTimeout), errors.Is(err, natsgo.ErrNoResponders):
			return docs, nil // the end, or nobody serves the subject
		case err != nil:
			return docs, err
		}
		if m.Header.Get("Status") == "503" {
			return docs, nil // no responders: nobody serves the subject
		}
		if e := m.Header.Get(micro.ErrorHeader); e != "" {
			return docs, fmt.Errorf("status request: %s", e)
		}
		var d statusDoc
		if err := json.Unmarshal(m.Data, &d); err != nil {
			return docs, fmt.Errorf("status answer: %w", err)
		}
		docs = append(docs, d)
	}
}
