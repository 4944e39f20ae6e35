package consumer_test

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// vmRSS reads a field of /proc/self/status in bytes (0 when unknown).
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range bytes.Lines(b) {
		if rest, ok := bytes.CutPrefix(line, []byte(field+":")); ok {
			f := strings.Fields(string(rest))
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// BenchmarkPeakMemoryLargeRecords measures the consumer's memory with six
// partitions of 900 KB records (issue 10 §5.3): first with the batcher
// blocking (the API down: fetching must stop at the byte bounds), then
// reading everything. kfake runs in the same process and holds the whole
// log, so the figures are increases over the memory after producing:
// heap_MB, the peak of the live heap (sampled after a GC every 50ms), and
// rss_MB, the peak of VmRSS (which the produce phase has usually raised
// already, so it often shows nothing). The live heap should stay under about
// 6 × (readerQueue + FetchBufferBytes/900 KB + a few) records, ~150 MB. Run
// it with
//
//	go test ./consumer/ -run '^$' -bench PeakMemory -benchtime 1x
func BenchmarkPeakMemoryLargeRecords(b *testing.B) {
	if testing.Short() {
		b.Skip("produces 216 MB into an in-process Kafka")
	}
	const parts, perPart, recSize = 6, 40, 900 << 10
	for range b.N {
		cluster, brokers := newLiteCluster(b, kfake.SeedTopics(parts, topic))
		recs := map[int][][]byte{}
		for p := range parts {
			for i := range perPart {
				recs[p] = append(recs[p], fmt.Appendf(nil,
					`{"action":"add","cohort_id":"c1","cohort_name":"n","partner":"p","uid":"p%d-u%d","pad":"%s"}`,
					p, i, strings.Repeat("x", recSize)))
			}
			produceTo(b, brokers, topic, map[int][][]byte{p: recs[p]})
		}
		recs = nil
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		baseHeap, baseRSS := int64(ms.HeapAlloc), procStatus("VmRSS")

		var peakHeap, peakRSS atomic.Int64
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			var ms runtime.MemStats
			for {
				runtime.GC() // live bytes: without it the figure is GOGC's slack over kfake's log
				runtime.ReadMemStats(&ms)
				if h := int64(ms.HeapAlloc) - baseHeap; h > peakHeap.Load() {
					peakHeap.Store(h)
				}
				if r := procStatus("VmRSS") - baseRSS; r > peakRSS.Load() {
					peakRSS.Store(r)
				}
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()

		l := startLite(b, cluster, []string{topic}, nil, nil)
		l.b.block.Store(true)
		time.Sleep(3 * time.Second) // the API is down: fetching stops at the bounds
		blockedHeap, blockedRSS := peakHeap.Load(), peakRSS.Load()
		l.b.block.Store(false)
		waitFor(b, 60*time.Second, "every record read", func() bool { return l.b.added.Load() >= parts*perPart })
		close(stop)
		<-sampled
		l.cancel()

		b.ReportMetric(float64(blockedHeap)/(1<<20), "blocked_heap_MB")
		b.ReportMetric(float64(blockedRSS)/(1<<20), "blocked_rss_MB")
		b.ReportMetric(float64(peakHeap.Load())/(1<<20), "heap_MB")
		b.ReportMetric(float64(peakRSS.Load())/(1<<20), "rss_MB")
	}
}
