package nats

import (
	"context"
	"time"

	natsgo "github.com/nats-io/nats.go"
)

// transport is the part of a NATS connection the lanes use. It is small so
// that unit tests can put a scripted fake server behind a lane.
type transport interface {
	// publishMsg hands m to the connection; it may not keep m.
	publishMsg(m *natsgo.Msg) error
	// subscribe delivers the messages of subject to cb, one at a time.
	subscribe(subject string, cb natsgo.MsgHandler) (unsubscribe func() error, err error)
	// newInbox returns a unique reply subject prefix.
	newInbox() string
	// maxPayload is the server's max_payload, 0 before the first connect.
	maxPayload() int64
	// connected reports whether the connection is up now.
	connected() bool
	// flush waits until the server has processed what was published.
	flush(ctx context.Context) error
}

// connTransport is the transport of a real connection.
type connTransport struct{ nc *natsgo.Conn }

func (c connTransport) publishMsg(m *natsgo.Msg) error { return c.nc.PublishMsg(m) }

func (c connTransport) subscribe(subject string, cb natsgo.MsgHandler) (func() error, error) {
	sub, err := c.nc.Subscribe(subject, cb)
	if err != nil {
		return nil, err
	}
	// The lane's window bounds what is pending: no slow-consumer limit is
	// needed below it.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return sub.Unsubscribe, nil
}

func (c connTransport) newInbox() string  { return c.nc.NewInbox() }
func (c connTransport) maxPayload() int64 { return c.nc.MaxPayload() }
func (c connTransport) connected() bool   { return c.nc.IsConnected() }

func (c connTransport) flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	return c.nc.FlushWithContext(ctx)
}
