package config_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

func TestUnknownVars(t *testing.T) {
	environ := []string{
		"PATH=/usr/bin",
		"MAX_INFLIGHT=8",                      // dropped underscore
		"KAFKA_BROKER=k:9092",                 // missing S
		"MOENGAGE_API_KEY=sekrit-value",       // the value must never show
		"BATCH_WINDWO=1s",                     // transposition
		"max_in_flight=3",                     // wrong case: Load does not read it
		"RATE_LIMIT=300",                      // nearest is RATE_LIMIT_RPM (4 edits, len 14)
		"COHORTSYNC_SOMETHING_ELSE=x",         // ours by prefix, close to nothing
		"MAX_IN_FLIGHT=4",                     // known
		"MOENGAGE_DATA_API_KEY_FILE=/run/key", // known
		"KAFKA_TOPICS=",                       // empty: unset, as for Load
		"HTTP_PROXY=http://proxy:3128",        // Go's proxy setting
		"KAFKA_HEAP_OPTS=-Xmx1g",              // Apache Kafka scripts
		"KAFKA_SERVICE_HOST=10.0.0.1",         // Kubernetes service links
		"KAFKA_PORT=tcp://10.0.0.1:9092",
		"KAFKA_PORT_9092_TCP_ADDR=10.0.0.1",
		"COHORTSYNC_EMULATOR_SERVICE_PORT_HTTP=8080",
		"MAX_INFLIGHT=9", // repeated: reported once
	}
	got := config.UnknownVars(environ)
	want := []config.UnknownVar{
		{Name: "MAX_INFLIGHT", Suggestion: "MAX_IN_FLIGHT"},
		{Name: "KAFKA_BROKER", Suggestion: "KAFKA_BROKERS"},
		{Name: "MOENGAGE_API_KEY", Suggestion: "MOENGAGE_DATA_API_KEY"},
		{Name: "BATCH_WINDWO", Suggestion: "BATCH_WINDOW"},
		{Name: "max_in_flight", Suggestion: "MAX_IN_FLIGHT"},
		{Name: "RATE_LIMIT", Suggestion: "RATE_LIMIT_RPM"},
		{Name: "COHORTSYNC_SOMETHING_ELSE"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("UnknownVars:\n got %v\nwant %v", got, want)
	}
	for _, u := range got {
		if strings.Contains(u.String(), "sekrit") || strings.Contains(u.String(), "\n") {
			t.Errorf("%q: a value or a line break in the report", u.String())
		}
	}
	if s := got[0].String(); !strings.Contains(s, "did you mean MAX_IN_FLIGHT?") {
		t.Errorf("report %q does not suggest MAX_IN_FLIGHT", s)
	}
}

// TestUnknownVarsNoneForKnown: every variable of Vars, set, is known.
func TestUnknownVarsNoneForKnown(t *testing.T) {
	var environ []string
	for _, v := range config.Vars {
		environ = append(environ, v.Env+"=x")
	}
	if got := config.UnknownVars(environ); len(got) != 0 {
		t.Fatalf("known variables reported as unknown: %v", got)
	}
}
