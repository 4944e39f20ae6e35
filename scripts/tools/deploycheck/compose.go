package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
)

// composeRules: a laptop stack publishes nothing beyond loopback, and works
// on first run: the worker starts after a one-shot service that created the
// topics it reads and dead-letters to (the worker creates neither).
func composeRules(p *types.Project) error {
	var errs []error
	for _, s := range p.Services {
		for _, port := range s.Ports {
			if port.Published == "" {
				continue
			}
			if port.HostIP != "127.0.0.1" && port.HostIP != "::1" {
				errs = append(errs, fmt.Errorf("service %s: port %s published on %q: bind it to 127.0.0.1", s.Name, port.Published, port.HostIP))
			}
		}
	}
	w, ok := p.Services["worker"]
	if !ok {
		return errors.Join(append(errs, errors.New("no worker service"))...)
	}
	var creates strings.Builder
	for name, dep := range w.DependsOn {
		if dep.Condition != types.ServiceConditionCompletedSuccessfully {
			continue
		}
		if s, ok := p.Services[name]; ok {
			creates.WriteString(strings.Join(s.Entrypoint, " ") + " " + strings.Join(s.Command, " "))
		}
	}
	for _, key := range []string{"KAFKA_TOPIC", "KAFKA_DLQ_TOPIC"} {
		v := w.Environment[key]
		if v == nil || *v == "" {
			errs = append(errs, fmt.Errorf("service worker: %s not set", key))
			continue
		}
		for _, topic := range strings.Split(*v, ",") {
			if !strings.Contains(creates.String(), "kafka-topics") || !strings.Contains(creates.String(), strings.TrimSpace(topic)) {
				errs = append(errs, fmt.Errorf("service worker: topic %s is created by no service it waits for (depends_on ... service_completed_successfully)", topic))
			}
		}
	}
	return errors.Join(errs...)
}
