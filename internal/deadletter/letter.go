// Package deadletter is the dead-letter concern: the letter format (the
// headers that say why and where a record failed, bounded values, the
// letter written without the record's value when it is too large) and the
// writer (DLQ) that writes letters to the dead-letter topic and settles
// their records only once written. The consumer writes the records it
// cannot decode (DLQ.Invalid), the batcher the members the API rejected
// (DLQ.DeadLetter); dlq replay reads the headers back.
package deadletter

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// Dead-letter record headers. Every value the worker writes is bounded
// (MaxHeaderValue); the record's own headers are kept as they are.
const (
	HeaderReason          = "cohortsync-reason"           // a bounded event.Reason
	HeaderError           = "cohortsync-error"            // human-readable detail
	HeaderSourceTopic     = "cohortsync-source-topic"     // where the record was read
	HeaderSourcePartition = "cohortsync-source-partition" // decimal
	HeaderSourceOffset    = "cohortsync-source-offset"    // decimal
	HeaderFailedAt        = "cohortsync-failed-at"        // RFC 3339
	// HeaderOriginalSize is set on a letter written without the record's
	// value (and headers) because it was too large for the dead-letter
	// topic: the size of the value, in bytes (decimal).
	HeaderOriginalSize = "cohortsync-original-size"
	// HeaderOriginalReason is set on such a letter too: the reason the
	// record was dead-lettered for (its HeaderReason is too_large).
	HeaderOriginalReason = "cohortsync-original-reason"
)

// MaxHeaderValue is the most bytes of a header value the worker writes on a
// dead letter: longer error texts are cut (at a character boundary, with an
// ellipsis and the full length) so that a letter is never much larger than
// its record.
const MaxHeaderValue = 512

// DefaultMaxLetterBytes is the largest dead letter (key, value and headers)
// the DLQ tries to write as it is: under kafka-go's default batch limit
// (1 MiB) and Kafka's default max.message.bytes (1 MiB + 12). A larger
// letter is written without its value (see DLQ). Set DLQ.MaxLetterBytes
// for a dead-letter topic configured with a lower max.message.bytes; the
// DLQ also lowers its limit when the broker refuses a letter as too large.
const DefaultMaxLetterBytes = 1000000

// maxKeptKey is the largest key a letter written without its value keeps.
const maxKeptKey = 16 << 10

// Source is the record a dead letter stands for: where it was read, and
// its key.
type Source struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
}

// Locator returns the record that ack (the Ack of a rejected member h/uid)
// stands for; ok is false when ack does not know it (the letter's source
// headers then say topic "", partition and offset -1, and it has no key).
type Locator func(ack batcher.Ack, h wire.Header, uid string) (src Source, ok bool)

// sourceHeaders are the headers that say why and where a record failed.
func sourceHeaders(reason event.Reason, detail, topic string, partition int, offset int64) []kafka.Header {
	return []kafka.Header{
		{Key: HeaderReason, Value: []byte(reason)},
		{Key: HeaderError, Value: []byte(Clip(detail, MaxHeaderValue))},
		{Key: HeaderSourceTopic, Value: []byte(topic)},
		{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(partition))},
		{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(offset, 10))},
		{Key: HeaderFailedAt, Value: []byte(time.Now().UTC().Format(time.RFC3339))},
	}
}

// letterSize is an upper bound of the size of m in a Kafka record batch
// (kafka-go's Message.totalSize plus the batch's own header).
func letterSize(m kafka.Message) int {
	n := 128 + len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += 10 + len(h.Key) + len(h.Value)
	}
	return n
}

// Clip returns s, or when it is longer than n bytes its start, cut at a
// character boundary, followed by "… (N bytes)": at most n bytes (for an n
// above a few dozen), always valid UTF-8.
func Clip(s string, n int) string {
	if len(s) <= n {
		return strings.ToValidUTF8(s, "?") // never longer
	}
	suffix := "… (" + strconv.Itoa(len(s)) + " bytes)"
	cut := max(0, n-len(suffix))
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.ToValidUTF8(s[:cut], "?") + suffix
}
