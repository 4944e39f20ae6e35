package parkio_test

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/parking/parkio"
)

// TestTopicName: the parking topic is named after the group.
func TestTopicName(t *testing.T) {
	if got := parkio.TopicName("cohortsync"); got != "cohortsync.parked" {
		t.Fatalf("TopicName = %q", got)
	}
}

// message is what a reader gets for a record written with headers h.
func message(key, value []byte, h []kafka.Header) kafka.Message {
	return kafka.Message{Partition: 3, Offset: 41, Key: key, Value: value, Headers: h}
}

// TestHeaderRoundTrip: a record written by the Writer decodes to itself (its
// not-before rounded up to the millisecond), and a marker to a marker.
func TestHeaderRoundTrip(t *testing.T) {
	r := parkio.Record{Workspace: "ws é,1", Cohort: "c:7", Key: []byte("k"), Value: []byte(`{"v":1}`),
		SourceTopic: "in", SourcePartition: 5, SourceOffset: 1 << 40, NotBefore: 1500*time.Microsecond + 1, Generation: 9}
	p, err := parkio.Decode(message(r.Key, r.Value, parkio.HeadersOf(r)))
	if err != nil {
		t.Fatal(err)
	}
	want := r
	want.NotBefore = 2 * time.Millisecond // rounded up: the reader never waits less
	if !reflect.DeepEqual(p, parkio.Parked{Record: want, Partition: 3, Offset: 41}) {
		t.Fatalf("decoded %+v, want %+v", p, want)
	}
	m, err := parkio.Decode(message(nil, nil, parkio.MarkerHeadersOf(12)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, parkio.Parked{Record: parkio.Record{Generation: 12}, Marker: true, Partition: 3, Offset: 41}) {
		t.Fatalf("marker decoded as %+v", m)
	}
}

// TestDecodeErrors: a record of the parking topic that a worker did not
// write (a header missing or unreadable) is ErrNotParked.
func TestDecodeErrors(t *testing.T) {
	good := parkio.HeadersOf(parkio.Record{Workspace: "w", Cohort: "c", SourceTopic: "in", Generation: 1})
	without := func(name string) []kafka.Header {
		var out []kafka.Header
		for _, h := range good {
			if h.Key != name {
				out = append(out, h)
			}
		}
		return out
	}
	with := func(name, v string) []kafka.Header {
		out := without(name)
		return append(out, kafka.Header{Key: name, Value: []byte(v)})
	}
	cases := map[string][]kafka.Header{
		"no headers":             nil,
		"no workspace":           without(parkio.HeaderWorkspace),
		"no cohort":              without(parkio.HeaderCohort),
		"no source topic":        without(parkio.HeaderSourceTopic),
		"no source partition":    without(parkio.HeaderSourcePartition),
		"no source offset":       without(parkio.HeaderSourceOffset),
		"no not-before":          without(parkio.HeaderNotBefore),
		"no generation":          without(parkio.HeaderGeneration),
		"bad generation":         with(parkio.HeaderGeneration, "x"),
		"bad source offset":      with(parkio.HeaderSourceOffset, "1.5"),
		"negative partition":     with(parkio.HeaderSourcePartition, "-1"),
		"negative not-before":    with(parkio.HeaderNotBefore, "-3"),
		"marker not 1":           with(parkio.HeaderMarker, "yes"),
		"marker, no generation":  {{Key: parkio.HeaderMarker, Value: []byte("1")}},
		"another writer's event": {{Key: "content-type", Value: []byte("application/json")}},
	}
	for name, h := range cases {
		if _, err := parkio.Decode(message([]byte("k"), []byte("v"), h)); !errors.Is(err, parkio.ErrNotParked) {
			t.Errorf("%s: err = %v, want ErrNotParked", name, err)
		}
	}
	if _, err := parkio.Decode(message([]byte("k"), []byte("v"), good)); err != nil {
		t.Fatalf("the complete headers: %v", err)
	}
}
