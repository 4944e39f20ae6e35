package sink_test

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// specAccept200 is an in-memory transport that reads the body and answers
// 200, for benchmarks.
type specAccept200 struct{}

func (specAccept200) RoundTrip(r *http.Request) (*http.Response, error) {
	_, _ = io.Copy(io.Discard, r.Body)
	r.Body.Close()
	return &http.Response{StatusCode: 200, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: io.NopCloser(strings.NewReader(specSuccess)),
		ContentLength: int64(len(specSuccess)), Request: r}, nil
}

// BenchmarkSpecSend is one accepted 1000-member request, through the whole
// client (encoding, headers, metrics, draining) without a network.
func BenchmarkSpecSend(b *testing.B) {
	c, err := sink.New(sink.Config{BaseURL: "https://api-01.moengage.com", WorkspaceID: specWorkspace, APIKey: specKey,
		HTTPClient: &http.Client{Transport: specAccept200{}},
		Logger:     slog.New(slog.DiscardHandler), Metrics: metrics.NewMetrics(nil)})
	if err != nil {
		b.Fatal(err)
	}
	req := specRequest(1000)
	for i := range req.UIDs {
		req.UIDs[i] = "user-" + strings.Repeat("0", 30) + req.UIDs[i] // 40-byte uids
	}
	b.SetBytes(int64(wire.Size(req)))
	b.ReportAllocs()
	for b.Loop() {
		if rej, err := c.Send(b.Context(), req); err != nil || len(rej) != 0 {
			b.Fatal(rej, err)
		}
	}
}
