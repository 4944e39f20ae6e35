package parkio

import "github.com/segmentio/kafka-go"

// HeadersOf and MarkerHeadersOf expose the Writer's header encoding to the
// tests.
func HeadersOf(r Record) []kafka.Header        { return r.headers() }
func MarkerHeadersOf(gen int64) []kafka.Header { return markerHeaders(gen) }
