package nats

import (
	"testing"

	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/internal/backoff"
)

// TestMinDuplicateWindowCoversResends keeps config's shortest
// DUPLICATE_WINDOW above this sink's re-send horizon: a message whose ack
// is lost is sent again at most AckTimeout (the ack wait) + AckTimeout (the
// messages in flight settle) + the longest back-off (backoff.Publish.Max)
// after it was sent, and the window must be twice that (fault review M3).
func TestMinDuplicateWindowCoversResends(t *testing.T) {
	horizon := 2*DefaultAckTimeout + backoff.Publish.Max
	if config.MinDuplicateWindow < 2*horizon {
		t.Fatalf("config.MinDuplicateWindow %v is below twice the re-send horizon %v", config.MinDuplicateWindow, horizon)
	}
	if DefaultDuplicateWindow < config.MinDuplicateWindow {
		t.Fatalf("DefaultDuplicateWindow %v is below config.MinDuplicateWindow %v", DefaultDuplicateWindow, config.MinDuplicateWindow)
	}
}
