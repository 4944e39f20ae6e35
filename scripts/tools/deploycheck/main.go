// Command deploycheck validates the deployment artifacts with the loaders
// the real tools use, without a cluster or a Docker daemon:
//
//	deploycheck k8s FILE...      rendered manifests (kustomize build output):
//	                             every document is decoded strictly into the
//	                             Kubernetes API type of its apiVersion/kind
//	                             (unknown or mistyped fields fail); kinds from
//	                             CRDs (keda.sh) are checked for the basics;
//	                             then the couplings within each file
//	                             (couplings.go): grace period vs
//	                             SHUTDOWN_TIMEOUT, memory request = limit and
//	                             no literal GOMEMLIMIT, ports vs HTTP_ADDR,
//	                             hashed ConfigMap names, no :latest, the
//	                             Secret mounted 0400, no service account token.
//	deploycheck compose FILE     a compose file, loaded and validated by
//	                             compose-go (the loader Docker Compose uses);
//	                             every published port bound to loopback, and
//	                             the worker started after a service that
//	                             created its topics (compose.go).
//
// It lives in its own module (scripts/tools) so that the worker's module
// does not carry these dependencies.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
	yamlv3 "gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: deploycheck k8s FILE... | compose FILE")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "k8s":
		err = checkK8s(os.Args[2:])
	case "compose":
		err = checkCompose(os.Args[2])
	default:
		err = fmt.Errorf("unknown check %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploycheck:", err)
		os.Exit(1)
	}
}

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

func checkK8s(files []string) error {
	var errs []error
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var objs []any
		dec := yamlv3.NewDecoder(bytes.NewReader(b))
		for {
			var node yamlv3.Node
			err := dec.Decode(&node)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			doc, err := yamlv3.Marshal(&node)
			if err != nil {
				return err
			}
			var tm typeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				return fmt.Errorf("%s: %w", f, err)
			}
			var obj any
			switch tm.APIVersion + "/" + tm.Kind {
			case "v1/ConfigMap":
				obj = &corev1.ConfigMap{}
			case "v1/Secret":
				obj = &corev1.Secret{}
			case "v1/Service":
				obj = &corev1.Service{}
			case "apps/v1/Deployment":
				obj = &appsv1.Deployment{}
			case "policy/v1/PodDisruptionBudget":
				obj = &policyv1.PodDisruptionBudget{}
			case "batch/v1/Job":
				obj = &batchv1.Job{}
			case "networking.k8s.io/v1/NetworkPolicy":
				obj = &networkingv1.NetworkPolicy{}
			case "keda.sh/v1alpha1/ScaledObject":
				obj = nil // a CRD: no typed schema here; the basics only
			default:
				errs = append(errs, fmt.Errorf("%s: %s %s: no schema known to deploycheck", f, tm.APIVersion, tm.Kind))
				continue
			}
			if tm.Metadata.Name == "" {
				errs = append(errs, fmt.Errorf("%s: %s without metadata.name", f, tm.Kind))
			}
			if obj != nil {
				if err := yaml.UnmarshalStrict(doc, obj); err != nil {
					errs = append(errs, fmt.Errorf("%s: %s %s: %w", f, tm.Kind, tm.Metadata.Name, err))
					continue
				}
				if err := semantic(obj); err != nil {
					errs = append(errs, fmt.Errorf("%s: %s %s: %w", f, tm.Kind, tm.Metadata.Name, err))
				}
				objs = append(objs, obj)
			}
			n++
			fmt.Printf("deploycheck: %s: %s %s/%s ok\n", filepath.Base(f), tm.APIVersion, tm.Kind, tm.Metadata.Name)
		}
		if err := couplings(objs); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f, err))
		}
	}
	if n == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no manifests"))
	}
	return errors.Join(errs...)
}

// semantic checks what the API server or the kubelet would reject and the
// strict decoding cannot see.
func semantic(obj any) error {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		sel := o.Spec.Selector
		if sel == nil || len(sel.MatchLabels) == 0 {
			return errors.New("no selector")
		}
		for k, v := range sel.MatchLabels {
			if o.Spec.Template.Labels[k] != v {
				return fmt.Errorf("selector %s=%s does not match the pod template's labels", k, v)
			}
		}
		psc := o.Spec.Template.Spec.SecurityContext
		for _, c := range o.Spec.Template.Spec.Containers {
			nonRoot := psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
			uid := psc != nil && psc.RunAsUser != nil
			if c.SecurityContext != nil && c.SecurityContext.RunAsNonRoot != nil {
				nonRoot = *c.SecurityContext.RunAsNonRoot
			}
			if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
				uid = true
			}
			if nonRoot && !uid {
				return fmt.Errorf("container %s: runAsNonRoot without a numeric runAsUser: the kubelet cannot verify a named image user", c.Name)
			}
		}
	case *policyv1.PodDisruptionBudget:
		if o.Spec.Selector == nil || (len(o.Spec.Selector.MatchLabels) == 0 && len(o.Spec.Selector.MatchExpressions) == 0) {
			return errors.New("no selector: a policy/v1 PodDisruptionBudget without one protects no pod")
		}
	}
	return nil
}

// couplings checks one rendered file's objects against each other.
func couplings(objs []any) error {
	cms := map[string]*corev1.ConfigMap{}
	var deps []*appsv1.Deployment
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.ConfigMap:
			cms[o.Name] = o
		case *appsv1.Deployment:
			deps = append(deps, o)
		}
	}
	var errs []error
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *appsv1.Deployment:
			err = checkDeployment(o, cms)
		case *batchv1.Job:
			err = checkPod(o.Spec.Template.Spec, cms)
		case *corev1.Service:
			err = checkService(o, deps)
		default:
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%T %s: %w", o, objName(o), err))
		}
	}
	return errors.Join(errs...)
}

func objName(o any) string {
	switch o := o.(type) {
	case *appsv1.Deployment:
		return o.Name
	case *batchv1.Job:
		return o.Name
	case *corev1.Service:
		return o.Name
	}
	return ""
}

func checkCompose(file string) error {
	ctx := context.Background()
	opts, err := cli.NewProjectOptions([]string{file}, cli.WithOsEnv, cli.WithDotEnv, cli.WithWorkingDirectory(filepath.Dir(file)))
	if err != nil {
		return err
	}
	p, err := opts.LoadProject(ctx)
	if err != nil {
		return err
	}
	for _, s := range p.Services {
		fmt.Printf("deploycheck: %s: service %s ok (image %q)\n", filepath.Base(file), s.Name, s.Image)
	}
	return composeRules(p)
}
