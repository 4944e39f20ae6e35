package emulator_test

import (
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

func rateHeaders(rec *httptest.ResponseRecorder) (limit, remaining, reset string) {
	h := rec.Header()
	return h.Get("x-ratelimit-limit"), h.Get("x-ratelimit-remaining"), h.Get("x-ratelimit-reset")
}

func TestRateLimitWindow(t *testing.T) {
	e, clock := newEmulator(t, nil)
	clock.Set(windowAligned.Add(15 * time.Second)) // 45 s left in the window
	valid := body("add_members", "p", "c", "u")
	for i := 1; i <= 300; i++ {
		rec := serve(e, apiReq{body: valid})
		mustStatus(t, rec, 200)
		limit, remaining, reset := rateHeaders(rec)
		if limit != "300" || remaining != strconv.Itoa(300-i) || reset != "45" {
			t.Fatalf("request %d: headers limit=%q remaining=%q reset=%q", i, limit, remaining, reset)
		}
	}
	clock.Advance(44*time.Second + 500*time.Millisecond) // 0.5 s left: rounds up to 1
	rec := serve(e, apiReq{body: valid})
	mustStatus(t, rec, 429)
	checkErrorBody(t, rec.Body.Bytes(), err429)
	if limit, remaining, reset := rateHeaders(rec); limit != "300" || remaining != "0" || reset != "1" {
		t.Fatalf("429 headers limit=%q remaining=%q reset=%q", limit, remaining, reset)
	}
	if rec.Header().Get("Retry-After") != "" {
		t.Error("Retry-After sent although RetryAfter is off")
	}
	// The other workspace has its own window.
	rec = serve(e, apiReq{body: valid, auth: ptr(basic("ws2", "key2")), appKey: ptr("ws2")})
	mustStatus(t, rec, 200)
	if _, remaining, _ := rateHeaders(rec); remaining != "299" {
		t.Errorf("ws2 remaining = %q, want 299", remaining)
	}
	// 429s do not count: still exactly 300 counted for ws1.
	counted := 0
	for _, r := range e.Requests() {
		if r.Workspace == "ws1" && r.Counted {
			counted++
		}
	}
	if counted != 300 {
		t.Errorf("counted = %d, want 300", counted)
	}
	// A new window resets the count.
	clock.Advance(500 * time.Millisecond)
	rec = serve(e, apiReq{body: valid})
	mustStatus(t, rec, 200)
	if limit, remaining, reset := rateHeaders(rec); limit != "300" || remaining != "299" || reset != "60" {
		t.Fatalf("new window headers limit=%q remaining=%q reset=%q", limit, remaining, reset)
	}
}

func TestRateLimitEpochAndRetryAfter(t *testing.T) {
	e, clock := newEmulator(t, func(c *emulator.Config) {
		c.RateLimit = 2
		c.RateWindow = 10 * time.Second
		c.ResetHeader = emulator.ResetEpoch
		c.RetryAfter = true
	})
	clock.Set(windowAligned.Add(3 * time.Second))
	valid := body("add_members", "p", "c", "u")
	epoch := strconv.FormatInt(windowAligned.Add(10*time.Second).Unix(), 10)
	for range 2 {
		rec := serve(e, apiReq{body: valid})
		mustStatus(t, rec, 200)
		if _, _, reset := rateHeaders(rec); reset != epoch {
			t.Fatalf("reset = %q, want %s", reset, epoch)
		}
		if rec.Header().Get("Retry-After") != "" {
			t.Error("Retry-After on a 200")
		}
	}
	rec := serve(e, apiReq{body: valid})
	mustStatus(t, rec, 429)
	if got := rec.Header().Get("Retry-After"); got != "7" {
		t.Errorf("Retry-After = %q, want 7", got)
	}
	clock.Advance(7 * time.Second)
	mustStatus(t, serve(e, apiReq{body: valid}), 200)
}

func TestRateLimitCountRejected(t *testing.T) {
	for _, countRejected := range []bool{true, false} {
		t.Run(strconv.FormatBool(countRejected), func(t *testing.T) {
			e, _ := newEmulator(t, func(c *emulator.Config) {
				c.RateLimit = 3
				c.CountRejected = countRejected
			})
			// Rejected before authentication: never counted, no headers.
			rec := serve(e, apiReq{body: "{}", auth: ptr("")})
			mustStatus(t, rec, 401)
			if l, _, _ := rateHeaders(rec); l != "" {
				t.Errorf("401 has rate-limit headers")
			}
			rec = serve(e, apiReq{body: "{}", contentType: ptr("text/plain")})
			mustStatus(t, rec, 415)
			// Rejected after authentication: counted only with CountRejected.
			rec = serve(e, apiReq{body: "{}"})
			mustStatus(t, rec, 400)
			want := "3"
			if countRejected {
				want = "2"
			}
			if _, remaining, _ := rateHeaders(rec); remaining != want {
				t.Errorf("400 remaining = %q, want %s", remaining, want)
			}
			ok := 0
			for range 5 {
				if serve(e, apiReq{body: exampleAdd}).Code == 200 {
					ok++
				}
			}
			if wantOK := map[bool]int{true: 2, false: 3}[countRejected]; ok != wantOK {
				t.Errorf("%d requests accepted after a 400, want %d", ok, wantOK)
			}
		})
	}
}

func TestRateLimitUnlimited(t *testing.T) {
	e, _ := newEmulator(t, func(c *emulator.Config) { c.RateLimit = 0 })
	for range 500 {
		rec := serve(e, apiReq{body: exampleAdd})
		mustStatus(t, rec, 200)
		if l, r, s := rateHeaders(rec); l != "" || r != "" || s != "" {
			t.Fatal("unlimited emulator sent rate-limit headers")
		}
	}
	// The zero Config is unlimited too.
	z, err := emulator.New(emulator.Config{Credentials: testCreds})
	if err != nil {
		t.Fatal(err)
	}
	for range 400 {
		mustStatus(t, serve(z, apiReq{body: exampleAdd}), 200)
	}
}
