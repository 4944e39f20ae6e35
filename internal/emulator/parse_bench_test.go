package emulator

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// benchBodyBytes is the size the worker packs its bodies to (just under
// the 128 KB cap).
const benchBodyBytes = 128_000

// benchRequest returns a wire.Request whose AppendBody output is as long as
// possible without exceeding benchBodyBytes, with random 10-letter uids
// drawn from r, like the bodies of the benchmark command.
func benchRequest(r *rand.Rand, action event.Action, cohortID string) wire.Request {
	req := wire.Request{
		Header: wire.Header{
			Action:            action,
			Partner:           "6HNBXFm7ZS",
			CohortID:          cohortID,
			CohortName:        "Bench_" + cohortID,
			CohortDescription: "A cohort of users from a partner.",
		},
	}
	env := wire.EnvelopeSize(req.Header)
	memberBytes := 0
	for {
		uid := randomUID(r)
		if wire.BodySize(env, len(req.UIDs)+1, memberBytes+wire.MemberSize(uid)) > benchBodyBytes {
			return req
		}
		req.UIDs = append(req.UIDs, uid)
		memberBytes += wire.MemberSize(uid)
	}
}

func randomUID(r *rand.Rand) string {
	const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	var b [10]byte
	for i := range b {
		b[i] = alnum[r.IntN(len(alnum))]
	}
	return string(b[:])
}

func benchBody(b *testing.B) []byte {
	b.Helper()
	body := wire.AppendBody(nil, benchRequest(rand.New(rand.NewPCG(1, 2)), event.Add, "JKTAuqTRhC"))
	if len(body) > benchBodyBytes || len(body) < benchBodyBytes-32 {
		b.Fatalf("bench body has %d bytes", len(body))
	}
	return body
}

func benchmarkParse(b *testing.B, parse func(validator, []byte) (cohortRequest, *apiError)) {
	body := benchBody(b)
	v := validator{leadingPeriod: LeadingPeriodReject}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		req, aerr := parse(v, body)
		if aerr != nil || len(req.Members) == 0 {
			b.Fatalf("parse: %+v", aerr)
		}
	}
}

// BenchmarkParse measures the entry point on a full AppendBody body (which
// parseFast decodes).
func BenchmarkParse(b *testing.B) { benchmarkParse(b, validator.parse) }

// BenchmarkParseSlow measures the reference decoder on the same body: the
// cost of parse before parseFast.
func BenchmarkParseSlow(b *testing.B) { benchmarkParse(b, validator.parseSlow) }

// BenchmarkServeHTTP sends full add_members bodies, each followed by the
// remove_members of the same uids (so every add inserts new members and
// the state stays bounded), through ServeHTTP with the request log
// configured as the benchmark command does (every member kept).
func BenchmarkServeHTTP(b *testing.B) {
	cfg := DefaultConfig()
	cfg.Credentials = map[string]string{"bench": "bench-key"}
	cfg.RateLimit = 0
	cfg.RequestLogSize = 200
	cfg.RequestLogMaxMembers = -1
	e, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var bodies [][]byte
	total := 0
	for i := range 8 {
		add := benchRequest(r, event.Add, fmt.Sprintf("cohort%d", i))
		remove := add
		remove.Action = event.Remove
		for _, req := range []wire.Request{add, remove} {
			body := wire.AppendBody(nil, req)
			bodies = append(bodies, body)
			total += len(body)
		}
	}
	b.ReportAllocs()
	b.SetBytes(int64(total / len(bodies)))
	i := 0
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "http://emulator"+APIPath, bytes.NewReader(bodies[i%len(bodies)]))
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("bench", "bench-key")
		req.Header.Set("MOE-APPKEY", "bench")
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		i++
	}
}
