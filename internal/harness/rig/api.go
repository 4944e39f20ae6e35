package rig

import (
	"net"
	"net/http"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

// API is an emulator of the Cohort Sync API served in this process.
type API struct {
	*emulator.Emulator
	URL string // http://127.0.0.1:port
	srv *http.Server
}

// ServeAPI serves an emulator configured by cfg on a free loopback port
// until Close.
func ServeAPI(cfg emulator.Config) (*API, error) {
	e, err := emulator.New(cfg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: e, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &API{Emulator: e, URL: "http://" + ln.Addr().String(), srv: srv}, nil
}

// Close stops serving at once, closing the connections in use.
func (a *API) Close() error { return a.srv.Close() }
