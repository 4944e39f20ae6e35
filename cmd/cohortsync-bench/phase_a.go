package main

// Phase (a): the input ceiling.

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// bareReader reads every record of topic with one kafka-go Reader per
// partition (as the worker does) and nothing else.
func (b *bench) bareReader(ctx context.Context, topic string, want int) (*throughput, error) {
	parts, err := b.admin.Partitions(ctx, topic)
	if err != nil {
		return nil, err
	}
	var total atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	ends, err := b.admin.EndOffsets(ctx, topic, parts)
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: b.brokers, Topic: topic, Partition: p,
				MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 500 * time.Millisecond})
			defer r.Close()
			for {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					return
				}
				total.Add(1)
				if m.Offset+1 >= ends[p] {
					return
				}
			}
		}(p)
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	n := int(total.Load())
	if n < want {
		return nil, fmt.Errorf("bare reader read %d of %d", n, want)
	}
	return &throughput{Events: n, Seconds: secs, PerSec: float64(n) / secs}, nil
}
