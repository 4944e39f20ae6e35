package main

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The worker's constants that the manifests must agree with. The worker's
// module is not imported here (scripts/tools is its own module);
// deploy/deploy_test.go checks that these equal the worker's own values.
const (
	// attemptTimeout is sink.DefaultAttemptTimeout: an API attempt under
	// way when SIGTERM arrives is finished, never cut off.
	attemptTimeout = 15 * time.Second
	// graceMargin is what the grace period keeps beyond SHUTDOWN_TIMEOUT +
	// attemptTimeout (process exit, the last log lines).
	graceMargin = 5 * time.Second
	// graceSlack is how far above the derived value the grace period may
	// be: more only delays a stuck pod's replacement.
	graceSlack = 30 * time.Second
	// defaultShutdownTimeout and defaultHTTPAddr are the worker's defaults
	// for SHUTDOWN_TIMEOUT and HTTP_ADDR.
	defaultShutdownTimeout = 30 * time.Second
	defaultHTTPAddr        = ":9090"
	// secretMode is the mode of the mounted Secret's files (0400).
	secretMode = 0o400
)

// kustomizeHash matches the suffix kustomize's generators add to a name.
var kustomizeHash = regexp.MustCompile(`-[bcdfghkmt2456789]{10}$`)

// podEnv is the environment a container sees from the ConfigMaps it names
// (envFrom), then its own env values.
func podEnv(c corev1.Container, cms map[string]*corev1.ConfigMap) (map[string]string, error) {
	env := map[string]string{}
	var errs []error
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			continue
		}
		name := ef.ConfigMapRef.Name
		cm, ok := cms[name]
		if !ok {
			errs = append(errs, fmt.Errorf("container %s: envFrom names ConfigMap %s, which is not in the rendered manifests", c.Name, name))
			continue
		}
		if !kustomizeHash.MatchString(name) {
			errs = append(errs, fmt.Errorf("container %s: ConfigMap %s has no content hash in its name: an edit would not roll the pods (generate it with configMapGenerator in the base)", c.Name, name))
		}
		for k, v := range cm.Data {
			env[k] = v
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env, errors.Join(errs...)
}

// checkImage refuses an image without a tag or digest, or tagged latest.
func checkImage(c corev1.Container) error {
	img := c.Image
	if strings.Contains(img, "@sha256:") {
		return nil
	}
	name := img[strings.LastIndex(img, "/")+1:]
	tag := ""
	if i := strings.LastIndex(name, ":"); i >= 0 {
		tag = name[i+1:]
	}
	if tag == "" || tag == "latest" {
		return fmt.Errorf("container %s: image %q: pin a release tag or a digest, never :latest or no tag", c.Name, img)
	}
	return nil
}

// checkPod holds for every pod template: the worker's Deployment and the
// pre-deploy Job.
func checkPod(spec corev1.PodSpec, cms map[string]*corev1.ConfigMap) error {
	var errs []error
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		errs = append(errs, errors.New("automountServiceAccountToken must be false: the worker never talks to the Kubernetes API"))
	}
	for _, v := range spec.Volumes {
		if v.Secret != nil && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != secretMode) {
			errs = append(errs, fmt.Errorf("volume %s: the Secret must be mounted with defaultMode 0400", v.Name))
		}
	}
	for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
		if err := checkImage(c); err != nil {
			errs = append(errs, err)
		}
		if _, err := podEnv(c, cms); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkDeployment checks the couplings between the worker's Deployment and
// its configuration: grace period, memory, ports.
func checkDeployment(d *appsv1.Deployment, cms map[string]*corev1.ConfigMap) error {
	spec := d.Spec.Template.Spec
	errs := []error{checkPod(spec, cms)}
	var worker *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == "worker" {
			worker = &spec.Containers[i]
		}
	}
	if worker == nil {
		return errors.Join(append(errs, errors.New("no container named worker"))...)
	}
	env, _ := podEnv(*worker, cms)
	errs = append(errs, checkGrace(spec.TerminationGracePeriodSeconds, env), checkMemory(*worker, env),
		checkPorts(d, *worker, env))
	return errors.Join(errs...)
}

func checkGrace(grace *int64, env map[string]string) error {
	shutdown := defaultShutdownTimeout
	if v, ok := env["SHUTDOWN_TIMEOUT"]; ok && v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("SHUTDOWN_TIMEOUT %q: %w", v, err)
		}
		shutdown = d
	}
	want := shutdown + attemptTimeout + graceMargin
	if grace == nil {
		return fmt.Errorf("terminationGracePeriodSeconds unset (30s): want %.0f (SHUTDOWN_TIMEOUT %s + attempt timeout %s + margin %s)",
			want.Seconds(), shutdown, attemptTimeout, graceMargin)
	}
	got := time.Duration(*grace) * time.Second
	if got < want || got > want+graceSlack {
		return fmt.Errorf("terminationGracePeriodSeconds %d disagrees with SHUTDOWN_TIMEOUT %s: want %.0f to %.0f (SHUTDOWN_TIMEOUT + attempt timeout %s + margin %s)",
			*grace, shutdown, want.Seconds(), (want + graceSlack).Seconds(), attemptTimeout, graceMargin)
	}
	return nil
}

func checkMemory(c corev1.Container, env map[string]string) error {
	var errs []error
	if _, ok := env["GOMEMLIMIT"]; ok {
		errs = append(errs, fmt.Errorf("container %s sets GOMEMLIMIT: the worker derives it from the memory limit at start; a literal drifts from limits.memory", c.Name))
	}
	req, hasReq := c.Resources.Requests[corev1.ResourceMemory]
	lim, hasLim := c.Resources.Limits[corev1.ResourceMemory]
	switch {
	case !hasLim:
		errs = append(errs, fmt.Errorf("container %s: no memory limit (the worker sizes GOMEMLIMIT from it)", c.Name))
	case !hasReq || req.Cmp(lim) != 0:
		errs = append(errs, fmt.Errorf("container %s: memory request %s must equal the limit %s", c.Name, req.String(), lim.String()))
	}
	return errors.Join(errs...)
}

func checkPorts(d *appsv1.Deployment, c corev1.Container, env map[string]string) error {
	addr := defaultHTTPAddr
	if v, ok := env["HTTP_ADDR"]; ok && v != "" {
		addr = v
	}
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("HTTP_ADDR %q: %w", addr, err)
	}
	port, _ := strconv.Atoi(portStr)
	named := map[string]int32{}
	for _, p := range c.Ports {
		named[p.Name] = p.ContainerPort
	}
	var errs []error
	if named["http"] != int32(port) {
		errs = append(errs, fmt.Errorf("container %s: port http is %d, HTTP_ADDR listens on %d", c.Name, named["http"], port))
	}
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		if p == nil || p.HTTPGet == nil {
			if name != "startup" {
				errs = append(errs, fmt.Errorf("container %s: no %s probe", c.Name, name))
			}
			continue
		}
		if got := resolvePort(p.HTTPGet.Port, named); got != int32(port) {
			errs = append(errs, fmt.Errorf("container %s: %s probe on port %s, HTTP_ADDR listens on %d", c.Name, name, p.HTTPGet.Port.String(), port))
		}
	}
	if a, ok := d.Spec.Template.Annotations["prometheus.io/port"]; ok && a != portStr {
		errs = append(errs, fmt.Errorf("annotation prometheus.io/port %s, HTTP_ADDR listens on %d", a, port))
	}
	return errors.Join(errs...)
}

func resolvePort(p intstr.IntOrString, named map[string]int32) int32 {
	if p.Type == intstr.String {
		return named[p.StrVal]
	}
	return p.IntVal
}

// checkService: a Service's named targetPort exists on the worker.
func checkService(s *corev1.Service, deps []*appsv1.Deployment) error {
	var errs []error
	for _, sp := range s.Spec.Ports {
		if sp.TargetPort.Type != intstr.String {
			continue
		}
		found := false
		for _, d := range deps {
			for _, c := range d.Spec.Template.Spec.Containers {
				for _, cp := range c.Ports {
					found = found || cp.Name == sp.TargetPort.StrVal
				}
			}
		}
		if !found && len(deps) > 0 {
			errs = append(errs, fmt.Errorf("port %s: targetPort %s names no container port", sp.Name, sp.TargetPort.StrVal))
		}
	}
	return errors.Join(errs...)
}
