package emulator

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// TestReadAllMatchesIOReadAll checks that readAll returns what io.ReadAll
// returns, whatever the buffer it starts from. readAll's reads are larger
// (the pooled buffer is sized for the whole body), so the readers here fail
// at a position in the data, not at their n-th call (as iotest.TimeoutReader
// does), which is how a request body fails.
func TestReadAllMatchesIOReadAll(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 130)
	errBroken := errors.New("broken")
	readers := map[string]func() io.Reader{
		"plain":     func() io.Reader { return bytes.NewReader(data) },
		"empty":     func() io.Reader { return bytes.NewReader(nil) },
		"one byte":  func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) },
		"half":      func() io.Reader { return iotest.HalfReader(bytes.NewReader(data)) },
		"data+EOF":  func() io.Reader { return iotest.DataErrReader(bytes.NewReader(data)) },
		"error":     func() io.Reader { return io.MultiReader(bytes.NewReader(data[:700]), iotest.ErrReader(errBroken)) },
		"limited":   func() io.Reader { return io.LimitReader(bytes.NewReader(data), 1001) },
		"limited 0": func() io.Reader { return io.LimitReader(bytes.NewReader(data), 0) },
	}
	for name, mk := range readers {
		want, wantErr := io.ReadAll(mk())
		for _, c := range []int{0, 1, 512, len(data), len(data) + 1, 4096} {
			got, err := readAll(mk(), make([]byte, 0, c))
			if !bytes.Equal(got, want) || err != wantErr {
				t.Errorf("%s, cap %d: readAll = %d bytes, %v; io.ReadAll = %d bytes, %v", name, c, len(got), err, len(want), wantErr)
			}
		}
	}
}

// TestRequestsKeepTheirMembers sends bodies of different sizes, with and
// without a Content-Length, and checks that the log and the state hold each
// body's uids although the emulator reuses its body buffers.
func TestRequestsKeepTheirMembers(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Credentials = map[string]string{"ws": "key"}
	cfg.RateLimit = 0
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	var sent [][]string
	for i := range 12 {
		req := wire.Request{Header: wire.Header{Action: event.Add, Partner: "p", CohortID: "c", CohortName: "N"}}
		for range 1 + r.IntN(3000) {
			req.UIDs = append(req.UIDs, randomUID(r))
		}
		body := wire.AppendBody(nil, req)
		if i%3 == 2 {
			body = append(body, strings.Repeat(" ", r.IntN(DefaultMaxBodyBytes-len(body)))...) // a buffer full of spaces
		}
		hr := httptest.NewRequest(http.MethodPost, "http://emulator"+APIPath, bytes.NewReader(body))
		if i%2 == 1 {
			hr.ContentLength = -1 // as for a chunked body
		}
		hr.Header.Set("Content-Type", "application/json")
		hr.SetBasicAuth("ws", "key")
		hr.Header.Set("MOE-APPKEY", "ws")
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, hr)
		if rec.Code != http.StatusOK {
			t.Fatalf("request %d: status %d: %s", i, rec.Code, rec.Body)
		}
		sent = append(sent, req.UIDs)
	}
	var all []string
	for i, rec := range e.Requests() {
		if !slices.Equal(rec.Members, sent[i]) {
			t.Fatalf("record %d holds other members than were sent", i)
		}
		all = append(all, sent[i]...)
	}
	slices.Sort(all)
	if got := e.Members("ws", "p", "c"); !slices.Equal(got, slices.Compact(all)) {
		t.Fatalf("segment has %d members, want %d", len(got), len(slices.Compact(all)))
	}
}
