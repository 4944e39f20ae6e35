package config

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Prefixes are the name prefixes of the worker's variables. An environment
// variable with one of them (in any letter case) that is not in Vars is
// reported by UnknownVars: most often it is a typo (MAX_INFLIGHT for
// MAX_IN_FLIGHT), which Load cannot see and which would otherwise leave the
// intended setting at its default without a word.
var Prefixes = []string{"KAFKA_", "MOENGAGE_", "COHORTSYNC_", "BATCH_", "RATE_", "MAX_", "RETRY_", "SHUTDOWN_", "HTTP_", "LOG_"}

// UnknownVar is an environment variable that looks like one of the worker's
// (it has one of Prefixes) but is not one.
type UnknownVar struct {
	// Name is the variable as set, e.g. MAX_INFLIGHT.
	Name string
	// Suggestion is the known variable closest to Name (MAX_IN_FLIGHT), or
	// "" when none is close enough to be a likely typo.
	Suggestion string
}

// String is the one-line report: `unknown variable MAX_INFLIGHT (did you
// mean MAX_IN_FLIGHT?)`. It never contains the variable's value.
func (u UnknownVar) String() string {
	if u.Suggestion == "" {
		return fmt.Sprintf("unknown variable %s: not a cohortsync-worker setting, and ignored", u.Name)
	}
	return fmt.Sprintf("unknown variable %s (did you mean %s?): ignored, so %s keeps its value", u.Name, u.Suggestion, u.Suggestion)
}

// notOurs are variables with one of Prefixes that other software sets next
// to the worker and that are never a typo of one of ours: Go's proxy
// settings and the Apache Kafka scripts' JVM settings.
var notOurs = []string{"HTTP_PROXY", "KAFKA_HOME", "KAFKA_OPTS", "KAFKA_HEAP_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS",
	"KAFKA_LOG4J_OPTS", "KAFKA_GC_LOG_OPTS", "KAFKA_JMX_OPTS", "KAFKA_DEBUG"}

// serviceLink matches the variables Kubernetes injects for every Service in
// the namespace (enableServiceLinks, on by default): a Service named kafka
// gives KAFKA_SERVICE_HOST, KAFKA_PORT, KAFKA_PORT_9092_TCP_ADDR and so on.
var serviceLink = regexp.MustCompile(`^[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(ADDR|PORT|PROTO))?)?)$`)

// UnknownVars returns the variables of environ ("NAME=value" entries, as
// os.Environ gives them) that have one of Prefixes but are not in Vars,
// each with the closest known name when one is close, in the order of
// environ. Variables with an empty value are skipped, as Load treats them
// as unset; so are Kubernetes service-link variables and the few foreign
// variables in notOurs. Values are never looked at beyond being empty.
func UnknownVars(environ []string) []UnknownVar {
	known := make([]string, len(Vars))
	for i, v := range Vars {
		known[i] = v.Env
	}
	var out []UnknownVar
	seen := map[string]bool{}
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if value == "" || seen[name] || slices.Contains(known, name) {
			continue
		}
		seen[name] = true
		upper := strings.ToUpper(name)
		if !slices.ContainsFunc(Prefixes, func(p string) bool { return strings.HasPrefix(upper, p) }) ||
			slices.Contains(notOurs, upper) || serviceLink.MatchString(upper) {
			continue
		}
		out = append(out, UnknownVar{Name: name, Suggestion: closest(upper, known)})
	}
	return out
}

// closest returns the name in known nearest to name by edit distance (a
// transposition counts as one edit) among those at most max(2, len/4) edits
// away or extending name by whole words (RATE_LIMIT for RATE_LIMIT_RPM), or
// "" when there is none. Ties go to the earlier name.
func closest(name string, known []string) string {
	best, bestD := "", -1
	for _, k := range known {
		d := editDistance(name, k)
		near := d <= max(2, len(k)/4) || strings.HasPrefix(k, name+"_") || strings.HasPrefix(name, k+"_")
		if near && (bestD < 0 || d < bestD) {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the optimal-string-alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of adjacent
// bytes each cost one. Variable names are ASCII.
func editDistance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
