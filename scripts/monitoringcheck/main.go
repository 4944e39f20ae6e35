// Command monitoringcheck validates the Prometheus Operator objects of a
// rendered manifest (kustomize build output) with the operator's own API
// types, without a cluster:
//
//	monitoringcheck FILE
//
// Every PodMonitor and PrometheusRule is decoded strictly into
// monitoring.coreos.com/v1 (unknown or mistyped fields fail); a PodMonitor
// must select the pods of a Deployment in the same file and scrape a port
// their containers declare. With -rules OUT, the PrometheusRules' groups
// are written to OUT as a Prometheus rule file, for promtool: what the
// operator hands to Prometheus.
//
// It lives in its own module so that neither the worker's module nor
// scripts/tools carries the operator's API module.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	yamlv3 "gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

func main() {
	rulesOut := flag.String("rules", "", "write the PrometheusRules' groups to this file")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: monitoringcheck [-rules OUT] FILE")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *rulesOut); err != nil {
		fmt.Fprintln(os.Stderr, "monitoringcheck:", err)
		os.Exit(1)
	}
}

type objects struct {
	podMonitors []monitoringv1.PodMonitor
	rules       []monitoringv1.PrometheusRule
	deployments []appsv1.Deployment
}

func run(path, rulesOut string) error {
	objs, err := load(path)
	if err != nil {
		return err
	}
	if len(objs.podMonitors) == 0 || len(objs.rules) == 0 {
		return fmt.Errorf("%s: %d PodMonitor(s), %d PrometheusRule(s); want both", path, len(objs.podMonitors), len(objs.rules))
	}
	var errs []error
	for _, pm := range objs.podMonitors {
		if err := checkPodMonitor(pm, objs.deployments); err != nil {
			errs = append(errs, fmt.Errorf("PodMonitor %s: %w", pm.Name, err))
		} else {
			fmt.Printf("monitoringcheck: PodMonitor %s/%s ok\n", pm.Namespace, pm.Name)
		}
	}
	var groups []monitoringv1.RuleGroup
	for _, r := range objs.rules {
		n := 0
		for _, g := range r.Spec.Groups {
			n += len(g.Rules)
		}
		if n == 0 {
			errs = append(errs, fmt.Errorf("PrometheusRule %s: no rules", r.Name))
		}
		groups = append(groups, r.Spec.Groups...)
		fmt.Printf("monitoringcheck: PrometheusRule %s/%s ok (%d rules)\n", r.Namespace, r.Name, n)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if rulesOut == "" {
		return nil
	}
	b, err := yaml.Marshal(map[string]any{"groups": groups})
	if err != nil {
		return err
	}
	return os.WriteFile(rulesOut, b, 0o644)
}

// load decodes every document of path; the operator's kinds and
// Deployments strictly.
func load(path string) (objects, error) {
	var objs objects
	raw, err := os.ReadFile(path)
	if err != nil {
		return objs, err
	}
	dec := yamlv3.NewDecoder(bytes.NewReader(raw))
	for i := 0; ; i++ {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return objs, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		if doc == nil {
			continue
		}
		b, err := yaml.Marshal(doc)
		if err != nil {
			return objs, err
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(b, &tm); err != nil {
			return objs, err
		}
		switch tm.GroupVersionKind().GroupKind().String() {
		case "PodMonitor.monitoring.coreos.com":
			var pm monitoringv1.PodMonitor
			err = strict(tm, b, &pm)
			objs.podMonitors = append(objs.podMonitors, pm)
		case "PrometheusRule.monitoring.coreos.com":
			var r monitoringv1.PrometheusRule
			err = strict(tm, b, &r)
			objs.rules = append(objs.rules, r)
		case "Deployment.apps":
			var d appsv1.Deployment
			err = strict(tm, b, &d)
			objs.deployments = append(objs.deployments, d)
		}
		if err != nil {
			return objs, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
	}
	return objs, nil
}

func strict(tm metav1.TypeMeta, b []byte, into any) error {
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		return fmt.Errorf("%s %s: %w", tm.APIVersion, tm.Kind, err)
	}
	return nil
}

// checkPodMonitor: the PodMonitor selects the pods of a Deployment in its
// namespace, and every endpoint names a port their containers declare.
func checkPodMonitor(pm monitoringv1.PodMonitor, deps []appsv1.Deployment) error {
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil {
		return err
	}
	if sel.Empty() {
		return errors.New("selects every pod of the namespace")
	}
	if len(pm.Spec.PodMetricsEndpoints) == 0 {
		return errors.New("no podMetricsEndpoints")
	}
	var checked int
	for _, d := range deps {
		if d.Namespace != pm.Namespace || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			continue
		}
		checked++
		var ports []string
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, p := range c.Ports {
				ports = append(ports, p.Name)
			}
		}
		for _, e := range pm.Spec.PodMetricsEndpoints {
			if e.Port == nil || !slices.Contains(ports, *e.Port) {
				port := "(none)"
				if e.Port != nil {
					port = *e.Port
				}
				return fmt.Errorf("scrapes port %q; the pods of Deployment %s declare %v", port, d.Name, ports)
			}
		}
	}
	if checked == 0 {
		names := map[string]string{}
		for _, d := range deps {
			names[d.Namespace+"/"+d.Name] = labels.Set(d.Spec.Template.Labels).String()
		}
		return fmt.Errorf("selects %s in namespace %q: no Deployment's pods there (%v)", sel, pm.Namespace, slices.Sorted(maps.Keys(names)))
	}
	return nil
}
