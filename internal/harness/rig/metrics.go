package rig

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one reading of a worker's metrics: its families by name.
type Metrics map[string]*dto.MetricFamily

// Scrape GETs url (a worker's /metrics) and parses the Prometheus text
// format it answers.
func Scrape(ctx context.Context, url string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parse(resp.Body)
}

func parse(r io.Reader) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

// Gather reads g, an in-process worker's registry.
func Gather(g prometheus.Gatherer) (Metrics, error) {
	mfs, err := g.Gather()
	m := Metrics{}
	for _, mf := range mfs {
		m[mf.GetName()] = mf
	}
	return m, err
}

// Sample is one series of a family.
type Sample struct {
	Labels map[string]string
	Value  float64 // a counter's, gauge's or untyped value; a histogram's or summary's sum
	Count  uint64  // a histogram's or summary's count
}

// Samples returns the series selected by selector: a metric name with an
// optional label set, `name` or `name{label="value",...}` as the text format
// writes them, that a series' labels must include. It panics on a selector
// that is not one (they are written in code).
func (m Metrics) Samples(selector string) []Sample {
	name, want := parseSelector(selector)
	var out []Sample
	for _, s := range m[name].GetMetric() {
		labels := map[string]string{}
		for _, l := range s.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if !includes(labels, want) {
			continue
		}
		smp := Sample{Labels: labels}
		switch {
		case s.Counter != nil:
			smp.Value = s.Counter.GetValue()
		case s.Gauge != nil:
			smp.Value = s.Gauge.GetValue()
		case s.Untyped != nil:
			smp.Value = s.Untyped.GetValue()
		case s.Histogram != nil:
			smp.Value, smp.Count = s.Histogram.GetSampleSum(), s.Histogram.GetSampleCount()
		case s.Summary != nil:
			smp.Value, smp.Count = s.Summary.GetSampleSum(), s.Summary.GetSampleCount()
		}
		out = append(out, smp)
	}
	return out
}

// Sum adds up the Value of the series selector selects (see
// [Metrics.Samples]); 0 when there are none.
func (m Metrics) Sum(selector string) float64 {
	var sum float64
	for _, s := range m.Samples(selector) {
		sum += s.Value
	}
	return sum
}

// parseSelector reads a selector as the one sample line it would be in the
// text format, so that names, quoting and escapes follow the format's rules.
func parseSelector(selector string) (name string, labels map[string]string) {
	mfs, err := parse(strings.NewReader(selector + " 0\n"))
	if err != nil || len(mfs) != 1 {
		panic(fmt.Sprintf("rig: bad metric selector %q: %v", selector, err))
	}
	labels = map[string]string{}
	for name, mf := range mfs {
		for _, l := range mf.GetMetric()[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		return name, labels
	}
	return "", nil
}

// includes reports whether labels has every label of want.
func includes(labels, want map[string]string) bool {
	for k, v := range want {
		if labels[k] != v {
			return false
		}
	}
	return true
}
