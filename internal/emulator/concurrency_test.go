package emulator_test

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

// TestConcurrentRequests sends requests from many goroutines over real
// connections while other goroutines read state and change faults; run
// with -race.
func TestConcurrentRequests(t *testing.T) {
	e, srv, _ := startServer(t, func(c *emulator.Config) { c.RateLimit = 100000 })
	const workers, perWorker = 8, 40
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				uid := fmt.Sprintf("w%d-%d", w, i)
				for _, action := range []string{"add_members", "remove_members", "add_members"} {
					req := apiReq{body: body(action, "p", "shared", uid)}.build(srv.URL)
					resp, err := srv.Client().Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						t.Errorf("status %d", resp.StatusCode)
					}
				}
			}
		})
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = e.Segments()
			_ = e.Requests()
			_ = e.Faults()
			_ = e.SetFaults(emulator.Faults{Latency: 0})
			_ = e.Users()
			_, _ = e.RequestLogStats()
		}
	})
	wg.Wait()
	close(stop)
	readers.Wait()

	var want []string
	for w := range workers {
		for i := range perWorker {
			want = append(want, fmt.Sprintf("w%d-%d", w, i))
		}
	}
	slices.Sort(want)
	if got := e.Members("ws1", "p", "shared"); !slices.Equal(got, want) {
		t.Errorf("got %d members, want %d", len(got), len(want))
	}
	reqs := e.Requests()
	if len(reqs) != workers*perWorker*3 {
		t.Errorf("logged %d requests", len(reqs))
	}
	for i, r := range reqs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has Seq %d", i, r.Seq)
		}
	}
}
