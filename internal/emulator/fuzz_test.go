package emulator_test

import (
	"bytes"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

const fuzzMaxBody = 2048

// FuzzRequest feeds arbitrary bodies, with valid headers, to the API and
// checks that the emulator never panics, answers only documented statuses
// with a well-formed body, and answers 200 exactly for bodies that an
// independent decoder (oracleValid) finds to be a valid request, whose
// change it then applies.
func FuzzRequest(f *testing.F) {
	seeds := []string{
		exampleAdd, exampleRemove, "", "{}", "null", "[]", `{"action":"add_members"}`,
		withMembers(`[]`), withMembers(`[{"uid":""}]`), withMembers(`[{"uid":"a","x":1}]`), withMembers(`[{"uid":1}]`),
		params(`{"cohort_name":".N","cohort_id":"c","members":[{"uid":"u"}]}`),
		params(`{"cohort_name":"a|b","cohort_id":"c","members":[{"uid":"u"}]}`),
		params(`{"cohort_name":"N","cohort_id":"c","cohort_description":null,"members":[{"uid":"u"}]}`),
		`{"action":"add_members","action":"nope","partner":"p","parameters":{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u"}]}}`,
		`{"ACTION":"add_members","partner":"p","parameters":{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u"}]}}`,
		exampleAdd + " {}", "\xff", strings.Replace(exampleAdd, "mm1", "m\xc3m", 1), `{"x":1e999}`,
		strings.Repeat("[", 100), exampleAdd + strings.Repeat(" ", fuzzMaxBody),
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	cfg := emulator.Config{Credentials: testCreds, MaxBodyBytes: fuzzMaxBody, RequestLogSize: 10}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := emulator.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		rec := serve(e, apiReq{body: string(b)})
		valid := len(b) <= fuzzMaxBody && oracleValid(b)
		switch rec.Code {
		case 200:
			if !valid {
				t.Fatalf("200 for a body the oracle rejects: %q", b)
			}
			if rec.Body.String() != successBody {
				t.Fatalf("200 body = %s", rec.Body.String())
			}
			checkApplied(t, e, b)
		case 400, 413:
			if valid {
				t.Fatalf("%d for a valid body %q: %s", rec.Code, b, rec.Body.String())
			}
			if rec.Code == 413 && len(b) <= fuzzMaxBody || rec.Code == 400 && len(b) > fuzzMaxBody {
				t.Fatalf("status %d for %d bytes", rec.Code, len(b))
			}
			var resp emulator.ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("error body is not JSON: %s", rec.Body.String())
			}
			if resp.Status != "fail" || resp.Error.Type == "" || resp.Error.Message == "" || !requestIDRe.MatchString(resp.Error.RequestID) {
				t.Fatalf("error body = %s", rec.Body.String())
			}
		default:
			t.Fatalf("undocumented status %d for %q: %s", rec.Code, b, rec.Body.String())
		}
	})
}

// oracleValid decides validity with a generic decoder (map[string]any with
// UseNumber) instead of the emulator's raw-message walk.
func oracleValid(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		return false
	}
	top, ok := v.(map[string]any)
	if !ok {
		return false
	}
	nonEmpty := func(m map[string]any, k string) (string, bool) {
		s, ok := m[k].(string)
		return s, ok && s != ""
	}
	if a, _ := top["action"].(string); a != "add_members" && a != "remove_members" {
		return false
	}
	if _, ok := nonEmpty(top, "partner"); !ok {
		return false
	}
	p, ok := top["parameters"].(map[string]any)
	if !ok {
		return false
	}
	name, ok := nonEmpty(p, "cohort_name")
	if !ok || strings.ContainsAny(name, `|*?\:<>=$"`) || strings.HasPrefix(name, ".") {
		return false
	}
	if _, ok := nonEmpty(p, "cohort_id"); !ok {
		return false
	}
	if d, ok := p["cohort_description"]; ok && d != nil {
		if _, ok := d.(string); !ok {
			return false
		}
	}
	members, ok := p["members"].([]any)
	if !ok || len(members) == 0 {
		return false
	}
	for _, m := range members {
		mm, ok := m.(map[string]any)
		if !ok {
			return false
		}
		if _, ok := nonEmpty(mm, "uid"); !ok {
			return false
		}
	}
	return true
}

// checkApplied checks that an accepted body changed the segment state.
func checkApplied(t *testing.T, e *emulator.Emulator, b []byte) {
	t.Helper()
	var req struct {
		Action     string `json:"action"`
		Partner    string `json:"partner"`
		Parameters struct {
			CohortID string `json:"cohort_id"`
			Members  []struct {
				UID string `json:"uid"`
			} `json:"members"`
		} `json:"parameters"`
	}
	// Struct decoding matches keys without regard to case, so only use it
	// when the keys are unambiguous.
	if json.Unmarshal(b, &req) != nil || bytes.Count(b, []byte(`"action"`)) != 1 || bytes.Count(b, []byte(`"partner"`)) != 1 ||
		bytes.Count(b, []byte(`"cohort_id"`)) != 1 || bytes.Count(b, []byte(`"members"`)) != 1 || bytes.Contains(b, []byte(`\`)) {
		return
	}
	members := e.Members("ws1", req.Partner, req.Parameters.CohortID)
	if members == nil {
		t.Fatalf("accepted request created no segment: %q", b)
	}
	for _, m := range req.Parameters.Members {
		if has := slices.Contains(members, m.UID); has != (req.Action == "add_members") {
			t.Fatalf("after %s, uid %q present = %v", req.Action, m.UID, has)
		}
	}
}
